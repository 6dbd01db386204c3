//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceRabbitMQ
import Synchronization
import Testing

@Suite("RabbitMQ source against the broker", .timeLimit(.minutes(1)))
struct RabbitMQSourceTests {
    let logger = Logger(label: "sluice.test.amqp")

    /// Publishes, consumes through a pipeline, and checks that everything was acknowledged
    /// (nothing ready, nothing unacknowledged) with the metadata of each delivery.
    @Test func endToEndWithAcks() async throws {
        let configuration = try RabbitTestEnvironment.configuration("e2e")
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish(payloads(1000))
        let messages = try await self.consume(1000, configuration, maxDemand: 100, untilAcknowledged: true)
        #expect(Set(messages.map(\.text)) == Set((0..<1000).map { "m\($0)" }))
        #expect(messages.count == 1000)
        let first = try #require(messages.first)
        #expect(first.metadata.routingKey == configuration.queue)
        #expect(first.metadata.exchange == "")
        #expect(!first.metadata.redelivered)
        #expect(first.metadata.deliveryCount == 1)
        #expect(first.metadata.channelGeneration == 1)
        #expect(Set(messages.map(\.metadata.deliveryTag)).count == 1000)
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// A delivery's properties reach its metadata: headers (as text), content type, message
    /// id, timestamp, with the delivery tag, the redelivered flag, exchange and routing key.
    @Test func metadataCarriesTheDeliveryAndItsProperties() async throws {
        let configuration = try RabbitTestEnvironment.configuration("metadata")
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish(
            Array("order".utf8),
            contentType: "application/json",
            headers: ["tenant": "acme", "region": "eu-1"],
            messageID: "order-7",
            timestamp: 1_700_000_000
        )
        try await client.publish(payloads(1, prefix: "plain"))
        let messages = try await self.consume(2, configuration, maxDemand: 10, untilAcknowledged: false)
            .sorted { $0.metadata.deliveryTag < $1.metadata.deliveryTag }
        try #require(messages.count == 2)
        let order = messages[0].metadata
        #expect(messages[0].text == "order")
        #expect(order.deliveryTag == 1 && !order.redelivered)
        #expect(order.exchange == "" && order.routingKey == configuration.queue)
        #expect(order.headers == ["tenant": "acme", "region": "eu-1"])
        #expect(order.contentType == "application/json")
        #expect(order.messageID == "order-7")
        #expect(order.timestamp == 1_700_000_000)
        let plain = messages[1].metadata
        #expect(plain.deliveryTag == 2)
        #expect(plain.headers.isEmpty && plain.contentType == nil && plain.messageID == nil && plain.timestamp == nil)
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// Runs a pipeline on `configuration`'s queue until it handled `count` messages (and, if
    /// `untilAcknowledged`, the broker holds none ready or unacknowledged), drains it, and
    /// returns what the handlers saw.
    private func consume(
        _ count: Int,
        _ configuration: RabbitMQConfiguration,
        maxDemand: Int,
        untilAcknowledged: Bool
    ) async throws -> [Message<RabbitMQMetadata>] {
        let seen = Recorder<Message<RabbitMQMetadata>>()
        let pipeline = Pipeline("consume", source: RabbitMQSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: maxDemand) { message in seen.append(message) }
        }
        let queue = configuration.queue
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("\(count) handled") { seen.count >= count }
            if untilAcknowledged {
                try await waitUntil("every message acknowledged") {
                    let counts = try await RabbitControl.counts(queue)
                    return counts.ready == 0 && counts.unacknowledged == 0
                }
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        return seen.all
    }

    /// Prefetch 20 and a slow consumer: the broker never has more than 20 unacknowledged, and
    /// the rest stays ready in the queue.
    @Test func backPressureHoldsThePrefetch() async throws {
        var configuration = try RabbitTestEnvironment.configuration("backpressure")
        configuration.prefetch = 20
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        // Enough that the queue cannot empty while rabbitmqctl samples it (about 0.5 s a call;
        // the handlers take some 500 a second).
        let total = 2000
        try await client.publish(payloads(total))
        let handled = Atomic<Int>(0)
        let source = CapturingSource(base: RabbitMQSource(configuration: configuration))
        let pipeline = Pipeline("slow", source: source, configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: 5) { _ in
                try await Task.sleep(for: .milliseconds(20))
                handled.add(1, ordering: .relaxed)
            }
        }
        var samples: [(ready: Int, unacknowledged: Int)] = []
        var credit: [Int] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the first messages handled") { handled.load(ordering: .relaxed) >= 5 }
            for _ in 0..<4 {
                samples.append(try await RabbitControl.counts(queue))
                credit.append(try #require(source.unsettled))
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        for sample in samples {
            #expect(sample.unacknowledged <= 20, "the broker reports \(sample.unacknowledged) unacknowledged")
            #expect(sample.ready + sample.unacknowledged + 20 >= total - handled.load(ordering: .relaxed))
        }
        #expect(samples.contains { $0.unacknowledged == 20 }, "the window was never full: \(samples)")
        // The source's read credit sees the same window: never more than the prefetch unsettled
        // (its count can only run behind the broker's, while acknowledgements coalesce).
        #expect(credit.allSatisfy { $0 <= 20 } && credit.contains { $0 >= 10 }, "unsettled in the read credit: \(credit)")
        #expect(samples.contains { $0.ready > 0 })
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// Failed messages: `.requeue` comes back (redelivered), `.deadLetter` goes to the dead-letter
    /// exchange's queue, `.drop` is acknowledged.
    @Test func requeueAndDeadLetterRoutes() async throws {
        var configuration = try RabbitTestEnvironment.configuration("routes")
        let (deadQueue, deadExchange) = Self.withDeadLetters(&configuration)
        let client = try await Self.declared(configuration, deadQueue: deadQueue)
        try await client.publish([Array("requeue".utf8), Array("dead".utf8), Array("drop".utf8), Array("ok".utf8)])
        let seen = Recorder<(String, Bool)>()
        let pipeline = Pipeline(
            "routes",
            source: RabbitMQSource(configuration: configuration),
            configuration: PipelineConfiguration(failurePolicy: FailurePolicy(retry: nil, maxDeliveries: nil), logger: self.logger)
        ) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                seen.append((message.text, message.metadata.redelivered))
                switch message.text {
                case "requeue" where !message.metadata.redelivered: message.fail(TestFailure("again"), disposition: .requeue)
                case "dead": message.fail(TestFailure("poison"), disposition: .deadLetter)
                case "drop": message.fail(TestFailure("unwanted"), disposition: .drop)
                default: break
                }
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the requeued message came back") { seen.all.contains { $0 == ("requeue", true) } }
            try await waitUntil("the dead letter arrived") { try await client.readyCount(deadQueue) == 1 }
            let queue = configuration.queue
            try await waitUntil("the queue is settled") {
                let counts = try await RabbitControl.counts(queue)
                return counts.ready == 0 && counts.unacknowledged == 0
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        #expect(seen.all.filter { $0.0 == "dead" }.count == 1)
        #expect(seen.all.filter { $0.0 == "drop" }.count == 1)
        #expect(seen.all.filter { $0.0 == "requeue" }.count == 2)
        try await client.delete(queue: configuration.queue)
        try await client.delete(queue: deadQueue, exchange: deadExchange)
        await client.close()
    }

    /// A quorum queue counts deliveries (`x-delivery-count`): a message that keeps failing
    /// with requeue is capped by `maxDeliveries` and dead-lettered.
    @Test func quorumDeliveryCountCapsAPoisonMessage() async throws {
        var configuration = try RabbitTestEnvironment.configuration("quorum")
        configuration.topology.durable = true
        configuration.topology.queueType = .quorum
        let (deadQueue, deadExchange) = Self.withDeadLetters(&configuration)
        let client = try await Self.declared(configuration, deadQueue: deadQueue)
        try await client.publish([Array("poison".utf8)])
        let counts = Recorder<Int>()
        let pipeline = Pipeline(
            "quorum",
            source: RabbitMQSource(configuration: configuration),
            configuration: PipelineConfiguration(
                failurePolicy: FailurePolicy(retry: nil, disposition: .deadLetter, maxDeliveries: 3),
                logger: self.logger
            )
        ) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                counts.append(message.metadata.deliveryCount ?? 0)
                message.fail(TestFailure("always fails"), disposition: .requeue)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the poison message was dead-lettered") { try await client.readyCount(deadQueue) == 1 }
            pipeline.drain()
            try await group.waitForAll()
        }
        #expect(counts.all == [1, 2, 3])
        try await client.delete(queue: configuration.queue)
        try await client.delete(queue: deadQueue, exchange: deadExchange)
        await client.close()
    }

    /// A classic queue has only the redelivered flag, so its delivery count is 1 or 2: with
    /// `maxDeliveries: 1`, a message whose handler always fails with `.requeue` is delivered
    /// once, comes back redelivered (count 2), is dead-lettered through the queue's dead-letter
    /// exchange without running the handler again, and every other message is handled once
    /// and acknowledged.
    @Test func classicRedeliveredFlagCapsAPoisonMessage() async throws {
        var configuration = try RabbitTestEnvironment.configuration("classic-poison")
        configuration.topology.queueType = .classic
        let (deadQueue, deadExchange) = Self.withDeadLetters(&configuration)
        let client = try await Self.declared(configuration, deadQueue: deadQueue)
        try await client.publish(payloads(20, prefix: "good") + [Array("poison".utf8)] + payloads(20, prefix: "late"))
        let seen = Recorder<(text: String, redelivered: Bool, count: Int)>()
        let pipeline = Pipeline(
            "classic-poison",
            source: RabbitMQSource(configuration: configuration),
            configuration: PipelineConfiguration(
                failurePolicy: FailurePolicy(retry: nil, disposition: .deadLetter, maxDeliveries: 1),
                logger: self.logger
            )
        ) {
            Processors(concurrency: 2, maxDemand: 10) { message in
                seen.append((message.text, message.metadata.redelivered, message.metadata.deliveryCount ?? 0))
                if message.text == "poison" { message.fail(TestFailure("always fails"), disposition: .requeue) }
            }
        }
        let queue = configuration.queue
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the poison message was dead-lettered") { try await client.readyCount(deadQueue) == 1 }
            try await waitUntil("the queue is settled") {
                let counts = try await RabbitControl.counts(queue)
                return counts.ready == 0 && counts.unacknowledged == 0
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        // The handler ran once for the poison message (its first delivery); the redelivery
        // exceeded the cap and went to the dead-letter exchange unhandled.
        #expect(seen.all.filter { $0.text == "poison" }.map { [$0.redelivered ? 1 : 0, $0.count] } == [[0, 1]])
        let others = seen.all.filter { $0.text != "poison" }
        #expect(others.map(\.text).sorted() == (payloads(20, prefix: "good") + payloads(20, prefix: "late")).map { String(decoding: $0, as: UTF8.self) }.sorted())
        #expect(others.allSatisfy { !$0.redelivered && $0.count == 1 })
        // What the dead-letter queue holds is the poison message, nothing else.
        var dead = RabbitMQConfiguration(queue: deadQueue)
        dead.host = configuration.host
        dead.port = configuration.port
        let letters = try await self.consume(1, dead, maxDemand: 10, untilAcknowledged: true)
        #expect(letters.map(\.text) == ["poison"])
        #expect(try await client.readyCount(deadQueue) == 0)
        try await client.delete(queue: configuration.queue)
        try await client.delete(queue: deadQueue, exchange: deadExchange)
        await client.close()
    }

    /// Gives `configuration`'s queue a dead-letter exchange of its own; returns the queue the
    /// exchange routes to and the exchange.
    static func withDeadLetters(_ configuration: inout RabbitMQConfiguration) -> (queue: String, exchange: String) {
        let exchange = configuration.queue + "-dlx"
        configuration.topology.deadLetterExchange = exchange
        return (configuration.queue + "-dead", exchange)
    }

    /// A client that declared the dead-letter exchange with `deadQueue` bound to it, then
    /// `configuration`'s queue.
    static func declared(_ configuration: RabbitMQConfiguration, deadQueue: String) async throws -> RabbitMQClient {
        var dead = RabbitMQConfiguration(queue: deadQueue)
        dead.host = configuration.host
        dead.port = configuration.port
        dead.topology.declare = true
        dead.topology.durable = false
        dead.topology.exchange = configuration.topology.deadLetterExchange
        dead.topology.exchangeType = .fanout
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(dead)
        try await client.declare(configuration)
        return client
    }
}
