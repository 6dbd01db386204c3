//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import SluiceConnector

/// A pipeline source that consumes a RabbitMQ queue with manual acknowledgements.
///
/// ```swift
/// let source = try RabbitMQSource(url: "amqp://guest:guest@127.0.0.1:5672/?queue=orders")
/// let pipeline = Pipeline("orders", source: source) {
///     Processors(concurrency: 4, maxDemand: 250) { message in try handle(message.payload) }
/// }
/// try await ServiceGroup(services: [pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// The broker pushes; the `basic.qos` prefetch is the brake. It is the pipeline's in-flight
/// window (``Sluice/Pipeline/window``), or ``RabbitMQConfiguration/prefetch`` if set, which
/// must then be at least that window. Deliveries beyond the stage's pending demand wait in a
/// buffer that the prefetch bounds.
///
/// One thread owns the connection and makes every librabbitmq call: it reads deliveries,
/// keeps servicing the socket at zero demand (heartbeats), and sends the settlements the
/// pipeline queues from any processor: contiguous tags as one `basic.ack` with
/// `multiple=true` per half of the prefetch (or after ``RabbitMQConfiguration/ackDelay``);
/// ``Sluice/FailureDisposition/requeue`` as `basic.reject` with requeue,
/// ``Sluice/FailureDisposition/deadLetter`` without (the queue's dead-letter exchange takes
/// it), ``Sluice/FailureDisposition/drop`` as an acknowledgement.
///
/// The broker shares the machine's CPU with the pipeline, so the source spends few thread
/// wake-ups per message: while deliveries stream in, the reads of up to a millisecond are
/// handed to the stage together (the first read after a quiet spell goes at once), and a
/// settlement wakes the connection's thread only when an acknowledgement or rejection is due;
/// otherwise the thread takes it at its next turn.
///
/// A lost connection or channel is reconnected with jittered exponential backoff and the
/// topology declared again. Every delivery carries its channel generation
/// (``RabbitMQMetadata/channelGeneration``): settlements of an older generation are dropped
/// and counted, never sent (the broker requeued those deliveries already). A drain cancels the
/// consumer (`basic.cancel`), hands out what arrived as it is asked for, and ends; closing
/// the channel returns anything never emitted to the queue. If the broker cannot be reached
/// or refuses the setup when the pipeline starts, ``Pipeline/run()`` throws a
/// ``RabbitMQError``.
public struct RabbitMQSource: PipelineSource {
    public typealias Metadata = RabbitMQMetadata

    /// The configuration.
    public let configuration: RabbitMQConfiguration
    /// The session a pipeline runs, for ``lag()``.
    let running = RunningSession<RabbitMQSession>()

    /// Creates a source.
    public init(configuration: RabbitMQConfiguration) {
        self.configuration = configuration
    }

    /// Creates a source from a URL (see ``RabbitMQConfiguration/init(url:)``).
    ///
    /// - Throws: ``RabbitMQError`` with code ``RabbitMQError/Code-swift.struct/invalidURL``.
    public init(url: String) throws(RabbitMQError) {
        self.init(configuration: try RabbitMQConfiguration(url: url))
    }

    /// An explicit prefetch: the pipeline refuses to start if its window is larger.
    public var maximumInFlight: Int? { self.configuration.prefetch }

    /// Connects, declares (or checks) the topology and starts consuming.
    ///
    /// - Throws: ``RabbitMQError``: `invalidConfiguration`, `prefetchTooSmall`,
    ///   `connectionFailed`, `accessRefused`, `notAllowed` (vhost), `notFound` (queue),
    ///   `preconditionFailed` (a declaration that clashes with the existing queue).
    public func makeParts(context: SourceContext) async throws -> SourceParts<RabbitMQSourceStage, RabbitMQAcknowledger> {
        try self.configuration.validate()
        let prefetch = try Self.prefetch(self.configuration.prefetch, window: context.window)
        let session = RabbitMQSession(configuration: self.configuration, prefetch: prefetch, logger: context.logger)
        do {
            try await session.start()
        } catch {
            await session.shutdown()
            throw error
        }
        self.running.attach(session)
        return SourceParts(stage: RabbitMQSourceStage(session: session), acknowledger: RabbitMQAcknowledger(session: session))
    }

