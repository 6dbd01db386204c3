//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Logging

/// The loop of one stage and all of its state, held in a local value of the stage's task so
/// that the hot path touches no shared memory besides the mailbox.
///
/// Rules kept here (GenStage's): a producer serves its buffer before asking its handler; a
/// producer-consumer handles queued input only while it has downstream demand, and its upstream
/// asks follow its own subscription; a consumer receives events in slices of at most
/// `maxDemand - minDemand` and re-asks after each slice.
@usableFromInline
struct StageRunner<S: Stage, D: EventDispatcher> where D.Event == S.Output {
    @usableFromInline
    struct Upstream {
        @usableFromInline
        let source: EventSource<S.Input>
        @usableFromInline
        var demand: ConsumerDemand
        @usableFromInline
        let cancel: CancelMode

        @inlinable
        init(source: EventSource<S.Input>, demand: ConsumerDemand, cancel: CancelMode) {
            self.source = source
            self.demand = demand
            self.cancel = cancel
        }
    }

    @usableFromInline
    enum QueuedInput {
        case events(SubscriptionID, [S.Input])
        case ended(SubscriptionID, StopReason)
    }

    @usableFromInline
    var stage: S
    @usableFromInline
    var context: StageContext<S.Output>
    @usableFromInline
    let cell: StageCell<S>
    @usableFromInline
    var dispatcher: D
    @usableFromInline
    var buffer: EventBuffer<S.Output>
    /// Held demands in accumulate mode; `nil` in forward mode.
    @usableFromInline
    var accumulated: [Int]?
    @usableFromInline
    var upstreams = SubscriptionTable<Upstream>()
    /// Producer-consumer input waiting for downstream demand.
    @usableFromInline
    var queuedInput: Deque<QueuedInput> = []
    /// Producer-consumer: downstream demand not yet covered by emitted events.
    @usableFromInline
    var downstreamDemand = 0
    @usableFromInline
    var stopReason: StopReason?
    /// A normal stop waiting for the buffer to reach subscribers.
    @usableFromInline
    var drainingReason: StopReason?
    @usableFromInline
    var statistics = StageStatistics()

    @inlinable
    init(stage: consuming S, cell: StageCell<S>, dispatcher: D, options: StageOptions<S.Output>, logger: Logger) {
        self.stage = stage
        self.cell = cell
        self.dispatcher = dispatcher
        self.buffer = EventBuffer(limit: options.bufferSize, keep: options.bufferKeep)
        self.accumulated = options.demandMode == .accumulate ? [] : nil
        self.context = StageContext(stageID: cell.stageID, stageName: cell.stageName, logger: logger)
    }

    // MARK: Loop

    @inlinable
    mutating func run() async -> StopReason {
        // Mail in reverse arrival order, so that the next one is taken off the end by moving.
        var inbox: [StageMail<S>] = []
        do {
            try await self.stage.didStart(handle: StageHandle(cell: self.cell), context: &self.context)
        } catch {
            self.crash(error)
        }
        await self.afterCallback()
        while self.stopReason == nil {
            await self.cell.mailbox.receive(into: &inbox)
            inbox.reverseMoving()
            while self.stopReason == nil, let mail = inbox.popLast() {
                await self.handle(consume mail)
            }
        }
        inbox.reverseMoving()
        return await self.terminate(unhandled: inbox)
    }

    @inlinable
    mutating func handle(_ mail: consuming StageMail<S>) async {
        // Consumed so a batch arrives with a single reference: a handler changing it in place
        // does not copy it.
        switch consume mail {
        case .events(let subscription, let events):
            if S.role == .producerConsumer {
                guard self.upstreams[subscription] != nil else { return }
                // `consume`: no binding may keep a second reference while the batch is handled.
                self.queuedInput.append(.events(subscription, consume events))
                await self.handleQueuedInput()
            } else {
                await self.consume(consume events, from: subscription)
            }

        case .upstreamEnded(let subscription, let reason):
            // The end waits behind queued input so that input is still handled, unless it is a
            // crash or shutdown that ends this stage: that must not wait for downstream demand.
            if S.role == .producerConsumer && !self.queuedInput.isEmpty && !self.endsAtOnce(subscription, reason) {
                self.queuedInput.append(.ended(subscription, reason))
                await self.handleQueuedInput()
            } else {
                await self.upstreamEnded(subscription, reason: reason)
            }

        case .subscribeUpstream(let source, let options, let reply):
            await self.subscribeUpstream(source, options: options, reply: reply)

        case .cancelUpstream(let subscription, let reason):
            if let upstream = self.upstreams.removeValue(forKey: subscription) {
                upstream.source.cancel(subscription, reason: reason)
            }

        case .subscribe(let subscription, let sink, let options, let reply):
            do {
                try self.dispatcher.subscribe(subscription, sink: sink, options: options)
                reply?.succeed(subscription)
            } catch {
                reply?.fail(error)
                sink.subscriptionEnded(subscription, reason: .failure(error))
            }

        case .ask(let subscription, let count):
            guard self.dispatcher.contains(subscription) else { return }
            let demand = self.dispatcher.ask(count, from: subscription)
            await self.supply(demand)
            self.checkDrained()

        case .cancel(let subscription, _):
            let demand = self.dispatcher.cancel(subscription)
            await self.supply(demand)
            self.checkDrained()

        case .supply(let demand):
            await self.supply(demand)
            self.checkDrained()

        case .demandMode(let mode):
            await self.setDemandMode(mode)

        case .info(let info):
            do {
                try await self.stage.handleInfo(info, context: &self.context)
            } catch {
                self.crash(error)
            }
            await self.afterCallback()

        case .statistics(let reply):
            reply.succeed(self.currentStatistics())

        case .stop(let reason):
            self.stopReason = reason
        }
    }

