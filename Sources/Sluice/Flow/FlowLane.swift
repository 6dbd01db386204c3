//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The operations of one flow phase as one stage runs them: fused, so an element goes through
/// every `map`, `filter`, `flatMap` and `reduce` of the phase in one call chain, without
/// intermediate arrays or hand-offs.
///
/// `push` takes one element; `tick` tells the reducers that a window timer fired (each reducer
/// acts on its own timer's ticks and passes every tick on); `end` says the input ended, so each
/// reducer emits what it holds, then passes the end on.
@usableFromInline
struct FlowLane<Element> {
    @usableFromInline
    let push: (Element) -> Void
    @usableFromInline
    let tick: (Int) -> Void
    @usableFromInline
    let end: () -> Void

    @inlinable
    init(push: @escaping (Element) -> Void, tick: @escaping (Int) -> Void, end: @escaping () -> Void) {
        self.push = push
        self.tick = tick
        self.end = end
    }

    /// A lane that pushes into `push` and passes ticks and the end on to `downstream`.
    @inlinable
    init<Downstream>(passingTo downstream: FlowLane<Downstream>, push: @escaping (Element) -> Void) {
        self.init(push: push, tick: downstream.tick, end: downstream.end)
    }
}

/// A window timer a phase's reducers need: the stage that runs the phase starts one task per
/// timer and turns its ticks into ``FlowLane/tick``.
@usableFromInline
struct FlowTimer: Sendable {
    @usableFromInline
    let id: Int
    @usableFromInline
    let interval: Duration
    @usableFromInline
    let clock: PipelineClock

    // Same shape as StageContext.init (StageContext.swift) only: three stored fields assigned; the
    // types are unrelated.
    @inlinable
    init(id: Int, interval: Duration, clock: PipelineClock) {
        self.id = id
        self.interval = interval
        self.clock = clock
    }
}

/// What building a lane collects for its stage.
@usableFromInline
struct FlowLaneSetup {
    @usableFromInline
    var timers: [FlowTimer] = []

    @inlinable
    init() {}

    @inlinable
    mutating func addTimer(interval: Duration, clock: PipelineClock) -> Int {
        let id = self.timers.count
        self.timers.append(FlowTimer(id: id, interval: interval, clock: clock))
        return id
    }
}

/// A phase's operations from `Input` to `Output`, as a recipe: each stage builds its own lane
/// from it (its own reducer state), ending in that stage's downstream lane.
@usableFromInline
struct FlowOps<Input, Output>: Sendable {
    @usableFromInline
    let build: @Sendable (FlowLane<Output>, inout FlowLaneSetup) -> FlowLane<Input>

    @inlinable
    init(_ build: @escaping @Sendable (FlowLane<Output>, inout FlowLaneSetup) -> FlowLane<Input>) {
        self.build = build
    }

    /// These operations followed by `next`.
    @inlinable
    func then<Next>(_ next: FlowOps<Output, Next>) -> FlowOps<Input, Next> {
        let first = self.build
        let second = next.build
        return FlowOps<Input, Next> { downstream, setup in
            first(second(downstream, &setup), &setup)
        }
    }
}

extension FlowOps where Input == Output {
    /// No operation: elements pass as they are.
    @inlinable
    static var identity: FlowOps { FlowOps { downstream, _ in downstream } }
}

/// A reducer's accumulator, shared by the closures of its lane (one per stage, used only by
/// that stage's task).
@usableFromInline
final class FlowAccumulator<Value> {
    // Unchecked: touched only by the one stage task that owns the lane, once per element; the
    // dynamic exclusivity checks would cost a good part of a reducing loop.
    @exclusivity(unchecked) @usableFromInline
    var value: Value
    /// Elements reduced since the last trigger fired (or the window started).
    @exclusivity(unchecked) @usableFromInline
    var sinceTrigger = 0
    /// Elements reduced since the last result was emitted.
    @exclusivity(unchecked) @usableFromInline
    var sinceResult = 0
    /// Whether a result was ever emitted.
    @exclusivity(unchecked) @usableFromInline
    var emittedAny = false

    @inlinable
    init(_ value: Value) {
        self.value = value
    }
}

