//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import SluiceConnector

/// A pipeline source that consumes Kafka topics in a consumer group, on demand.
///
/// ```swift
/// let source = try KafkaSource(url: "kafka://127.0.0.1:9092/orders?group=etl&offset=earliest")
/// let pipeline = Pipeline("orders", source: source) {
///     Processors(ordering: .perPartition, concurrency: 4, maxDemand: 500) { message in try handle(message) }
/// }
/// try await ServiceGroup(services: [pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Demand d becomes `rd_kafka_consume_batch_queue` of at most min(d, ``KafkaConfiguration/batchSize``)
/// messages. What was taken and not yet settled stays within the pipeline's window (or
/// ``KafkaConfiguration/maxInFlight``) and ``KafkaConfiguration/maxInFlightBytes``; librdkafka's
/// own prefetch is bounded per partition from the window. With no credit for 100 ms (hysteresis:
/// meanwhile only that prefetch bound applies) the assigned partitions are paused, so nothing
/// more is fetched, while the consumer keeps serving its group.
///
/// Offsets: nothing is stored automatically; per partition the highest contiguous settled
/// offset + 1 is committed asynchronously, in batches (``KafkaConfiguration/commitEvery``,
/// ``KafkaConfiguration/commitInterval``), and at shutdown and revoke. Failure dispositions:
/// `.drop` commits past the message, `.requeue` holds the commit before it (the group reads
/// it again after a restart or rebalance), `.deadLetter` writes it to the dead-letter topic
/// with headers naming its origin and error, and commits past it once the broker confirmed.
///
/// Messages of one partition are emitted in offset order; ``KafkaOrdering`` says what the
/// processors keep in order (`Processors(ordering: .perPartition, …)`, Kafka's usual guarantee;
/// `.perKey`; `.none`).
///
/// If the cluster cannot be reached within ``KafkaConfiguration/connectTimeout``, or a topic
/// does not exist, ``Pipeline/run()`` throws a ``KafkaError``.
public struct KafkaSource: PipelineSource {
    public typealias Metadata = KafkaMetadata

    /// The configuration.
    public let configuration: KafkaConfiguration
    /// Counters the source's sessions report to (tests, benchmarks).
    @_spi(Internal) public var counters: KafkaSourceCounters?
    /// The session a pipeline runs, for ``lag()``.
    let running = RunningSession<KafkaSession>()

    /// Creates a source.
    public init(configuration: KafkaConfiguration) {
        self.configuration = configuration
    }

    /// Creates a source from a URL (see ``KafkaConfiguration/init(url:)``).
    ///
    /// - Throws: ``KafkaError`` with code `invalidURL` or `invalidProperty`.
    public init(url: String) throws(KafkaError) {
        self.init(configuration: try KafkaConfiguration(url: url))
    }

    /// Checks the runtime and configuration, connects, checks the topics and subscribes.
    ///
    /// - Throws: ``KafkaError``: `runtimeTooOld`, `invalidConfiguration`, `invalidProperty`,
    ///   `connectionFailed`, `unknownTopic`, `groupFailed`, `clientFailed`.
    public func makeParts(context: SourceContext) async throws -> SourceParts<KafkaSourceStage, KafkaAcknowledger> {
        try RDKafkaConfig.checkRuntime()
        try self.configuration.validate()
        let window = self.configuration.maxInFlight ?? max(1, context.window)
        let session = KafkaSession(configuration: self.configuration, window: window, counters: self.counters, logger: context.logger)
        do {
            try await session.start()
        } catch {
            await session.shutdown()
            throw error
        }
        self.running.attach(session)
        return SourceParts(stage: KafkaSourceStage(session: session), acknowledger: KafkaAcknowledger(session: session))
    }

    /// Commits what settled, leaves the group (bounded by ``KafkaConfiguration/closeTimeout``)
    /// and closes the consumer.
    public func shutdown(_ acknowledger: KafkaAcknowledger) async {
        self.running.detach(acknowledger.session)
        await acknowledger.session.shutdown()
    }
}

// KafkaSourceInfo, KafkaSourceStage and KafkaAcknowledger mirror RedisSource.swift and
// RabbitMQSource.swift on purpose (one source/stage/acknowledger shape per adapter, STYLE.md).
// Each stage only forwards to its own session type, and the bodies differ where the brokers do:
// RedisSourceStage also ends when its reads are exhausted, RabbitMQSourceStage takes deliveries
// in handleDemand. A generic stage would rename these public types, so each adapter keeps its own.
/// Control messages of a ``KafkaSourceStage``.
public struct KafkaSourceInfo: SourceInfo {
    enum Kind: Sendable {
        /// Batches wait in the session's outbox.
        case fetched
        case failed(KafkaError)
        case drain
    }

    let kind: Kind

    init(_ kind: Kind) { self.kind = kind }

    /// Stop taking messages; emit what was taken, then end.
    public static var drain: KafkaSourceInfo { KafkaSourceInfo(.drain) }
}

/// The producer stage of a ``KafkaSource``: takes messages on demand on the consumer's
/// thread and emits what arrives.
public struct KafkaSourceStage: Producer, Sendable {
    public typealias Output = Message<KafkaMetadata>
    public typealias Info = KafkaSourceInfo

    let session: KafkaSession
    private var draining = false

    init(session: KafkaSession) {
        self.session = session
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.session.attach(handle)
    }

    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        self.session.request(demand)
    }

    public mutating func handleInfo(_ info: KafkaSourceInfo, context: inout StageContext<Output>) {
        switch info.kind {
        case .fetched:
            self.emitFetched(&context)
        case .failed(let error):
            context.stop(.failure(error))
        case .drain:
            guard !self.draining else { return }
            self.draining = true
            self.session.drain()
            self.emitFetched(&context)
        }
    }

    /// Emits every batch taken so far; ends once draining (a drain takes nothing more).
    private mutating func emitFetched(_ context: inout StageContext<Output>) {
        var (batches, finished) = self.session.takeFetched()
        // Each batch is moved out of the list, never copied: a batch the list still shared
        // would be copied message by message (three retains each) when the context appends it
        // after the first, and released message by message with the list.
        batches.reverse()
        while let batch = batches.popLast() { context.emit(batch) }
        if self.draining && finished { context.stop(.normal) }
    }

    public mutating func terminate(reason: StopReason) async {
        self.session.stopReading()
    }
}

/// Settles a ``KafkaSource``'s messages: records them in the offset ledger the consumer
/// commits from (never blocks).
public struct KafkaAcknowledger: Acknowledger {
    let session: KafkaSession

    public func settle(_ settlement: Settlement<KafkaMetadata>) {
        self.session.settle(settlement)
    }
}