    // MARK: Producer side

    /// Satisfies `demand` from the buffer first, then from the stage.
    @inlinable
    mutating func supply(_ demand: Int) async {
        guard demand > 0, self.stopReason == nil else { return }
        var demand = demand
        if !self.buffer.isEmpty {
            let events = self.buffer.take(demand)
            demand -= events.count
            self.dispatch(events, fromBuffer: true)
        }
        guard demand > 0 else { return }
        switch S.role {
        case .producer:
            if self.accumulated != nil {
                self.accumulated!.append(demand)
            } else {
                await self.callHandleDemand(demand)
            }
        case .producerConsumer:
            self.downstreamDemand += demand
            await self.handleQueuedInput()
        case .consumer:
            break
        }
    }

    @inlinable
    mutating func callHandleDemand(_ demand: Int) async {
        // A producer that asked to stop only hands out what it already emitted.
        guard self.drainingReason == nil else { return }
        do {
            try await self.stage.handleDemand(demand, context: &self.context)
        } catch {
            self.crash(error)
        }
        await self.afterCallback()
    }

    @inlinable
    mutating func dispatch(_ events: consuming [S.Output], fromBuffer: Bool = false) {
        if self.dispatcher.subscriberCount == 0 {
            self.storeInBuffer(events, front: fromBuffer)
            return
        }
        let discardedBefore = self.dispatcher.discarded
        let count = events.count
        let outcome = self.dispatcher.dispatch(consume events)
        self.statistics.eventsOut += count - outcome.leftover.count - (self.dispatcher.discarded - discardedBefore)
        if !outcome.leftover.isEmpty {
            self.storeInBuffer(outcome.leftover, front: fromBuffer)
        }
        if outcome.extraDemand > 0 {
            // Processed after the mail already queued, so a hash that discards everything
            // cannot starve the stage's other mail.
            self.cell.mailbox.send(.supply(outcome.extraDemand))
        }
    }

    @inlinable
    mutating func storeInBuffer(_ events: consuming [S.Output], front: Bool) {
        if front {
            self.buffer.putBack(events)
            return
        }
        self.dispatcher.buffered(events.count)
        let dropped = self.buffer.store(events)
        if dropped > 0 {
            self.statistics.bufferDiscarded += dropped
            self.context.logger.warning(
                "producer buffer full: discarded events",
                metadata: [SluiceLogKey.count: "\(dropped)", "sluice.buffer.size": "\(self.buffer.limit)"]
            )
        }
    }

    @inlinable
    mutating func setDemandMode(_ mode: ProducerDemandMode) async {
        switch mode {
        case .accumulate:
            if self.accumulated == nil { self.accumulated = [] }
        case .forward:
            guard let held = self.accumulated else { return }
            self.accumulated = nil
            for demand in held where self.stopReason == nil {
                await self.callHandleDemand(demand)
            }
        }
    }

    // MARK: Consumer side

