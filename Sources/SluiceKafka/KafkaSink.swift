//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
public import ServiceLifecycle
public import Sluice
import SluiceConnector
import Synchronization

/// Produces records to Kafka in batches, with delivery reports: a send returns once the
/// broker confirmed (or refused) every record of its batch.
///
/// The sink is a `Service`: run it in the same `ServiceGroup` as the pipeline that writes to
/// it, listed before the pipeline, so that it connects at start and closes only after the
/// pipeline finished on graceful shutdown:
///
/// ```swift
/// let sink = try KafkaSink(url: "kafka://127.0.0.1:9092/results", logger: logger)
/// let pipeline = Pipeline("copy", source: source) {
///     Processors { message in … }
///     Batcher(size: 500) { batch in try await sink.send(&batch) }
/// }
/// try await ServiceGroup(services: [sink, pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// A batcher that awaits ``send(_:topic:partition:key:)`` asks for more only as deliveries are
/// confirmed, so a slow broker slows the pipeline down. While librdkafka's local queue is
/// full the sink waits for delivery reports instead of failing. A record the broker refuses
/// fails its message, which then goes through the pipeline's failure policy. Every
/// librdkafka call runs on the sink's own thread.
public final class KafkaSink: Service, Sendable {
    /// The configuration: records without a topic go to the first of ``KafkaConfiguration/topics``.
    public let configuration: KafkaConfiguration
    private let logger: Logger?
    private let state = Mutex<State>(State())

    private struct State {
        var loop: ConnectionLoop<RDKafkaSinkDriver>?
        var started: KafkaError??
        var waiters: [CheckedContinuation<Void, Never>] = []
        var closed = false
    }

    /// Creates a sink; nothing connects until ``run()``, ``connect()`` or the first send.
    ///
    /// - Parameter logger: The sink's logger; `nil` takes `Logger.current` when it connects.
    /// - Throws: ``KafkaError`` with code `invalidConfiguration` or `invalidProperty`.
    public init(configuration: KafkaConfiguration, logger: Logger? = nil) throws(KafkaError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
    }

    // The URL init and run() mirror RabbitMQSink.swift and RedisSink.swift on purpose: every
    // adapter's sink is a Service with the same connect / serve until shutdown / close shape
    // (STYLE habit 5); connect, send and close are each broker's own.
    /// Creates a sink from a URL (see ``KafkaConfiguration/init(url:)``).
    public convenience init(url: String, logger: Logger? = nil) throws(KafkaError) {
        try self.init(configuration: try KafkaConfiguration(url: url), logger: logger)
    }

    /// Connects, serves sends until graceful shutdown or cancellation, then closes once the
    /// records in flight were confirmed (at most ``KafkaConfiguration/closeTimeout``).
    ///
    /// - Throws: ``KafkaError`` (`connectionFailed`, `unknownTopic`, `runtimeTooOld`) if the
    ///   cluster does not answer at start.
    public func run() async throws {
        try await self.connect()
        try? await gracefulShutdown()
        await self.close()
    }