    /// Sends the remaining settlements, then closes the channel (the broker requeues what
    /// was not acknowledged) and the connection.
    public func shutdown(_ acknowledger: RabbitMQAcknowledger) async {
        self.running.detach(acknowledger.session)
        await acknowledger.session.shutdown()
    }

    /// The prefetch for a pipeline window: the explicit one if it holds the window.
    static func prefetch(_ explicit: Int?, window: Int) throws(RabbitMQError) -> Int {
        if let explicit {
            guard explicit >= window else {
                throw RabbitMQError(
                    .prefetchTooSmall,
                    "prefetch \(explicit) is smaller than the pipeline's in-flight window of \(window) messages; "
                        + "raise prefetch to at least \(window), leave it unset, or lower the processors' demand and batch sizes"
                )
            }
            return explicit
        }
        guard window <= 65535 else {
            throw RabbitMQError(
                .invalidConfiguration,
                "the pipeline's in-flight window of \(window) messages is larger than AMQP's largest prefetch, 65535; "
                    + "lower the processors' demand and batch sizes"
            )
        }
        return max(1, window)
    }
}

/// Control messages of a ``RabbitMQSourceStage``.
public struct RabbitMQSourceInfo: SourceInfo {
    enum Kind: Sendable {
        /// Deliveries wait for the stage, or nothing more will come.
        case arrived
        case drain
    }

    let kind: Kind

    init(_ kind: Kind) { self.kind = kind }

    /// Cancel the consumer; emit what arrived as it is asked for, then end.
    public static var drain: RabbitMQSourceInfo { RabbitMQSourceInfo(.drain) }
}

/// The producer stage of a ``RabbitMQSource``: emits the deliveries of the source's
/// connection as they are asked for.
public struct RabbitMQSourceStage: Producer, Sendable {
    public typealias Output = Message<RabbitMQMetadata>
    public typealias Info = RabbitMQSourceInfo

    let session: RabbitMQSession
    private var draining = false

    init(session: RabbitMQSession) {
        self.session = session
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.session.attach(handle)
    }

    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        let messages = self.session.request(demand)
        if !messages.isEmpty { context.emit(messages) }
        self.endIfDrained(&context)
    }

    public mutating func handleInfo(_ info: RabbitMQSourceInfo, context: inout StageContext<Output>) {
        switch info.kind {
        case .arrived:
            let (messages, _) = self.session.takeDemanded()
            if !messages.isEmpty { context.emit(messages) }
            self.endIfDrained(&context)
        case .drain:
            guard !self.draining else { return }
            self.draining = true
            self.session.drain()
        }
    }

    private func endIfDrained(_ context: inout StageContext<Output>) {
        if self.draining && self.session.isDrained { context.stop(.normal) }
    }

    public mutating func terminate(reason: StopReason) async {
        self.session.stageEnded()
    }
}

/// Settles a ``RabbitMQSource``'s messages on its connection's thread: acknowledgements
/// coalesced into `multiple=true` runs, rejections per disposition.
public struct RabbitMQAcknowledger: Acknowledger {
    let session: RabbitMQSession

    public func settle(_ settlement: Settlement<RabbitMQMetadata>) {
        self.session.settle(settlement)
    }

    /// The source's counts (stale and unsent settlements, reconnects), for tests.
    package var counters: RabbitMQCounters { self.session.counters }

    /// Deliveries of the current channel not settled yet, waiting ones included (the read
    /// credit's count; at most the prefetch), for tests.
    package var unsettled: Int { self.session.unsettled }
}
