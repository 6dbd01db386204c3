//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging

/// How a stage runs: its name, logger, and (producers and producer-consumers) dispatcher, buffer
/// and demand mode.
///
/// The producer options (``dispatcher``, ``bufferSize``, ``bufferKeep``, ``demandMode``) are
/// `nil` unless given; a stage that has no use for one rejects it when it starts, rather than
/// ignoring it: a consumer takes none of them, a producer-consumer takes no demand mode.
public struct StageOptions<Output: Sendable>: Sendable {
    /// A name for logs and errors; defaults to the stage type's name.
    public var name: String?
    /// How emitted events are spread over subscribers. Default (`nil`): ``Dispatcher/demand``.
    public var dispatcher: Dispatcher<Output>?
    /// How many events to keep when they exist without demand. Default (`nil`): 10 000 events
    /// for a producer, ``BufferLimit/unbounded`` for a producer-consumer (whose input is already
    /// bounded by its own upstream demand).
    public var bufferSize: BufferLimit?
    /// Which events a full buffer keeps. Default (`nil`): ``BufferKeep/last``.
    public var bufferKeep: BufferKeep?
    /// Whether demand reaches the producer at once or is held (producers only). Default (`nil`):
    /// ``ProducerDemandMode/forward``.
    public var demandMode: ProducerDemandMode?
    /// The logger; defaults to `Logger.current` when the stage starts.
    public var logger: Logger?
    /// Where the stage's task runs. Default: ``StageExecutorPreference/sluice``; choose
    /// ``StageExecutorPreference/global`` to keep it on Swift's cooperative pool.
    public var executor: StageExecutorPreference

    /// Creates stage options.
    public init(
        name: String? = nil,
        dispatcher: Dispatcher<Output>? = nil,
        bufferSize: BufferLimit? = nil,
        bufferKeep: BufferKeep? = nil,
        demandMode: ProducerDemandMode? = nil,
        logger: Logger? = nil,
        executor: StageExecutorPreference = .sluice
    ) {
        // Field by field, as Swift synthesizes no public memberwise init. The same-shape runs in the
        // inits of SubscriptionOptions, PipelineConfiguration, Batcher, SubscriptionInfo,
        // PipelineRuntime, EventSource, RetryPolicy, Endpoints, Processors, FlowPhase and FlowStage
        // assign those types' own fields.
        self.name = name
        self.dispatcher = dispatcher
        self.bufferSize = bufferSize
        self.bufferKeep = bufferKeep
        self.demandMode = demandMode
        self.logger = logger
        self.executor = executor
    }

    /// The buffer limit in force for a stage of `role`.
    @usableFromInline
    func effectiveBufferSize(for role: StageRole) -> BufferLimit {
        self.bufferSize ?? (role == .producerConsumer ? .unbounded : .events(10_000))
    }

    /// Checks the options against the stage's role; throws
    /// ``SluiceError/Code-swift.struct/invalidOption`` naming the first option that is wrong.
    @usableFromInline
    func validate(role: StageRole, stageName: String) throws(SluiceError) {
        func misplaced(_ option: String, _ value: some CustomStringConvertible, _ rule: String) -> SluiceError {
            .invalidOption(option, value, "\(stageName) is a \(role); \(rule)")
        }
        switch role {
        case .consumer:
            let producerOnly = "a consumer emits nothing, so it takes no producer options"
            if self.dispatcher != nil { throw misplaced("dispatcher", "given", producerOnly) }
            if let bufferSize = self.bufferSize { throw misplaced("bufferSize", bufferSize, producerOnly) }
            if let bufferKeep = self.bufferKeep { throw misplaced("bufferKeep", bufferKeep, producerOnly) }
            if let demandMode = self.demandMode { throw misplaced("demandMode", demandMode, producerOnly) }
        case .producerConsumer:
            if let demandMode = self.demandMode {
                throw misplaced("demandMode", demandMode, "a demand mode is an option of producers only")
            }
        case .producer:
            break
        }
        if case .events(let count)? = self.bufferSize, count < 0 {
            throw .invalidOption("bufferSize", count, "must be 0 or more (or .unbounded)")
        }
        try self.dispatcher?.validate()
    }
}

/// A subscription a stage makes when it starts (and again each time a supervisor restarts it).
public struct SubscribeTo<Event: Sendable>: Sendable {
    @usableFromInline
    let source: EventSource<Event>
    @usableFromInline
    let options: SubscriptionOptions<Event>

    /// Subscribes to a running producer or producer-consumer.
    public init(_ producer: ProducerRef<Event>, options: SubscriptionOptions<Event> = .init()) {
        self.source = producer.source
        self.options = options
    }

    /// Subscribes to a running producer or producer-consumer.
    public init<P: Stage>(_ producer: StageHandle<P>, options: SubscriptionOptions<Event> = .init())
    where P.Output == Event {
        self.source = producer.cell.source
        self.options = options
    }
}

/// Metadata keys Sluice puts on log messages.
public enum SluiceLogKey {
    // Same shape as KafkaLogKey, RabbitMQLogKey and RedisLogKey: each module keeps its own
    // sluice.<module>.* keys in its own enum (STYLE habit 8: a module's log keys in one enum).
    /// The name of the stage logging.
    public static let stageName = "sluice.stage.name"
    /// The identifier of the stage logging.
    public static let stageID = "sluice.stage.id"
    /// A subscription identifier.
    public static let subscription = "sluice.subscription"
    /// A count of events.
    public static let count = "sluice.count"
    /// A stop reason.
    public static let reason = "sluice.reason"
}

/// Counters of a running stage, for tests and diagnostics.
public struct StageStatistics: Hashable, Sendable {
    /// Events received from upstream subscriptions.
    public var eventsIn = 0
    /// Events sent to subscribers.
    public var eventsOut = 0
    /// Events in the producer buffer now.
    public var buffered = 0
    /// Events the producer buffer discarded because it was full.
    public var bufferDiscarded = 0
    /// Events the dispatcher discarded (partition hash said "discard", or unknown partition).
    public var dispatcherDiscarded = 0
    /// Downstream subscribers now.
    public var subscribers = 0
    /// Upstream subscriptions now.
    public var upstreamSubscriptions = 0
    /// Demand asked upstream and not yet received, over all upstream subscriptions.
    public var pendingUpstreamDemand = 0
    /// Held demand in accumulate mode.
    public var accumulatedDemand = 0
}
