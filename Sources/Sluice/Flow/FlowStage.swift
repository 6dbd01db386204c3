//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A message a flow stage sends itself: one of its window timers fired.
@usableFromInline
struct FlowStageInfo: Sendable {
    @usableFromInline
    let timer: Int

    @inlinable
    init(timer: Int) {
        self.timer = timer
    }
}

/// One stage of a flow phase: runs the phase's fused operations over each batch it receives
/// and emits what they produced; ends once every upstream subscription ended (after emitting
/// what its reducers hold), or with the first abnormal end of one.
@usableFromInline
struct FlowStage<Input: Sendable, Output: Sendable>: ProducerConsumer {
    @usableFromInline
    typealias Info = FlowStageInfo

    @usableFromInline
    let lane: FlowLane<Input>
    @usableFromInline
    let outbox: FlowOutbox<Output>
    @usableFromInline
    let timers: [FlowTimer]
    /// The upstream subscriptions the stage was started with, and how many of them ended.
    @usableFromInline
    let upstreamCount: Int
    @usableFromInline
    var upstream: Set<SubscriptionID> = []
    @usableFromInline
    var ended = 0
    @usableFromInline
    var timerTasks: [Task<Void, Never>] = []
    /// Called with each batch once the operations ran on it (acknowledges a broker's messages).
    @usableFromInline
    let settle: (@Sendable ([Input]) -> Void)?
    /// Whether to yield the thread after each batch (see ``FlowDemand/givesWay``).
    @usableFromInline
    let givesWay: Bool

    @inlinable
    init(
        lane: FlowLane<Input>,
        outbox: FlowOutbox<Output>,
        timers: [FlowTimer],
        upstreamCount: Int,
        settle: (@Sendable ([Input]) -> Void)?,
        givesWay: Bool
    ) {
        // Field by field like Processors' internal init, RetryPolicy.init and the Endpoints init:
        // the same shape, each assigning its own type's fields.
        self.givesWay = givesWay
        self.lane = lane
        self.outbox = outbox
        self.timers = timers
        self.upstreamCount = upstreamCount
        self.settle = settle
    }

    @inlinable
    mutating func didStart(handle: StageHandle<FlowStage>, context: inout StageContext<Output>) {
        for timer in self.timers {
            self.timerTasks.append(
                Task {
                    while !Task.isCancelled {
                        do { try await timer.clock.sleep(for: timer.interval) } catch { return }
                        if !handle.send(FlowStageInfo(timer: timer.id)) { return }
                    }
                }
            )
        }
    }

    @inlinable
    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) async {
        let push = self.lane.push
        for event in events { push(event) }
        self.settle?(events)
        self.emit(&context)
        if self.givesWay { await Task.yield() }
    }

    @inlinable
    mutating func handleInfo(_ info: FlowStageInfo, context: inout StageContext<Output>) {
        self.lane.tick(info.timer)
        self.emit(&context)
    }

    @inlinable
    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Output>) -> DemandMode {
        self.upstream.insert(subscription.id)
        return subscription.demand
    }

    @inlinable
    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Output>) {
        // Only upstream ends count; a downstream subscriber leaving changes nothing here.
        guard self.upstream.remove(subscription) != nil else { return }
        guard reason.reason.isNormalOrShutdown else {
            context.stop(reason.reason)
            return
        }
        self.ended += 1
        if self.ended == self.upstreamCount {
            self.lane.end()
            self.emit(&context)
            context.stop(.normal)
        }
    }

    @inlinable
    mutating func terminate(reason: StopReason) async {
        for task in self.timerTasks { task.cancel() }
    }

    @inlinable
    func emit(_ context: inout StageContext<Output>) {
        if !self.outbox.elements.isEmpty { context.emit(self.outbox.take()) }
    }
}

/// The last stage of a running flow: hands every batch the flow's final stages emit to `body`,
/// one at a time, and ends once all of them ended.
@usableFromInline
struct FlowCollector<Element: Sendable>: Consumer {
    @usableFromInline
    typealias Input = Element

    @usableFromInline
    let body: @Sendable ([Element]) async throws -> Void
    @usableFromInline
    let upstreamCount: Int
    @usableFromInline
    var ended = 0

    @inlinable
    init(upstreamCount: Int, body: @escaping @Sendable ([Element]) async throws -> Void) {
        self.upstreamCount = upstreamCount
        self.body = body
    }

    @inlinable
    mutating func handleEvents(_ events: [Element], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
        try await self.body(events)
    }

    @inlinable
    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Never>) {
        guard reason.reason.isNormalOrShutdown else {
            context.stop(reason.reason)
            return
        }
        self.ended += 1
        if self.ended == self.upstreamCount { context.stop(.normal) }
    }
}
