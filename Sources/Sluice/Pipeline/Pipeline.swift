//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
public import Metrics
public import ServiceLifecycle
public import Synchronization

/// How a pipeline runs: failure policy, shutdown deadline, rate limit, clock, logging, metrics.
public struct PipelineConfiguration: Sendable {
    /// What happens to messages that fail. Default: 3 attempts with backoff, then dead-letter.
    public var failurePolicy: FailurePolicy
    /// How long a graceful shutdown may take to finish in-flight work before the remaining
    /// messages are left unacknowledged for the broker to deliver again. Default: 30 s.
    ///
    /// At the deadline every stage is killed and the handlers still running are cancelled;
    /// ``Pipeline/run()`` returns once they returned. A handler that ignores cancellation (a
    /// blocking call, a loop that never checks `Task.isCancelled`) holds the run until it
    /// returns: Swift cannot end a task from outside. Its message is not acknowledged.
    public var shutdownTimeout: Duration
    /// At most this many messages per interval (`nil`: unlimited). Changeable at runtime with
    /// ``Pipeline/setRateLimit(_:)``.
    public var rateLimit: RateLimit?
    /// The clock for batch timeouts, backoff and the rate limit.
    public var clock: PipelineClock
    /// The logger; defaults to `Logger.current` when the pipeline runs.
    public var logger: Logger?
    /// The metrics factory; defaults to `MetricsSystem.factory`.
    public var metricsFactory: (any MetricsFactory)?

    /// Creates a configuration.
    public init(
        failurePolicy: FailurePolicy = FailurePolicy(),
        shutdownTimeout: Duration = .seconds(30),
        rateLimit: RateLimit? = nil,
        clock: PipelineClock = .continuous,
        logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        // Field by field (no public memberwise init is synthesized); Batcher.init and
        // SubscriptionInfo.init only share the shape.
        self.failurePolicy = failurePolicy
        self.shutdownTimeout = shutdownTimeout
        self.rateLimit = rateLimit
        self.clock = clock
        self.logger = logger
        self.metricsFactory = metricsFactory
    }
}

/// A running message pipeline: a source, processors and batchers, as a service.
///
/// ```swift
/// let pipeline = Pipeline("orders", source: source) {
///     Processors(concurrency: 8, partitionBy: \.metadata.key) { message in
///         let order = try message.decode(Order.self)
///         message.batchKey = order.region
///     }
///     Batcher(size: 500, timeout: .milliseconds(200)) { batch in try await db.insert(batch) }
/// }
/// try await ServiceGroup(services: [pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Every message is settled exactly once, after the last stage that handles it: acknowledged
/// after success, or routed by the ``FailurePolicy``. On graceful shutdown the pipeline stops
/// taking messages, finishes what is in flight, flushes batches, settles, and closes the source
/// within ``PipelineConfiguration/shutdownTimeout``; messages still in flight after that stay
/// unacknowledged (the broker delivers them again) and their number is logged. Cancelling the
/// task running ``run()`` stops at once, leaving in-flight messages unacknowledged.
public final class Pipeline<Source: PipelineSource>: Service, Sendable {
    /// The metadata of the source's messages.
    public typealias Metadata = Source.Metadata

    /// The pipeline's name, in logs and metrics.
    public let name: String
    /// The source.
    public let source: Source
    /// The configuration.
    public let configuration: PipelineConfiguration
    @usableFromInline
    let components: PipelineComponents<Metadata>
    @usableFromInline
    let limiter: RateLimiter
    @usableFromInline
    let running = Mutex(RunState())

    /// The running stages, a drain asked for before they were all started, and the last run's
    /// counts and stages.
    @usableFromInline
    struct RunState: Sendable {
        @usableFromInline var current: RunningState?
        @usableFromInline var drainRequested = false
        @usableFromInline var last = PipelineStatistics()
        @usableFromInline var lastStages: [SupervisedStage] = []

        @usableFromInline
        init() {}
    }

    @usableFromInline
    struct RunningState: Sendable {
        @usableFromInline
        var stages: [SupervisedStage]
        @usableFromInline
        var drain: @Sendable () -> Void
        @usableFromInline
        var pokeProcessors: @Sendable () -> Void
        @usableFromInline
        var statistics: @Sendable () -> PipelineStatistics

        @usableFromInline
        init(
            stages: [SupervisedStage],
            drain: @escaping @Sendable () -> Void,
            pokeProcessors: @escaping @Sendable () -> Void,
            statistics: @escaping @Sendable () -> PipelineStatistics
        ) {
            self.stages = stages
            self.drain = drain
            self.pokeProcessors = pokeProcessors
            self.statistics = statistics
        }
    }

