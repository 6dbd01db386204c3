//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceRabbitMQ
import Testing

/// A pipeline on `source` whose one processor holds every delivery until `release` is set (so
/// the broker delivers the prefetch and stops), then records its text in `handled`.
private func holdingPipeline(
    _ name: String,
    source: RabbitMQSource,
    maxDemand: Int,
    release: Flag,
    handled: Recorder<String>
) -> Pipeline<RabbitMQSource> {
    Pipeline(name, source: source) {
        Processors(concurrency: 1, maxDemand: maxDemand) { message in
            while !release.isSet { try await Task.sleep(for: .milliseconds(5)) }
            handled.append(message.text)
        }
    }
}

@Suite("RabbitMQ source lag", .timeLimit(.minutes(1)))
struct RabbitMQLagTests {
    @Test("the lag is the queue's ready count: N − the deliveries taken, as rabbitmqctl counts it; 0 once all were settled")
    func lagIsTheReadyCount() async throws {
        let (configuration, client) = try await preloadedQueue("lag", count: 40)
        let queue = configuration.queue
        let source = RabbitMQSource(configuration: configuration)
        await #expect(throws: RabbitMQError.self, "not running yet") { _ = try await source.lag() }
        let release = Flag()
        let handled = Recorder<String>()
        let pipeline = holdingPipeline("lag", source: source, maxDemand: 4, release: release, handled: handled)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the prefetch was delivered and the broker's count shows it") {
                let counts = try await RabbitControl.counts(queue)
                return counts.unacknowledged > 0 && counts.ready + counts.unacknowledged == 40
            }
            let counts = try await RabbitControl.counts(queue)
            let lag = try await source.lag()
            #expect(lag == counts.ready, "broker: \(counts)")
            #expect(lag == 40 - counts.unacknowledged)
            release.set()
            try await waitUntil("every message was handled and acknowledged") {
                let ready = try await source.lag()
                guard ready == 0, handled.count == 40 else { return false }
                return try await RabbitControl.counts(queue).unacknowledged == 0
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        await #expect(throws: RabbitMQError.self, "ended") { _ = try await source.lag() }
        try await client.delete(queue: queue)
        await client.close()
    }

    @Test("after the broker closed the consumer's connection the query fails or waits, then answers again once reconnected")
    func answersAgainAfterAReconnect() async throws {
        let (configuration, client) = try await preloadedQueue("lag-reconnect", count: 10) { $0.maximumReconnectBackoff = .milliseconds(200) }
        let queue = configuration.queue
        let source = RabbitMQSource(configuration: configuration)
        let release = Flag()
        let handled = Recorder<String>()
        let pipeline = holdingPipeline("lag-reconnect", source: source, maxDemand: 2, release: release, handled: handled)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the prefetch was delivered") { try await RabbitControl.counts(queue).unacknowledged > 0 }
            try await RabbitControl.closeConsumerConnection(of: queue)
            // Queried while the source notices the loss and reconnects: an error or an answer,
            // never a crash; then the broker's count again, with the new channel's deliveries.
            try await waitUntil("the lag matches the broker's count after the reconnect") {
                guard let lag = try? await source.lag() else { return false }
                let counts = try await RabbitControl.counts(queue)
                return counts.unacknowledged > 0 && lag == counts.ready && counts.ready + counts.unacknowledged == 10
            }
            release.set()
            try await waitUntil("every message was handled, the lag is 0") {
                guard (try? await source.lag()) == 0 else { return false }
                return Set(handled.all).count == 10
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        try await client.delete(queue: queue)
        await client.close()
    }
}