    /// Starts the sink's thread and checks that the cluster answers and has the first topic.
    ///
    /// - Throws: ``KafkaError`` (`connectionFailed`, `unknownTopic`, `runtimeTooOld`, or
    ///   `shutDown` after ``close()``).
    public func connect() async throws(KafkaError) {
        try RDKafkaConfig.checkRuntime()
        enum Step { case start, wait, done(KafkaError?) }
        let step = self.state.withLock { state -> Step in
            if state.closed { return .done(KafkaError(.shutDown, "the sink was closed")) }
            if let started = state.started { return .done(started) }
            return state.loop == nil ? .start : .wait
        }
        switch step {
        case .done(let error):
            if let error { throw error }
            return
        case .start:
            let configuration = self.configuration
            var enriched = self.logger ?? Logger.current
            enriched[metadataKey: KafkaLogKey.brokers] = "\(configuration.bootstrapServers.joined(separator: ","))"
            enriched[metadataKey: KafkaLogKey.topic] = "\(configuration.topics[0])"
            let logger = enriched
            let loop = ConnectionLoop(name: "sluice-kafka-sink") { [self] in
                RDKafkaSinkDriver(configuration: configuration, logger: logger) { error in self.started(error) }
            }
            self.state.withLock { $0.loop = loop }
        case .wait:
            break
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = self.state.withLock { state -> Bool in
                if state.started != nil { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
        if let error = self.state.withLock({ $0.started }) ?? nil { throw error }
    }

    private func started(_ error: KafkaError?) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.started = .some(error)
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Produces `records` and returns each one's outcome once the broker answered for all of
    /// them: `nil` for a delivered record, the error for a refused one.
    ///
    /// - Throws: ``KafkaError`` only when the sink cannot produce at all (it could not start,
    ///   or was closed).
    public func deliver(_ records: [KafkaRecord]) async throws(KafkaError) -> [KafkaError?] {
        guard !records.isEmpty else { return [] }
        try await self.connect()
        guard let loop = self.state.withLock({ $0.loop }) else { throw KafkaError(.shutDown, "the sink was closed") }
        var results: [KafkaError?] = []
        results.reserveCapacity(records.count)
        var start = 0
        while start < records.count {
            let end = min(records.count, start + RDKafkaSinkDriver.maximumBatch)
            // Most sends fit one batch: the array is handed over as it is, not copied.
            let chunk = start == 0 && end == records.count ? records : Array(records[start..<end])
            let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<[KafkaError?], Never>) in
                if !loop.enqueue(.produce(RDKafkaSinkDriver.Batch(records: chunk, completion: continuation))) {
                    continuation.resume(returning: Array(repeating: KafkaError(.shutDown, "the sink was closed"), count: chunk.count))
                }
            }
            results += outcome
            start = end
        }
        return results
    }

    /// Produces `records`; throws the first refusal once the broker answered for all.
    ///
    /// - Throws: ``KafkaError`` (`deliveryFailed`, `shutDown`, or a start failure).
    public func send(_ records: [KafkaRecord]) async throws(KafkaError) {
        if let failure = try await self.deliver(records).lazy.compactMap({ $0 }).first { throw failure }
    }

    /// Produces the payloads of `batch` (to `topic`, or the first configured topic; on
    /// `partition`, or as the partitioner decides), keyed by `key` if given; a message whose
    /// record the broker refused is marked failed, so it goes through the failure policy of
    /// the pipeline that fed it.
    ///
    /// - Throws: ``KafkaError`` only when the sink cannot produce at all.
    public func send<Metadata>(
        _ batch: inout [Message<Metadata>],
        topic: String? = nil,
        partition: Int32? = nil,
        key: (@Sendable (Message<Metadata>) -> Payload?)? = nil
    ) async throws(KafkaError) {
        let records = batch.map { KafkaRecord(value: $0.payload, key: key?($0), partition: partition, topic: topic) }
        let results = try await self.deliver(records)
        for (index, result) in results.enumerated() {
            if let result { batch[index].fail(result) }
        }
    }

    /// Closes once the records in flight were confirmed (bounded by
    /// ``KafkaConfiguration/closeTimeout``); later sends throw `shutDown`.
    public func close() async {
        let loop = self.state.withLock { state -> ConnectionLoop<RDKafkaSinkDriver>? in
            state.closed = true
            defer { state.loop = nil }
            return state.loop
        }
        guard let loop else { return }
        let limit = self.configuration.closeTimeout + .seconds(1)
        if !(await Task { await loop.stopAndWait(timeout: limit) }.value) {
            (self.logger ?? Logger.current).info("the Kafka sink did not close in time; its thread is abandoned")
        }
    }
}

/// An engine consumer stage that produces what it receives through a ``KafkaSink``.
///
/// It handles one slice of events at a time and asks for more only after the broker
/// confirmed them, so a slow broker slows its producers down. A record the broker refuses
/// stops the stage with that error.
public struct KafkaSinkStage: Consumer, Sendable {
    public typealias Input = KafkaRecord

    /// The sink written to.
    public let sink: KafkaSink

    /// Creates the stage.
    public init(sink: KafkaSink) {
        self.sink = sink
    }

    public mutating func handleEvents(_ events: [KafkaRecord], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
        try await self.sink.send(events)
    }
}