    /// Creates a pipeline; nothing runs until ``run()``.
    public init(
        _ name: String,
        source: Source,
        configuration: PipelineConfiguration = .init(),
        @PipelineBuilder<Source.Metadata> _ build: () -> PipelineComponents<Source.Metadata>
    ) {
        self.name = name
        self.source = source
        self.configuration = configuration
        self.components = build()
        self.limiter = RateLimiter(configuration.rateLimit)
    }

    /// The in-flight window the topology needs: Σ processor maxDemand + Σ batch size × batcher
    /// concurrency. Handed to the source (e.g. as AMQP prefetch).
    public var window: Int {
        let processors = self.components.processors.reduce(0) { $0 + $1.concurrency * $1.maxDemand }
        let batchers = self.components.batchers.reduce(0) { $0 + $1.size * $1.concurrency }
        return processors + batchers
    }

    /// Checks the topology and configuration; ``run()`` does this first.
    ///
    /// - Throws: ``SluiceError`` (``SluiceError/Code-swift.struct/invalidOption``) naming the
    ///   option and the numbers that do not fit.
    public func validate() throws(SluiceError) {
        guard self.components.processors.count == 1 else {
            throw .invalidOption(
                "processors",
                self.components.processors.count,
                "a pipeline has exactly one Processors component"
            )
        }
        try self.components.processors[0].validate()
        var names = Set<String>()
        for batcher in self.components.batchers {
            try batcher.validate()
            guard names.insert(batcher.name).inserted else {
                throw .invalidOption("batcher.name", batcher.name, "batcher names must be unique")
            }
        }
        try self.configuration.failurePolicy.validate()
        try self.configuration.rateLimit?.validate()
        guard self.configuration.shutdownTimeout >= .zero else {
            throw .invalidOption("shutdownTimeout", self.configuration.shutdownTimeout, "must not be negative")
        }
        if let maximum = self.source.maximumInFlight, maximum < self.window {
            let processors = self.components.processors[0]
            let batchers = self.components.batchers.map { "\($0.size)×\($0.concurrency) (\($0.name))" }
            throw SluiceError(
                .invalidOption,
                "the pipeline needs an in-flight window of \(self.window) messages "
                    + "(processors \(processors.concurrency)×maxDemand \(processors.maxDemand)"
                    + (batchers.isEmpty ? "" : " + batches " + batchers.joined(separator: " + "))
                    + ") but the source allows at most \(maximum) unacknowledged; "
                    + "raise the source's limit or lower the demand and batch sizes"
            )
        }
    }

    /// Changes the rate limit while running (`nil` removes it).
    public func setRateLimit(_ limit: RateLimit?) throws(SluiceError) {
        try limit?.validate()
        self.limiter.set(limit)
        let poke = self.running.withLock { $0.current?.pokeProcessors }
        poke?()
    }

    /// The message counts of the current run, or of the last one once it ended.
    public var statistics: PipelineStatistics {
        let (current, last) = self.running.withLock { ($0.current?.statistics, $0.last) }
        return current?() ?? last
    }

    /// Asks the pipeline to drain: stop taking messages, finish in-flight work, end. Asked while
    /// the pipeline is still starting, the drain begins as soon as every stage runs.
    public func drain() {
        let drain = self.running.withLock { state -> (@Sendable () -> Void)? in
            if let current = state.current { return current.drain }
            state.drainRequested = true
            return nil
        }
        drain?()
    }

    /// Runs the pipeline until the source ends, a stage fails, graceful shutdown completes, or
    /// the task is cancelled.
    ///
    /// The stages are started first (``startTopology(parts:runtime:logger:group:)``); the rest of
    /// the run is their lifecycle: a graceful shutdown drains them within
    /// ``PipelineConfiguration/shutdownTimeout``, cancellation stops them at once, and the
    /// source is shut down once they all ended.
    ///
    /// - Throws: ``SluiceError`` for an invalid configuration; the source's error if it cannot
    ///   connect or fails later; a stage's error if one crashed.
    @inlinable
    public func run() async throws {
        let (parts, runtime, logger) = try await self.connect()
        // The stages run as children of this group, so cancelling the run reaches each stage's
        // task, and no stage outlives the run: the group ends once every stage's loop returned.
        let outcome = await withTaskGroup(of: RunEvent.self, returning: Result<[StopReason], any Error>.self) { group in
            let topology: Topology
            do {
                topology = try await self.startTopology(parts: parts, runtime: runtime, logger: logger, group: &group)
            } catch {
                return .failure(error)
            }
            return .success(await self.runLifecycle(of: topology, runtime: runtime, logger: logger, group: &group))
        }
        try await self.finish(outcome, acknowledger: parts.acknowledger, runtime: runtime, logger: logger)
    }

