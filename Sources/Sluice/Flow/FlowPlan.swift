//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// The stages of one running flow: what to release once everything is wired, and what to kill
/// if the run fails.
@usableFromInline
final class FlowRun: Sendable {
    private struct State: ~Copyable {
        var releases: [@Sendable () -> Void] = []
        var kills: [@Sendable () async -> Void] = []
        var endings: [@Sendable () async -> Void] = []
    }

    private let state = Mutex(State())

    @usableFromInline
    init() {}

    /// Remembers a stage of this run, to kill it if the run fails.
    @usableFromInline
    func register<S: Stage>(_ handle: StageHandle<S>) {
        self.state.withLock { $0.kills.append { _ = await handle.kill() } }
    }

    /// Remembers a source held back (in accumulate mode) until every stage subscribed.
    @usableFromInline
    func holdUntilWired<S: Stage>(_ source: StageHandle<S>) {
        self.register(source)
        self.state.withLock { $0.releases.append { source.setDemandMode(.forward) } }
    }

    /// Remembers work to do once the run ended (closing a source's connections).
    @usableFromInline
    func onEnd(_ ending: @escaping @Sendable () async -> Void) {
        self.state.withLock { $0.endings.append(ending) }
    }

    /// Runs the work remembered with ``onEnd(_:)``, once.
    @usableFromInline
    func finish() async {
        let endings = self.state.withLock { state in
            defer { state.endings = [] }
            return state.endings
        }
        for ending in endings { await ending() }
    }

    /// Lets the sources go: every stage is subscribed.
    @usableFromInline
    func release() {
        let releases = self.state.withLock { state in
            defer { state.releases = [] }
            return state.releases
        }
        for release in releases { release() }
    }

    /// Kills every stage of the run (those that ended already are not affected).
    @usableFromInline
    func killAll() async {
        let kills = self.state.withLock { $0.kills }
        for kill in kills { await kill() }
    }
}

/// The producers a phase subscribes to, whether each of its stages takes its own partition
/// of them (partition `i` for stage `i`), and what to do with each batch once the phase's
/// operations ran on it (acknowledge a broker's messages).
@usableFromInline
struct FlowUpstream<Element: Sendable>: Sendable {
    @usableFromInline
    let producers: [ProducerRef<Element>]
    @usableFromInline
    let partitioned: Bool
    @usableFromInline
    let settle: (@Sendable ([Element]) -> Void)?

    @inlinable
    init(producers: [ProducerRef<Element>], partitioned: Bool, settle: (@Sendable ([Element]) -> Void)? = nil) {
        self.producers = producers
        self.partitioned = partitioned
        self.settle = settle
    }
}

/// How a phase's input is started: a source stage, or the phase before it.
@usableFromInline
struct FlowInlet<Element: Sendable>: Sendable {
    @usableFromInline
    let start: @Sendable (FlowRun) async throws -> FlowUpstream<Element>

    @inlinable
    init(_ start: @escaping @Sendable (FlowRun) async throws -> FlowUpstream<Element>) {
        self.start = start
    }

    /// A source producer, started held back until the whole flow is wired.
    @inlinable
    static func source<P: Producer>(_ makeProducer: @escaping @Sendable () throws -> P) -> FlowInlet
    where P.Output == Element {
        FlowInlet { run in
            let handle = try await StageHandle.start(
                try makeProducer(),
                options: StageOptions(name: "flow-source", demandMode: .accumulate)
            )
            run.holdUntilWired(handle)
            return FlowUpstream(producers: [handle.producer], partitioned: false)
        }
    }
}

/// A flow up to its last phase, which is not started yet, so operations can still be fused into
/// it.
@usableFromInline
protocol FlowPlan<Element>: Sendable {
    associatedtype Element: Sendable

    /// The number of stages of the last phase.
    var stageCount: Int { get }

    /// The same plan with `ops` fused into its last phase.
    func appending<Next: Sendable>(_ ops: FlowOps<Element, Next>) -> any FlowPlan<Next>

    /// The same plan with one more check of its last phase's options, made before it starts.
    func validating(_ check: @escaping @Sendable () throws -> Void) -> any FlowPlan<Element>

    /// Starts every phase (the last one emitting through `dispatcher`, or by demand for `nil`)
    /// and returns the last phase's stages.
    func start(in run: FlowRun, dispatcher: Dispatcher<Element>?) async throws -> [ProducerRef<Element>]
}

