//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import ServiceLifecycle
import Sluice
import SluiceRabbitMQ
import Synchronization
import Testing

@Suite("RabbitMQ heartbeats and graceful drain", .timeLimit(.minutes(1)))
struct RabbitMQLifecycleTests {
    let logger = Logger(label: "sluice.test.amqp.lifecycle")

    /// With a 1 s heartbeat and no demand for 5 s (every handler blocked), the connection
    /// stays up: the broker would close it after two missed heartbeats, requeueing the
    /// deliveries, and the source would reconnect.
    @Test func heartbeatsFlowAtZeroDemand() async throws {
        var configuration = try RabbitTestEnvironment.configuration("heartbeat")
        configuration.heartbeat = .seconds(1)
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish(payloads(50))
        let source = CapturingSource(base: RabbitMQSource(configuration: configuration))
        let release = Atomic<Bool>(false)
        let handled = Atomic<Int>(0)
        let pipeline = Pipeline("heartbeat", source: source, configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 1, maxDemand: 5) { _ in
                while !release.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(10)) }
                handled.add(1, ordering: .relaxed)
            }
        }
        var during = (ready: 0, unacknowledged: 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the window was delivered") { try await RabbitControl.counts(queue).unacknowledged == 5 }
            try await Task.sleep(for: .seconds(5))
            during = try await RabbitControl.counts(queue)
            release.store(true, ordering: .relaxed)
            try await waitUntil("everything handled") { handled.load(ordering: .relaxed) >= 50 }
            pipeline.drain()
            try await group.waitForAll()
        }
        #expect(during.unacknowledged == 5 && during.ready == 45, "\(during)")
        #expect(source.counters?.reconnects == 0)
        #expect(handled.load(ordering: .relaxed) == 50, "a redelivery after a lost connection would handle some twice")
        try await client.delete(queue: queue)
        await client.close()
    }

    /// A graceful shutdown of the service group drains the pipeline: the consumer is
    /// cancelled, what was handled is acknowledged, the rest is back in the queue, nothing is
    /// left unacknowledged and nothing is lost.
    @Test func gracefulShutdownDrains() async throws {
        let configuration = try RabbitTestEnvironment.configuration("graceful")
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish(payloads(2000))
        let handled = Recorder<String>()
        let pipeline = Pipeline("graceful", source: RabbitMQSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: 50) { message in
                try await Task.sleep(for: .milliseconds(1))
                handled.append(message.text)
            }
        }
        let group = ServiceGroup(services: [pipeline], logger: self.logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitUntil("200 handled") { handled.count >= 200 }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let counts = try await RabbitControl.counts(queue)
        #expect(counts.unacknowledged == 0)
        #expect(handled.count < 2000, "the shutdown came too late")
        #expect(Set(handled.all).count == handled.count, "a message was handled twice")
        #expect(counts.ready + handled.count == 2000, "\(counts.ready) ready + \(handled.count) handled")
        try await client.delete(queue: queue)
        await client.close()
    }
}