    /// Validates the pipeline, connects its source and builds the run's runtime.
    @usableFromInline
    func connect() async throws -> (SourceParts<Source.SourceStage, Source.Acker>, PipelineRuntime<Source>, Logger) {
        try self.validate()
        var logger = self.configuration.logger ?? Logger.current
        logger[metadataKey: "sluice.pipeline"] = "\(self.name)"
        let parts = try await self.source.makeParts(
            context: SourceContext(pipelineName: self.name, window: self.window, logger: logger)
        )
        let runtime = PipelineRuntime<Source>(
            name: self.name,
            acknowledger: parts.acknowledger,
            policy: self.configuration.failurePolicy,
            clock: self.configuration.clock,
            limiter: self.limiter,
            logger: logger,
            batcherNames: self.components.batchers.map(\.name),
            metricsFactory: self.configuration.metricsFactory
        )
        return (parts, runtime, logger)
    }

    /// Shuts the source down once every stage ended, and throws a failed start's error or the
    /// first stage failure.
    @usableFromInline
    func finish(
        _ outcome: Result<[StopReason], any Error>,
        acknowledger: Source.Acker,
        runtime: PipelineRuntime<Source>,
        logger: Logger
    ) async throws {
        await self.source.shutdown(acknowledger)
        let reasons = try outcome.get()
        let statistics = runtime.statistics
        if statistics.inFlight > 0 {
            logger.info(
                "pipeline stopped with messages unacknowledged; the broker will deliver them again",
                metadata: [SluiceLogKey.count: "\(statistics.inFlight)"]
            )
        }
        if let failure = reasons.lazy.compactMap(\.error).first {
            throw failure
        }
    }

    /// What a child task of a run reports when it ends.
    @usableFromInline
    enum RunEvent: Sendable {
        /// A stage's loop returned.
        case stageLoopEnded
        /// Every stage ended: why, upstream first.
        case stagesEnded([StopReason])
        /// Every stage must be killed: the run was cancelled or the shutdown deadline passed.
        case kill
        /// The run's timer loop ended.
        case timersEnded
    }

    /// The started stages of one run, upstream first, and how to reach them.
    ///
    /// The stages' loops are children of the run's task group, not tasks of their own: killing
    /// them cancels that group (``runLifecycle(of:runtime:logger:group:)``).
    @usableFromInline
    struct Topology: Sendable {
        @usableFromInline var stages: [SupervisedStage] = []
        /// Tells the source to drain.
        @usableFromInline var drainSource: @Sendable () -> Void = {}
        /// Lets the source forward the demand it held while the stages started.
        @usableFromInline var startSource: @Sendable () -> Void = {}
        /// Tell each processor that rate-limit tokens may be available.
        @usableFromInline var pokes: [@Sendable () -> Void] = []

        @usableFromInline
        init() {}
    }

    /// Starts the stages: the source (holding demand), the processors, then each batcher and
    /// its batch processors, each subscribed once what it subscribes to runs. If one cannot
    /// start, the ones started are stopped and the error thrown.
    @inlinable
    func startTopology(
        parts: SourceParts<Source.SourceStage, Source.Acker>,
        runtime: PipelineRuntime<Source>,
        logger: Logger,
        group: inout TaskGroup<RunEvent>
    ) async throws -> Topology {
        var topology = Topology()
        do {
            let sourceHandle = try await self.startSource(parts.stage, logger: logger, group: &group)
            topology.stages.append(SupervisedStage(sourceHandle))
            topology.drainSource = { sourceHandle.send(.drain) }
            topology.startSource = { sourceHandle.setDemandMode(.forward) }
            if self.components.batchers.isEmpty {
                _ = try await self.startProcessors(from: sourceHandle, dispatcher: nil, into: &topology, logger: logger, group: &group) { index in
                    TerminalProcessorStage(core: ProcessorCore(runtime: runtime, processors: self.components.processors[0], index: index, routesToBatchers: false))
                }
            } else {
                let processors = try await self.startProcessors(from: sourceHandle, dispatcher: self.batcherRouting, into: &topology, logger: logger, group: &group) { index in
                    ProcessorStage(core: ProcessorCore(runtime: runtime, processors: self.components.processors[0], index: index, routesToBatchers: true))
                }
                for batcher in self.components.batchers {
                    try await self.startBatcher(batcher, after: processors, runtime: runtime, into: &topology, logger: logger, group: &group)
                }
            }
            return topology
        } catch {
            for stage in topology.stages.reversed() { _ = await stage.stop(.shutdown) }
            throw error
        }
    }