    @inlinable
    mutating func subscribeUpstream(
        _ source: EventSource<S.Input>,
        options: SubscriptionOptions<S.Input>,
        reply: Reply<SubscriptionID>?
    ) async {
        let subscription = SubscriptionID.next()
        let mode: DemandMode
        do {
            let info = SubscriptionInfo(
                id: subscription,
                producer: source.stageID,
                maxDemand: options.maxDemand,
                minDemand: options.effectiveMinDemand,
                demand: options.demand,
                cancel: options.cancel
            )
            mode = try await self.stage.handleSubscribe(info, context: &self.context)
        } catch {
            reply?.fail(error)
            self.crash(error)
            return
        }
        var demand = ConsumerDemand(
            maxDemand: options.maxDemand,
            minDemand: options.effectiveMinDemand,
            manual: mode == .manual
        )
        let first = demand.initialAsk()
        self.upstreams[subscription] = Upstream(source: source, demand: demand, cancel: options.cancel)
        guard source.subscribe(subscription, sink: self.cell.sink, options: options, reply: reply) else {
            let error = SluiceError(.stageEnded, "cannot subscribe to \(source.stageName) (\(source.stageID)): it has ended")
            reply?.fail(error)
            await self.upstreamEnded(subscription, reason: .failure(error))
            return
        }
        if first > 0 { source.ask(first, on: subscription) }
        await self.afterCallback()
    }

    /// Hands `events` to the stage in slices and re-asks after each slice.
    @inlinable
    mutating func consume(_ events: consuming [S.Input], from subscription: SubscriptionID) async {
        guard var upstream = self.upstreams[subscription] else { return }
        let count = events.count
        self.statistics.eventsIn += count
        if upstream.demand.manual {
            self.account(upstream.demand.consume(count).excess, subscription)
            self.upstreams[subscription] = upstream
            await self.callHandleEvents(consume events, subscription)
            return
        }
        let sliceSize = upstream.demand.sliceSize
        if count <= sliceSize {
            // One slice: the batch is handed over as it is.
            let (ask, excess) = upstream.demand.consume(count)
            self.account(excess, subscription)
            self.upstreams[subscription] = upstream
            await self.callHandleEvents(consume events, subscription)
            self.reask(ask, on: subscription)
            return
        }
        // Slices are moved out of the batch, not copied event by event.
        var remaining = EventQueue(consume events)
        while !remaining.isEmpty {
            let slice = remaining.take(sliceSize)
            let (ask, excess) = upstream.demand.consume(slice.count)
            self.account(excess, subscription)
            self.upstreams[subscription] = upstream
            await self.callHandleEvents(slice, subscription)
            guard let current = self.reask(ask, on: subscription) else { return }
            upstream = current
        }
    }

    /// After a slice: asks `ask` more on `subscription`, unless the stage is stopping or the
    /// subscription is gone; returns the subscription's current state.
    @inlinable
    @discardableResult
    func reask(_ ask: Int, on subscription: SubscriptionID) -> Upstream? {
        // Re-read the subscription: the callback may have asked on it (context.ask), and that
        // demand must not be overwritten by the caller's copy.
        guard self.stopReason == nil, let current = self.upstreams[subscription] else { return nil }
        if ask > 0 { current.source.ask(ask, on: subscription) }
        return current
    }

    @inlinable
    func account(_ excess: Int, _ subscription: SubscriptionID) {
        if excess > 0 {
            self.context.logger.error(
                "received more events than asked",
                metadata: [SluiceLogKey.subscription: "\(subscription)", SluiceLogKey.count: "\(excess)"]
            )
        }
    }

    @inlinable
    mutating func callHandleEvents(_ events: consuming [S.Input], _ subscription: SubscriptionID) async {
        do {
            try await self.stage.handleEvents(consume events, from: subscription, context: &self.context)
        } catch {
            self.crash(error)
        }
        await self.afterCallback()
    }

    /// Producer-consumer: handles queued input while downstream demand lasts.
    @inlinable
    mutating func handleQueuedInput() async {
        while self.stopReason == nil, !self.queuedInput.isEmpty {
            if case .events = self.queuedInput[0], self.downstreamDemand <= 0 { return }
            // Taken out of the queue and consumed before it is handled, so the batch has a
            // single reference (switching over the temporary kept a second one alive).
            let next = self.queuedInput.removeFirst()
            switch consume next {
            case .ended(let subscription, let reason):
                await self.upstreamEnded(subscription, reason: reason)
            case .events(let subscription, let events):
                await self.consume(consume events, from: subscription)
            }
        }
    }

    /// Whether the end of `subscription`'s producer for `reason` ends this stage without
    /// handling the input still queued (any end but a normal one that the cancel mode obeys).
    @inlinable
    func endsAtOnce(_ subscription: SubscriptionID, _ reason: StopReason) -> Bool {
        if case .normal = reason { return false }
        return self.upstreams[subscription]?.cancel.endsConsumer(for: reason) ?? false
    }

    @inlinable
    mutating func upstreamEnded(_ subscription: SubscriptionID, reason: StopReason) async {
        guard let upstream = self.upstreams.removeValue(forKey: subscription) else { return }
        do {
            try await self.stage.handleCancel(subscription, reason: reason, context: &self.context)
        } catch {
            self.crash(error)
        }
        await self.afterCallback()
        if upstream.cancel.endsConsumer(for: reason) {
            self.requestStop(reason)
        }
    }

