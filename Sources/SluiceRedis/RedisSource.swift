//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import SluiceConnector

/// A pipeline source that reads a Redis list or stream, on demand.
///
/// ```swift
/// let source = try RedisSource(url: "redis://127.0.0.1:6379/0?key=jobs&mode=reliable")
/// let pipeline = Pipeline("jobs", source: source) {
///     Processors(concurrency: 4, maxDemand: 1000) { message in try handle(message.payload) }
/// }
/// try await ServiceGroup(services: [pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Demand maps to Redis reads (never more than the pending demand, at most
/// ``RedisConfiguration/batchSize`` per read):
///
/// - ``RedisConfiguration/Mode/list``: `LPOP key n`, several pipelined while the demand
///   allows (together never more than it), `BLMPOP … COUNT n` while the list is empty
///   (at most once).
/// - ``RedisConfiguration/Mode/reliable`` (default): a script moves n items atomically into
///   the consumer's processing list, `BLMOVE` waits when the list is empty; acknowledgement
///   removes them; a liveness key and a reaper return a dead consumer's items (at least once).
/// - ``RedisConfiguration/Mode/stream``: `XREADGROUP COUNT n BLOCK t`, `XACK` in batches,
///   own pending entries re-read at start, stale ones claimed with `XAUTOCLAIM`, delivery
///   counts from the pending entries list (at least once).
///
/// What was read and not yet settled stays within ``RedisConfiguration/maxInFlight`` items
/// (by default the pipeline's window: what its stages can hold) and
/// ``RedisConfiguration/maxInFlightBytes``: reading waits for settlement, not only for
/// demand.
///
/// Reads run on a connection and thread of their own; acknowledgements on a second one. Both
/// reconnect with jittered exponential backoff. A drain ends a blocking read at once. If Redis cannot be reached when the pipeline
/// starts, ``Pipeline/run()`` throws a ``RedisError``.
public struct RedisSource: PipelineSource {
    // Mirrors RabbitMQSource (RabbitMQSource.swift) and KafkaSource on purpose: every adapter
    // offers the same PipelineSource shape (configuration, URL init, makeParts, shutdown); the
    // bodies differ (validation, window, session type), so there is nothing generic to share.
    public typealias Metadata = RedisMetadata

    /// The configuration.
    public let configuration: RedisConfiguration
    /// The session a pipeline runs, for ``lag()``.
    let running = RunningSession<RedisSession>()

    /// Creates a source.
    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    /// Creates a source from a URL (see ``RedisConfiguration/init(url:)``).
    ///
    /// - Throws: ``RedisError`` with code ``RedisError/Code-swift.struct/invalidURL``.
    public init(url: String) throws(RedisError) {
        self.init(configuration: try RedisConfiguration(url: url))
    }

    /// Connects, checks the key's type and prepares the mode.
    ///
    /// - Throws: ``RedisError``: `invalidConfiguration`, `connectionFailed`,
    ///   `authenticationFailed`, `wrongType`.
    public func makeParts(context: SourceContext) async throws -> SourceParts<RedisSourceStage, RedisAcknowledger> {
        try self.configuration.validate()
        let session = RedisSession(configuration: self.configuration, window: context.window, logger: context.logger)
        do {
            try await session.start()
        } catch {
            await session.shutdown()
            throw error
        }
        self.running.attach(session)
        return SourceParts(stage: RedisSourceStage(session: session), acknowledger: RedisAcknowledger(session: session))
    }

    /// Sends the remaining acknowledgements, gives unfinished items back (reliable mode) and
    /// closes the connections.
    public func shutdown(_ acknowledger: RedisAcknowledger) async {
        self.running.detach(acknowledger.session)
        await acknowledger.session.shutdown()
    }
}

/// Control messages of a ``RedisSourceStage``.
public struct RedisSourceInfo: SourceInfo {
    enum Kind: Sendable {
        /// Batches wait in the session's outbox.
        case fetched
        case fetcherStopped
        case failed(RedisError)
        case drain
    }

    let kind: Kind

    init(_ kind: Kind) { self.kind = kind }

    /// Stop reading; emit what was read, then end.
    public static var drain: RedisSourceInfo { RedisSourceInfo(.drain) }
}

/// The producer stage of a ``RedisSource``: reads on demand on the source's read thread and
/// emits what arrives.
public struct RedisSourceStage: Producer, Sendable {
    public typealias Output = Message<RedisMetadata>
    public typealias Info = RedisSourceInfo

    let session: RedisSession
    private var draining = false

    init(session: RedisSession) {
        self.session = session
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.session.attach(handle)
    }

    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        self.session.request(demand)
    }

    public mutating func handleInfo(_ info: RedisSourceInfo, context: inout StageContext<Output>) {
        switch info.kind {
        case .fetched, .fetcherStopped:
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

    /// Emits every batch read so far; ends once draining (or past its limit) and no read can
    /// add more. (A read that finished before the drain note was handled left its batch in
    /// the outbox, so it is emitted here rather than lost with the stage's unread mail.)
    private mutating func emitFetched(_ context: inout StageContext<Output>) {
        let (batches, finished, exhausted) = self.session.takeFetched()
        for batch in batches { context.emit(batch) }
        if (self.draining || exhausted) && finished { context.stop(.normal) }
    }

    public mutating func terminate(reason: StopReason) async {
        self.session.stopReading()
    }
}

/// Settles a ``RedisSource``'s messages on its acknowledgement connection, in batches
/// (pipelined `XACK`, or one trim of the processing list's head per run of up to 1000
/// contiguous settled items).
public struct RedisAcknowledger: Acknowledger {
    let session: RedisSession

    public func settle(_ settlement: Settlement<RedisMetadata>) {
        self.session.settle(settlement)
    }
}