    /// Starts the source stage, holding demand until every stage is subscribed, so that a
    /// source cannot finish (and end) before the last processor or batcher joined.
    @inlinable
    func startSource(
        _ stage: sending Source.SourceStage,
        logger: Logger,
        group: inout TaskGroup<RunEvent>
    ) async throws -> StageHandle<Source.SourceStage> {
        let processors = self.components.processors[0]
        let count = processors.concurrency
        let dispatcher: Dispatcher<Message<Metadata>> =
            processors.partition.map { hash in
                .partition(count: count) { message in .index(Int(UInt(bitPattern: hash(message)) % UInt(count))) }
            } ?? .demand
        return try await Self.startStage(
            stage,
            options: StageOptions(
                name: "\(self.name).source",
                dispatcher: dispatcher,
                bufferSize: .unbounded,
                demandMode: .accumulate,
                logger: logger
            ),
            in: &group
        )
    }

    /// How processors hand messages to the batchers: one batcher takes everything a processor
    /// passes on (a processor fails messages routed to unknown batchers), with no routing per
    /// message; several are partitions by name, and unrouted messages go to the first.
    @inlinable
    var batcherRouting: Dispatcher<Message<Metadata>> {
        let batchers = self.components.batchers
        guard batchers.count > 1 else { return .demand }
        return .partition(names: batchers.map(\.name)) { message in
            // By position, not by hashing the name.
            message.batcher.map { .name($0) } ?? .index(0)
        }
    }

    /// Starts the processors, each subscribed to the source (to its partition when
    /// partitioned), handing on what they pass with `dispatcher` (`nil` for processors that
    /// settle messages themselves: a consumer takes no producer options).
    @inlinable
    func startProcessors<S: ProcessorStageShape>(
        from sourceHandle: StageHandle<Source.SourceStage>,
        dispatcher: Dispatcher<S.Output>?,
        into topology: inout Topology,
        logger: Logger,
        group: inout TaskGroup<RunEvent>,
        _ make: (Int) -> S
    ) async throws -> [StageHandle<S>] where S.Source == Source {
        let processors = self.components.processors[0]
        var handles: [StageHandle<S>] = []
        for index in 0..<processors.concurrency {
            var subscription = SubscriptionOptions<Message<Metadata>>(maxDemand: processors.maxDemand, minDemand: processors.minDemand)
            if processors.partition != nil { subscription.partition = .index(index) }
            let name = "\(self.name).processor.\(index)"
            let handle = try await Self.startStage(
                make(index),
                options: dispatcher.map { StageOptions(name: name, dispatcher: $0, bufferSize: .unbounded, logger: logger) }
                    ?? StageOptions(name: name, logger: logger),
                subscribeTo: [SubscribeTo(sourceHandle, options: subscription)],
                in: &group
            )
            handles.append(handle)
            topology.stages.append(SupervisedStage(handle))
            topology.pokes.append { handle.send(.tokens) }
        }
        return handles
    }

    /// Starts a batcher subscribed to every processor, and its batch processors.
    @inlinable
    func startBatcher(
        _ batcher: Batcher<Metadata>,
        after processorHandles: [StageHandle<ProcessorStage<Source>>],
        runtime: PipelineRuntime<Source>,
        into topology: inout Topology,
        logger: Logger,
        group: inout TaskGroup<RunEvent>
    ) async throws {
        let processors = self.components.processors[0]
        let several = self.components.batchers.count > 1
        let subscriptions = processorHandles.map { handle in
            SubscribeTo(
                handle,
                options: SubscriptionOptions(
                    // Twice what a processor handles at once (at least a batch), so its output
                    // reaches the batcher in one piece, in one slice.
                    maxDemand: 2 * max(batcher.size, processors.maxDemand),
                    cancel: .transient,
                    partition: several ? .name(batcher.name) : nil
                )
            )
        }
        let batcherHandle = try await Self.startStage(
            BatcherStage(runtime: runtime, batcher: batcher),
            options: StageOptions(name: "\(self.name).batcher.\(batcher.name)", bufferSize: .unbounded, logger: logger),
            subscribeTo: subscriptions,
            in: &group
        )
        topology.stages.append(SupervisedStage(batcherHandle))
        // Batches a batch processor asks for: what two processor hand-offs fill, at least 4 and
        // at most 32, re-asked half at a time. Batches then wait while another is handled
        // instead of each waiting on a round trip to the batcher (2 → 4 batches measured about
        // +15 %, 4 → 16 about +30 % on the pipeline benchmark).
        let batchDemand = min(32, max(4, 2 * processors.maxDemand / batcher.size))
        for index in 0..<batcher.concurrency {
            let handle = try await Self.startStage(
                BatchProcessorStage(runtime: runtime, batcher: batcher, index: index),
                options: StageOptions(name: "\(self.name).batch_processor.\(batcher.name).\(index)", logger: logger),
                subscribeTo: [SubscribeTo(batcherHandle, options: SubscriptionOptions(maxDemand: batchDemand, minDemand: batchDemand / 2))],
                in: &group
            )
            topology.stages.append(SupervisedStage(handle))
        }
    }