    // MARK: Callbacks, commands, stopping

    @inlinable
    mutating func afterCallback() async {
        if !self.context.emitted.isEmpty {
            var events: [S.Output] = []
            swap(&events, &self.context.emitted)
            if S.role == .producerConsumer {
                self.downstreamDemand = max(0, self.downstreamDemand - events.count)
            }
            self.dispatch(consume events)
        }
        guard !self.context.commands.isEmpty else { return }
        let commands = self.context.commands
        self.context.commands = []
        for command in commands {
            switch command {
            case .stop(let reason):
                self.requestStop(reason)
            case .ask(let count, let subscription):
                guard var upstream = self.upstreams[subscription] else {
                    self.context.logger.debug(
                        "ask on unknown subscription ignored",
                        metadata: [SluiceLogKey.subscription: "\(subscription)"]
                    )
                    continue
                }
                upstream.demand.asked(count)
                self.upstreams[subscription] = upstream
                upstream.source.ask(count, on: subscription)
            case .cancel(let subscription, let reason):
                if let upstream = self.upstreams.removeValue(forKey: subscription) {
                    upstream.source.cancel(subscription, reason: reason)
                }
            case .demandMode(let mode):
                await self.setDemandMode(mode)
            }
        }
    }

    @inlinable
    mutating func crash(_ error: any Error) {
        guard self.stopReason == nil else { return }
        // A callback that fails because the stage was killed is a shutdown, not a crash.
        self.stopReason = Task.isCancelled ? .shutdown : .failure(error)
    }

    @inlinable
    mutating func requestStop(_ reason: StopReason) {
        guard self.stopReason == nil else { return }
        if case .normal = reason, self.hasUndelivered {
            self.drainingReason = reason
        } else {
            self.stopReason = reason
        }
    }

    /// Whether events wait in the buffer or the dispatcher for subscribers that may still ask.
    @inlinable
    var hasUndelivered: Bool {
        self.dispatcher.subscriberCount > 0 && (!self.buffer.isEmpty || self.dispatcher.undelivered > 0)
    }

    @inlinable
    mutating func checkDrained() {
        guard let reason = self.drainingReason, self.stopReason == nil else { return }
        if !self.hasUndelivered {
            self.stopReason = reason
        }
    }

    @inlinable
    func currentStatistics() -> StageStatistics {
        var statistics = self.statistics
        statistics.buffered = self.buffer.count
        statistics.dispatcherDiscarded = self.dispatcher.discarded
        statistics.subscribers = self.dispatcher.subscriberCount
        statistics.upstreamSubscriptions = self.upstreams.count
        statistics.pendingUpstreamDemand = self.upstreams.values.reduce(0) { $0 + $1.demand.pending }
        statistics.accumulatedDemand = self.accumulated?.reduce(0, +) ?? 0
        return statistics
    }

    @inlinable
    mutating func terminate(unhandled inbox: [StageMail<S>]) async -> StopReason {
        let reason = self.stopReason ?? .shutdown
        var rest = inbox
        rest.append(contentsOf: self.cell.mailbox.close())
        let ended = SluiceError(.stageEnded, "\(self.cell.stageName) (\(self.cell.stageID)) has ended: \(reason)")
        var droppedEvents = 0
        for mail in rest {
            switch mail {
            case .subscribe(let subscription, let sink, _, let reply):
                reply?.fail(ended)
                sink.subscriptionEnded(subscription, reason: reason)
            case .subscribeUpstream(_, _, let reply):
                reply?.fail(ended)
            case .statistics(let reply):
                reply.fail(ended)
            case .events(_, let events):
                droppedEvents += events.count
            default:
                break
            }
        }
        self.dispatcher.forEachSubscriber { subscription, sink in
            sink.subscriptionEnded(subscription, reason: reason)
        }
        for (subscription, upstream) in self.upstreams {
            upstream.source.cancel(subscription, reason: reason)
        }
        self.upstreams = SubscriptionTable()
        await self.stage.terminate(reason: reason)
        let unsent = self.buffer.count + droppedEvents
        if unsent > 0 {
            self.context.logger.debug(
                "stage ended with events not delivered",
                metadata: [SluiceLogKey.count: "\(unsent)", SluiceLogKey.reason: "\(reason)"]
            )
        }
        if case .failure = reason {
            self.context.logger.debug("stage crashed", metadata: [SluiceLogKey.reason: "\(reason)"])
        }
        return reason
    }
}
