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

/// A source that keeps its acknowledger, so a test can read the source's counters.
struct CapturingSource: PipelineSource {
    typealias Metadata = RabbitMQMetadata
    final class Box: Sendable {
        let acknowledger = Mutex<RabbitMQAcknowledger?>(nil)
    }

    let base: RabbitMQSource
    let box = Box()

    var maximumInFlight: Int? { self.base.maximumInFlight }

    func makeParts(context: SourceContext) async throws -> SourceParts<RabbitMQSourceStage, RabbitMQAcknowledger> {
        let parts = try await self.base.makeParts(context: context)
        self.box.acknowledger.withLock { $0 = parts.acknowledger }
        return parts
    }

    func shutdown(_ acknowledger: RabbitMQAcknowledger) async {
        await self.base.shutdown(acknowledger)
    }

    var counters: RabbitMQCounters? { self.box.acknowledger.withLock { $0?.counters } }
    /// The running source's acknowledger (`nil` before start).
    var acknowledger: RabbitMQAcknowledger? { self.box.acknowledger.withLock { $0 } }
    /// What the source's read credit counts as delivered and not settled (`nil` before start).
    var unsettled: Int? { self.box.acknowledger.withLock { $0?.unsettled } }
}

@Suite("RabbitMQ reconnect", .timeLimit(.minutes(1)))
struct RabbitMQReconnectTests {
    let logger = Logger(label: "sluice.test.amqp.reconnect")

    /// The broker closes the consumer's connection while messages are in flight: the source
    /// reconnects (declaring the queue again), the in-flight settlements of the closed channel
    /// are dropped and counted (never sent on the new channel, which would close it with an
    /// unknown delivery tag), and every message is handled and acknowledged in the end.
    @Test func brokerClosingTheConnectionLosesNothing() async throws {
        var configuration = try RabbitTestEnvironment.configuration("close")
        configuration.reconnectBackoff = .milliseconds(20)
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish(payloads(1000))
        let source = CapturingSource(base: RabbitMQSource(configuration: configuration))
        let handled = Recorder<String>()
        // Hold the first window's handlers until the channel they came on is gone.
        let reconnected = Flag()
        let pipeline = pipelineHoldingTheFirstChannel(
            "close", source: source, logger: self.logger, maxDemand: 25, holdAfter: 30, release: reconnected, handled: handled
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("30 handled") { handled.count >= 30 }
            try await RabbitControl.closeConsumerConnection(of: queue)
            try await waitUntil("the source reconnected") { (source.counters?.reconnects ?? 0) >= 1 }
            reconnected.set()
            try await waitUntilAllHandledAndAcknowledged(1000, handled: handled, pipeline: pipeline) { try await RabbitControl.counts(queue) }
            try await group.waitForAll()
        }
        let counters = try #require(source.counters)
        #expect(counters.reconnects == 1, "a second reconnect means the new channel was closed too (a stale tag?)")
        #expect(counters.stale > 0, "the held messages' settlements belong to the closed channel")
        #expect(Set(handled.all) == Set((0..<1000).map { "m\($0)" }))
        try await client.delete(queue: queue)
        await client.close()
    }

    /// A settlement the broker refuses (a delivery tag the channel never delivered: it closes
    /// the channel with 406 PRECONDITION_FAILED) is reported, never swallowed: counted (and a
    /// metric), logged as an error; the source reconnects and nothing is lost.
    @Test func aSettlementTheBrokerRefusesIsReported() async throws {
        let (configuration, client) = try await preloadedQueue("refused", count: 200) { $0.reconnectBackoff = .milliseconds(20) }
        let queue = configuration.queue
        let source = CapturingSource(base: RabbitMQSource(configuration: configuration))
        let handled = Recorder<String>()
        let (logger, log) = RecordingLogHandler.logger("sluice.test.amqp.refused")
        // Keep the first channel's deliveries unacknowledged until the forged tag went out.
        let forged = Flag()
        let pipeline = pipelineHoldingTheFirstChannel(
            "refused", source: source, logger: logger, maxDemand: 10, holdAfter: 5, release: forged, handled: handled
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("5 handled") { handled.count >= 5 }
            let forgedTag = Message(payload: [UInt8](), metadata: RabbitMQMetadata(deliveryTag: 1_000_000, channelGeneration: 1))
            try #require(source.acknowledger).settle(Settlement(acknowledged: [forgedTag]))
            forged.set()
            try await waitUntil("the refusal was reported and the source reconnected") {
                (source.counters?.refused ?? 0) >= 1 && (source.counters?.reconnects ?? 0) >= 1
            }
            try await waitUntilAllHandledAndAcknowledged(200, handled: handled, pipeline: pipeline) { try await RabbitControl.counts(queue) }
            try await group.waitForAll()
        }
        let counters = try #require(source.counters)
        #expect(counters.refused == 1)
        let reports = log.all.filter { $0.level == .error && $0.message.contains("refused a settlement") }
        #expect(reports.count == 1, "\(log.all.map(\.message))")
        #expect(Set(handled.all) == Set((0..<200).map { "m\($0)" }))
        try await client.delete(queue: queue)
        await client.close()
    }

    /// The whole configured topology is declared again on reconnect: with the exchange and then
    /// the queue deleted under a running source, the broker cancels its consumer (`basic.cancel`,
    /// which the client asked for), the source reconnects and declares exchange, queue and
    /// binding again, so messages published to the exchange afterwards reach it.
    @Test func reconnectDeclaresExchangeQueueAndBindingAgain() async throws {
        var configuration = try RabbitTestEnvironment.configuration("topology")
        let exchange = RabbitTestEnvironment.uniqueName("topology-x")
        configuration.topology.exchange = exchange
        configuration.topology.durable = false
        configuration.topology.bindingKeys = ["orders.new"]
        configuration.reconnectBackoff = .milliseconds(20)
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let source = CapturingSource(base: RabbitMQSource(configuration: configuration))
        let handled = Recorder<String>()
        let pipeline = Pipeline("topology", source: source, configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { message in handled.append(message.text) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await client.publish(payloads(20, prefix: "a"), exchange: exchange, routingKey: "orders.new")
            try await waitUntil("the first messages handled") { Set(handled.all).count >= 20 }
            // The exchange first (its binding goes with it), then the queue, whose deletion
            // cancels the consumer: when the source reconnects, neither exists.
            try await client.delete(queue: RabbitTestEnvironment.uniqueName("none"), exchange: exchange)
            try await client.delete(queue: queue)
            try await waitUntil("the source reconnected") { (source.counters?.reconnects ?? 0) >= 1 }
            try await client.publish(payloads(30, prefix: "b"), exchange: exchange, routingKey: "orders.new")
            try await waitUntil("the messages published after the reconnect handled") {
                Set(handled.all).isSuperset(of: (0..<30).map { "b\($0)" })
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        try await client.delete(queue: queue, exchange: exchange)
        await client.close()
    }

    /// The consumer-timeout channel close is recognised by its text.
    @Test func recognisesAConsumerTimeout() {
        let error = RabbitMQError(
            .preconditionFailed,
            "the broker closed the channel to 127.0.0.1:5672/: 406 PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
                + "Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more"
        )
        #expect(error.isConsumerTimeout)
        #expect(!RabbitMQError(.preconditionFailed, "406 PRECONDITION_FAILED - unknown delivery tag 7").isConsumerTimeout)
    }
}