    /// Starts one stage whose loop runs as a child of the run's task group: returns once its
    /// `didStart` returned and it subscribed to `subscriptions`.
    @inlinable
    static func startStage<S: Stage>(
        _ stage: sending S,
        options: StageOptions<S.Output>,
        subscribeTo subscriptions: [SubscribeTo<S.Input>] = [],
        in group: inout TaskGroup<RunEvent>
    ) async throws -> StageHandle<S> {
        let prepared = try StageHandle.prepare(stage, options: options, subscribeTo: subscriptions)
        return try await prepared.start { loop in
            group.addTask(executorPreference: prepared.executor) {
                await loop()
                return .stageLoopEnded
            }
        }
    }

    /// The lifecycle of a started topology: publishes it (for ``drain()``, statistics and rate
    /// changes), lets the source go, and waits until every stage ended. It adds to the run's
    /// group, beside the stages' loops, the stage waiter, the run's timer loop and the shutdown
    /// watch, which drains on graceful shutdown and asks for a kill once the deadline passed or
    /// the run was cancelled. A kill cancels the group, so a callback that awaits sees
    /// cancellation, and tells every stage to stop.
    ///
    /// - Returns: Why each stage ended, upstream first.
    @usableFromInline
    func runLifecycle(
        of topology: Topology,
        runtime: PipelineRuntime<Source>,
        logger: Logger,
        group: inout TaskGroup<RunEvent>
    ) async -> [StopReason] {
        let pokes = topology.pokes
        let drainNow = self.running.withLock { state -> Bool in
            state.current = RunningState(
                stages: topology.stages,
                drain: topology.drainSource,
                pokeProcessors: { for poke in pokes { poke() } },
                statistics: { runtime.statistics }
            )
            return state.drainRequested
        }
        defer {
            self.running.withLock { state in
                state.last = runtime.statistics
                state.lastStages = topology.stages
                state.current = nil
                state.drainRequested = false
            }
        }
        if drainNow { topology.drainSource() }
        topology.startSource()

        let stages = topology.stages
        let clock = self.configuration.clock
        let timeout = self.configuration.shutdownTimeout
        group.addTask {
            var reasons: [StopReason] = []
            for stage in stages { reasons.append(await stage.waitForTermination()) }
            return .stagesEnded(reasons)
        }
        group.addTask {
            await runtime.timers.run(clock: clock)
            return .timersEnded
        }
        group.addTask {
            // Ends by cancellation: of the run (kill at once), or of the group once every stage
            // ended (the kill is then ignored).
            do {
                try await gracefulShutdown()
                logger.debug("graceful shutdown: draining")
                self.drain()
                try await clock.sleep(for: timeout)
                logger.info("shutdown deadline passed; stopping with messages in flight")
            } catch {}
            return .kill
        }
        var reasons: [StopReason]?
        var killed = false
        while let event = await group.next() {
            switch event {
            case .stagesEnded(let ended):
                reasons = ended
                group.cancelAll()
            case .kill:
                guard reasons == nil, !killed else { continue }
                killed = true
                group.cancelAll()
                for stage in stages { _ = await stage.kill() }
            case .stageLoopEnded, .timersEnded:
                continue
            }
        }
        return reasons ?? []
    }

    /// The stages of the current run, or of the last one once it ended, upstream first.
    package var stages: [SupervisedStage] {
        self.running.withLock { $0.current?.stages ?? $0.lastStages }
    }
}
