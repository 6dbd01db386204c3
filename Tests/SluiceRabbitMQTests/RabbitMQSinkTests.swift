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
import Testing

@Suite("RabbitMQ sink with publisher confirms", .timeLimit(.minutes(1)))
struct RabbitMQSinkTests {
    let logger = Logger(label: "sluice.test.amqp.sink")

    /// In a service group the sink serves sends until graceful shutdown, then closes: each send
    /// returns once confirmed (the messages are in the queue), a send after that fails with
    /// `shutDown`.
    @Test func confirmedBatchesInAServiceGroup() async throws {
        let configuration = try RabbitTestEnvironment.configuration("sink")
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let sink = try RabbitMQSink(configuration: configuration, logger: self.logger)
        let group = ServiceGroup(services: [sink], logger: self.logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await sink.send(payloads(500))
            #expect(try await client.readyCount(configuration.queue) == 500)
            try await sink.send(payloads(3, prefix: "more"))
            #expect(try await client.readyCount(configuration.queue) == 503)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let late = await #expect(throws: RabbitMQError.self) { try await sink.send(payloads(1)) }
        #expect(late?.code == .shutDown)
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// A mandatory message no queue takes comes back and fails; the others are confirmed.
    @Test func unroutableMessagesFail() async throws {
        var configuration = try RabbitTestEnvironment.configuration("unroutable")
        configuration.routingKey = configuration.queue + "-nowhere"
        let sink = try RabbitMQSink(configuration: configuration, logger: self.logger)
        try await sink.connect()
        var messages = (0..<3).map { Message(payload: Array("u\($0)".utf8), metadata: BasicMetadata(id: UInt64($0))) }
        try await sink.send(&messages)
        #expect(messages.allSatisfy { ($0.failure?.error as? RabbitMQError)?.code == .unroutable })
        let error = await #expect(throws: RabbitMQError.self) { try await sink.send(payloads(2)) }
        #expect(error?.code == .unroutable)
        #expect(error?.message.contains("2 of 2") == true)
        await sink.close()
    }

    /// A queue that refuses publishes beyond its length (a policy on this queue only): the
    /// refused messages are nacked and fail, the one that fit is confirmed.
    @Test func nackedMessagesFail() async throws {
        let configuration = try RabbitTestEnvironment.configuration("nack")
        let policy = configuration.queue + "-policy"
        _ = try await RabbitControl.run([
            "set_policy", "--apply-to", "queues", policy, "^\(configuration.queue)$", #"{"max-length":1,"overflow":"reject-publish"}"#,
        ])
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let sink = try RabbitMQSink(configuration: configuration, logger: self.logger)
        // The policy takes a moment to reach the queue: until it does, every message fits.
        var messages: [Message<BasicMetadata>] = []
        for attempt in 0..<100 {
            try await client.delete(queue: configuration.queue)
            try await client.declare(configuration)
            messages = (0..<3).map { Message(payload: Array("n\($0)".utf8), metadata: BasicMetadata(id: UInt64($0))) }
            try await sink.send(&messages)
            if messages.contains(where: \.isFailed) || attempt == 99 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(messages.filter(\.isFailed).count == 2)
        let failed = messages.filter(\.isFailed)
        #expect(failed.allSatisfy { ($0.failure?.error as? RabbitMQError)?.code == .nacked })
        #expect(try await client.readyCount(configuration.queue) == 1)
        _ = try await RabbitControl.run(["clear_policy", policy])
        await sink.close()
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// The sink stage publishes what a producer emits, asking for more only after confirms.
    @Test func aSinkStageTakesAProducersEvents() async throws {
        let configuration = try RabbitTestEnvironment.configuration("sink-stage")
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let sink = try RabbitMQSink(configuration: configuration, logger: self.logger)
        let producer = try await StageHandle.start(SequenceProducer(payloads(2000)), options: StageOptions(name: "numbers", logger: self.logger))
        let consumer = try await StageHandle.start(
            RabbitMQSinkStage(sink: sink),
            options: StageOptions(name: "sink", logger: self.logger),
            subscribeTo: [SubscribeTo(producer, options: SubscriptionOptions(maxDemand: 400))]
        )
        _ = await consumer.waitForTermination()
        #expect(try await client.readyCount(configuration.queue) == 2000)
        await sink.close()
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// Nothing listens on port 1: creating a sink connects nothing; connecting fails typed.
    @Test func connectingAnUnreachableBrokerFails() async throws {
        var configuration = try RabbitTestEnvironment.configuration("sink-unreachable")
        configuration.port = 1
        let sink = try RabbitMQSink(configuration: configuration, logger: self.logger)
        let error = await #expect(throws: RabbitMQError.self) { try await sink.connect() }
        #expect(error?.code == .connectionFailed)
        let run = await #expect(throws: RabbitMQError.self) { try await sink.run() }
        #expect(run?.code == .connectionFailed)
    }
}