/// How a phase's stages take their input.
@usableFromInline
struct FlowDemand: Sendable {
    @usableFromInline
    let maxDemand: Int
    @usableFromInline
    let minDemand: Int?
    /// Whether each stage gives its thread way after every batch: for inputs whose every event
    /// is milliseconds of work (file chunks), so that the source and its reads, on the same
    /// executor, run while all stages are busy instead of only when one runs dry.
    @usableFromInline
    let givesWay: Bool

    @inlinable
    init(maxDemand: Int, minDemand: Int?, givesWay: Bool = false) {
        self.maxDemand = maxDemand
        self.minDemand = minDemand
        self.givesWay = givesWay
    }
}

/// A phase: `stages` identical stages that subscribe to the inlet's producers and run `ops`.
@usableFromInline
struct FlowPhase<Input: Sendable, Element: Sendable>: FlowPlan {
    @usableFromInline
    let inlet: FlowInlet<Input>
    @usableFromInline
    let ops: FlowOps<Input, Element>
    @usableFromInline
    let stages: Int
    @usableFromInline
    let demand: FlowDemand
    /// Checks the phase's own options (its operations' windows) before anything starts.
    @usableFromInline
    let validations: [@Sendable () throws -> Void]

    @inlinable
    init(
        inlet: FlowInlet<Input>,
        ops: FlowOps<Input, Element>,
        stages: Int,
        demand: FlowDemand,
        validations: [@Sendable () throws -> Void] = []
    ) {
        // Field by field like FlowStage.init, Processors' internal init, RetryPolicy.init and the
        // Endpoints init: the same shape, each assigning its own type's fields.
        self.inlet = inlet
        self.ops = ops
        self.stages = stages
        self.demand = demand
        self.validations = validations
    }

    /// The largest stage count a phase accepts.
    @usableFromInline
    static var maximumStages: Int { 1024 }

    @inlinable
    var stageCount: Int { self.stages }

    @inlinable
    func appending<Next: Sendable>(_ next: FlowOps<Element, Next>) -> any FlowPlan<Next> {
        FlowPhase<Input, Next>(
            inlet: self.inlet,
            ops: self.ops.then(next),
            stages: self.stages,
            demand: self.demand,
            validations: self.validations
        )
    }

    @inlinable
    func validating(_ check: @escaping @Sendable () throws -> Void) -> any FlowPlan<Element> {
        FlowPhase(inlet: self.inlet, ops: self.ops, stages: self.stages, demand: self.demand, validations: self.validations + [check])
    }

    @inlinable
    func validate() throws {
        guard self.stages >= 1 && self.stages <= Self.maximumStages else {
            throw SluiceError.invalidOption("stages", self.stages, "must be 1...\(Self.maximumStages)")
        }
        try SubscriptionOptions<Input>(maxDemand: self.demand.maxDemand, minDemand: self.demand.minDemand).validate()
        for check in self.validations { try check() }
    }

    @inlinable
    func start(in run: FlowRun, dispatcher: Dispatcher<Element>?) async throws -> [ProducerRef<Element>] {
        try self.validate()
        let upstream = try await self.inlet.start(run)
        var producers: [ProducerRef<Element>] = []
        for index in 0..<self.stages {
            let subscriptions = upstream.producers.map { producer in
                SubscribeTo(
                    producer,
                    options: SubscriptionOptions<Input>(
                        maxDemand: self.demand.maxDemand,
                        minDemand: self.demand.minDemand,
                        cancel: .temporary,
                        partition: upstream.partitioned ? .index(index) : nil
                    )
                )
            }
            let handle = try await Self.startStage(
                ops: self.ops,
                name: "flow-\(index)",
                dispatcher: dispatcher,
                subscriptions: subscriptions,
                settle: upstream.settle,
                givesWay: self.demand.givesWay
            )
            run.register(handle)
            producers.append(handle.producer)
        }
        return producers
    }

    @inlinable
    static func startStage(
        ops: FlowOps<Input, Element>,
        name: String,
        dispatcher: Dispatcher<Element>?,
        subscriptions: [SubscribeTo<Input>],
        settle: (@Sendable ([Input]) -> Void)?,
        givesWay: Bool
    ) async throws -> StageHandle<FlowStage<Input, Element>> {
        var setup = FlowLaneSetup()
        let outbox = FlowOutbox<Element>()
        let lane = ops.build(outbox.lane, &setup)
        let stage = FlowStage(
            lane: lane,
            outbox: outbox,
            timers: setup.timers,
            upstreamCount: subscriptions.count,
            settle: settle,
            givesWay: givesWay
        )
        return try await StageHandle.start(
            stage,
            options: StageOptions(name: name, dispatcher: dispatcher),
            subscribeTo: subscriptions
        )
    }
}