/// Where a stage's lane ends: the elements the stage will emit once the current callback ends.
@usableFromInline
final class FlowOutbox<Element> {
    // Unchecked: used only by the owning stage's task.
    @exclusivity(unchecked) @usableFromInline
    var elements: [Element] = []

    @inlinable
    init() {}

    @inlinable
    var lane: FlowLane<Element> {
        FlowLane(
            push: { [unowned self] element in self.elements.append(element) },
            tick: { _ in },
            end: {}
        )
    }

    /// The elements collected so far; the outbox is empty afterwards.
    @inlinable
    func take() -> [Element] {
        var taken: [Element] = []
        swap(&taken, &self.elements)
        return taken
    }
}

extension FlowOps {
    /// A reducer: folds each element into a per-stage accumulator and emits `output(accumulator)`
    /// at each trigger, when a fixed window ends, and when the input ends.
    ///
    /// A window in which nothing was reduced emits nothing, and neither does the end when
    /// nothing was reduced since the last result; but a reducer that never emitted emits its
    /// initial accumulator when the input ends (one result per stage, even for no input).
    @inlinable
    static func reducing<Accumulator>(
        window: FlowWindow,
        initial: @escaping @Sendable () -> Accumulator,
        combine: @escaping @Sendable (inout Accumulator, Input) -> Void,
        output: @escaping @Sendable (Accumulator, (Output) -> Void) -> Void
    ) -> FlowOps<Input, Output> {
        Self.reducing(window: window, initial: initial, combiner: FlowClosureCombiner(combine), output: output)
    }

    /// A reducer whose combining step is a value of a concrete type, so that it is inlined into
    /// the per-element loop (counting does no call per element beyond the lane's own).
    @inlinable
    static func reducing<Combiner: FlowCombiner>(
        window: FlowWindow,
        initial: @escaping @Sendable () -> Combiner.Accumulator,
        combiner: Combiner,
        output: @escaping @Sendable (Combiner.Accumulator, (Output) -> Void) -> Void
    ) -> FlowOps<Input, Output> where Combiner.Element == Input {
        FlowOps { downstream, setup in
            let state = FlowAccumulator(initial())
            var timer: Int?
            if case .fixed(let interval, let clock) = window.kind {
                timer = setup.addTimer(interval: interval, clock: clock)
            }
            let trigger = window.triggers
            let push = downstream.push
            let emit = {
                state.sinceResult = 0
                state.emittedAny = true
                output(state.value, push)
            }
            return FlowLane(
                push: { element in
                    combiner.combine(&state.value, element)
                    state.sinceResult &+= 1
                    guard let trigger else { return }
                    state.sinceTrigger &+= 1
                    if state.sinceTrigger == trigger.count {
                        state.sinceTrigger = 0
                        emit()
                        if trigger.accumulation == .reset { state.value = initial() }
                    }
                },
                tick: { id in
                    if id == timer {
                        if state.sinceResult > 0 { emit() }
                        state.value = initial()
                        state.sinceTrigger = 0
                    }
                    downstream.tick(id)
                },
                end: {
                    if state.sinceResult > 0 || !state.emittedAny { emit() }
                    downstream.end()
                }
            )
        }
    }
}

/// The step of a reducer that folds one element into the accumulator.
@usableFromInline
protocol FlowCombiner<Accumulator, Element>: Sendable {
    associatedtype Accumulator
    associatedtype Element

    func combine(_ accumulator: inout Accumulator, _ element: Element)
}

/// A combining step given as a closure.
@usableFromInline
struct FlowClosureCombiner<Accumulator, Element>: FlowCombiner {
    @usableFromInline
    let body: @Sendable (inout Accumulator, Element) -> Void

    @inlinable
    init(_ body: @escaping @Sendable (inout Accumulator, Element) -> Void) {
        self.body = body
    }

    @inlinable
    func combine(_ accumulator: inout Accumulator, _ element: Element) {
        self.body(&accumulator, element)
    }
}

/// Counts equal elements.
@usableFromInline
struct FlowCounter<Element: Hashable>: FlowCombiner {
    @inlinable
    init() {}

    @inlinable
    func combine(_ counts: inout [Element: Int], _ element: Element) {
        counts[element, default: 0] += 1
    }
}
