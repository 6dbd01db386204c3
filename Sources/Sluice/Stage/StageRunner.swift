//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import DequeModule
public import Logging

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
        /// The partition subscribed to (two subscriptions to one producer must differ in it).
        @usableFromInline
        let partition: PartitionKey?
        /// This stage cancelled the subscription: it asks for nothing more, handles what is
        /// still in flight, and waits for the producer's confirmation.
        @usableFromInline
        var cancelling = false

        @inlinable
        init(source: EventSource<S.Input>, demand: ConsumerDemand, cancel: CancelMode, partition: PartitionKey?) {
            self.source = source
            self.demand = demand
            self.cancel = cancel
            self.partition = partition
        }
    }

    @usableFromInline
    enum QueuedInput {
        case events(SubscriptionID, [S.Input])
        case ended(SubscriptionID, CancelReason)
        case info(S.Info, Reply<Void>?)
    }

    /// An info waiting until the producer buffer has given out every event stored before it,
    /// and then the dispatcher every event it held at that point.
    @usableFromInline
    struct InfoBehindEvents {
        /// The buffer part is done once ``EventBuffer/removed`` reaches this.
        @usableFromInline
        let due: Int
        /// What the dispatcher held once the buffer part was done; `nil` until then.
        @usableFromInline
        var held: HeldEventsMark?
        @usableFromInline
        let info: S.Info
        @usableFromInline
        let reply: Reply<Void>?

        @inlinable
        init(due: Int, held: HeldEventsMark? = nil, info: S.Info, reply: Reply<Void>?) {
            self.due = due
            self.held = held
            self.info = info
            self.reply = reply
        }
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
    var pendingDownstreamDemand = 0
    @usableFromInline
    var stopReason: StopReason?
    /// A normal stop waiting for the buffer to reach subscribers.
    @usableFromInline
    var drainingReason: StopReason?
    @usableFromInline
    var statistics = StageStatistics()
    /// Infos waiting behind buffered events, in arrival order.
    @usableFromInline
    var infosBehindEvents: Deque<InfoBehindEvents> = []
    /// Answered once `didStart` returned: with its error if it threw.
    @usableFromInline
    var started: Reply<Void>?

    @inlinable
    init(
        stage: consuming S,
        cell: StageCell<S>,
        dispatcher: D,
        options: StageOptions<S.Output>,
        logger: Logger,
        started: Reply<Void>? = nil
    ) {
        self.stage = stage
        self.cell = cell
        self.dispatcher = dispatcher
        self.buffer = EventBuffer(limit: options.effectiveBufferSize(for: S.role), keep: options.bufferKeep ?? .last)
        self.accumulated = options.demandMode == .accumulate ? [] : nil
        self.context = StageContext(stageID: cell.stageID, stageName: cell.stageName, logger: logger)
        self.started = started
    }

    // MARK: Loop

    @inlinable
    mutating func run() async -> StopReason {
        // Mail in reverse arrival order, so that the next one is taken off the end by moving.
        var inbox: [StageMail<S>] = []
        do {
            try await self.stage.didStart(handle: StageHandle(cell: self.cell), context: &self.context)
            self.started?.succeed()
        } catch {
            self.started?.fail(error)
            self.crash(error)
        }
        self.started = nil
        await self.afterCallback()
        while self.stopReason == nil {
            await self.cell.mailbox.receive(into: &inbox)
            inbox.reverseMoving()
            while self.stopReason == nil, let mail = inbox.popLast() {
                await self.handle(consume mail)
                if !self.infosBehindEvents.isEmpty { await self.deliverDueInfos() }
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
            // The end waits behind the input still queued from any producer, so that nothing
            // received is dropped (GenStage queues every cancellation of a producer-consumer).
            if S.role == .producerConsumer && !self.queuedInput.isEmpty {
                self.queuedInput.append(.ended(subscription, reason))
                await self.handleQueuedInput()
            } else {
                await self.upstreamEnded(subscription, reason: reason)
            }

        case .upstreamRejected(let subscription, let error):
            self.upstreamRejected(subscription, error: error)

        case .subscribeUpstream(let source, let options, let reply):
            await self.subscribeUpstream(source, options: options, reply: reply)

        case .cancelSubscription(let subscription, let reason):
            await self.cancelSubscription(subscription, reason: reason)

        case .subscribe(let subscription, let sink, let options, let reply):
            await self.subscribe(subscription, sink: sink, options: options, reply: reply)

        case .ask(let subscription, let count):
            guard self.dispatcher.contains(subscription) else { return }
            let demand = self.dispatcher.ask(count, from: subscription)
            // The buffer is served with what the subscriber asked, even where the dispatcher
            // kept part of the ask back as owed to subscribers that left (those events may be
            // in the buffer already); the handler then sees only what is still missing.
            var served = 0
            if demand < count && !self.buffer.isEmpty && self.accumulated == nil {
                let before = self.buffer.count
                self.dispatch(self.buffer.take(count), fromBuffer: true)
                served = before - self.buffer.count
            }
            await self.supply(demand - min(served, demand))
            self.checkDrained()

        case .cancel(let subscription, let reason):
            // A subscriber that cancelled waits for confirmation; one that ended does not.
            await self.removeSubscriber(subscription, reason: reason, tell: reason.isCancellation)

        case .supply(let demand):
            await self.supply(demand)
            self.checkDrained()

        case .demandMode(let mode):
            await self.setDemandMode(mode)

        case .demandModeQuery(let reply):
            switch S.role {
            case .consumer:
                reply.fail(SluiceError(.notAProducer, "\(self.cell.stageName) (\(self.cell.stageID)) is a consumer: it has no demand mode"))
            case .producer, .producerConsumer:
                reply.succeed(self.demandMode)
            }

        case .info(let info):
            await self.callHandleInfo(info)

        case .infoBehindEvents(let info, let reply):
            // Same queue-behind-input step as .upstreamEnded above, kept inline: a shared helper would take
            // the direct branch as a closure in the runner's mail loop.
            if S.role == .producerConsumer && !self.queuedInput.isEmpty {
                self.queuedInput.append(.info(info, reply))
                await self.handleQueuedInput()
            } else {
                await self.infoBehindBuffer(info, reply: reply)
            }

        case .statistics(let reply):
            reply.succeed(self.currentStatistics())

        case .status(let reply):
            reply.succeed(self.currentStatus())

        case .stop(let reason):
            self.stopReason = reason
        }
    }

    /// Runs one of the stage's rarer callbacks: a throw crashes the stage, and what the
    /// callback emitted or commanded takes effect after it. (The per-batch callbacks,
    /// `handleEvents` and `handleDemand`, spell this out to keep a closure off the hot path.)
    @inlinable
    mutating func callback(_ body: (inout S, inout StageContext<S.Output>) async throws -> Void) async {
        do {
            try await body(&self.stage, &self.context)
        } catch {
            self.crash(error)
        }
        await self.afterCallback()
    }

    @inlinable
    mutating func callHandleInfo(_ info: S.Info) async {
        await self.callback { stage, context in try await stage.handleInfo(info, context: &context) }
    }

    // MARK: Infos behind events

    /// Delivers `info` now if neither the producer buffer nor the dispatcher holds events, or
    /// once every event they hold now has been given out.
    @usableFromInline
    mutating func infoBehindBuffer(_ info: S.Info, reply: Reply<Void>?) async {
        // With the buffer empty, what the dispatcher holds now is all the info waits for.
        let held = self.buffer.isEmpty ? self.dispatcher.heldMark() : nil
        if self.infosBehindEvents.isEmpty, let held, held.isEmpty {
            await self.callHandleInfo(info)
            reply?.succeed()
            return
        }
        self.infosBehindEvents.append(InfoBehindEvents(due: self.buffer.stored, held: held, info: info, reply: reply))
    }

    @usableFromInline
    mutating func deliverDueInfos() async {
        while self.stopReason == nil, var first = self.infosBehindEvents.first, self.buffer.removed >= first.due {
            // The buffer gave out what it held before the info; the events it gave to the
            // dispatcher, and those the dispatcher already held, must leave it too.
            let held = first.held ?? self.dispatcher.heldMark()
            guard self.dispatcher.hasSent(past: held) else {
                first.held = held
                self.infosBehindEvents[0] = first
                return
            }
            self.infosBehindEvents.removeFirst()
            await self.callHandleInfo(first.info)
            first.reply?.succeed()
        }
    }

    // MARK: Producer side

    /// Satisfies `demand` from the buffer first, then from the stage.
    @inlinable
    mutating func supply(_ demand: Int) async {
        guard demand > 0, self.stopReason == nil else { return }
        if self.accumulated != nil {
            // Accumulating holds demand and events alike: nothing leaves until `forward`.
            self.accumulated!.append(demand)
            return
        }
        var demand = demand
        if !self.buffer.isEmpty {
            let events = self.buffer.take(demand)
            demand -= events.count
            self.dispatch(events, fromBuffer: true)
        }
        guard demand > 0 else { return }
        switch S.role {
        case .producer:
            await self.callHandleDemand(demand)
        case .producerConsumer:
            self.pendingDownstreamDemand += demand
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
        if self.dispatcher.subscriberCount == 0 || self.accumulated != nil {
            self.storeInBuffer(events, front: fromBuffer)
            return
        }
        let discardedBefore = self.dispatcher.discarded
        let count = events.count
        let outcome = self.dispatcher.dispatch(consume events)
        self.statistics.eventsOut += count - outcome.leftover.count - (self.dispatcher.discarded - discardedBefore)
        if let failure = outcome.failure {
            self.crash(failure)
            return
        }
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

    @usableFromInline
    mutating func setDemandMode(_ mode: ProducerDemandMode) async {
        switch mode {
        case .accumulate:
            guard S.role == .producer else {
                self.context.logger.error(
                    "demand mode accumulate refused: only a producer can accumulate; \(self.cell.stageName) is a \(S.role) and keeps forwarding"
                )
                return
            }
            if self.accumulated == nil { self.accumulated = [] }
        case .forward:
            guard let held = self.accumulated else { return }
            self.accumulated = nil
            // The buffer (events emitted while accumulating) is served first, then each held
            // demand reaches the handler separately, in order.
            for demand in held where self.stopReason == nil {
                await self.supply(demand)
            }
            self.checkDrained()
        }
    }

    /// A consumer subscribed to this stage.
    @usableFromInline
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<S.Output>,
        options: SubscriptionOptions<S.Output>,
        reply: Reply<SubscriptionID>?
    ) async {
        do throws(SluiceError) {
            guard S.role != .consumer else {
                throw SluiceError(
                    .notAProducer,
                    "cannot subscribe to \(self.cell.stageName) (\(self.cell.stageID)): it is a consumer and emits nothing"
                )
            }
            try self.dispatcher.subscribe(subscription, sink: sink, options: options)
        } catch {
            reply?.fail(error)
            sink.subscriptionRejected(subscription, error: error)
            return
        }
        reply?.succeed(subscription)
        let subscriber = SubscriberInfo(id: subscription, consumer: sink.stageID, options: options)
        await self.callback { stage, context in try await stage.handleSubscribe(consumer: subscriber, context: &context) }
    }

    /// Removes a subscriber of this stage: tells it (unless it is the one that ended), lets the
    /// stage handle the cancellation and dispatches what it emitted, and only then releases the
    /// demand the dispatcher held for it.
    @usableFromInline
    mutating func removeSubscriber(_ subscription: SubscriptionID, reason: CancelReason, tell: Bool) async {
        guard let removed = self.dispatcher.cancel(subscription) else { return }
        if tell { removed.sink.subscriptionEnded(subscription, reason: reason) }
        await self.callback { stage, context in try await stage.handleCancel(subscription, reason: reason, context: &context) }
        await self.supply(removed.releasedDemand)
        self.checkDrained()
    }

    /// Cancels a subscription of either direction with `reason`.
    @usableFromInline
    mutating func cancelSubscription(_ subscription: SubscriptionID, reason: StopReason) async {
        if var upstream = self.upstreams[subscription] {
            guard !upstream.cancelling else { return }
            // Events the producer sent before it sees the cancellation still arrive and are
            // handled; its confirmation (an end with the same reason) comes after them.
            upstream.cancelling = true
            self.upstreams[subscription] = upstream
            upstream.source.cancel(subscription, reason: .cancelled(reason))
        } else if self.dispatcher.contains(subscription) {
            await self.removeSubscriber(subscription, reason: .cancelled(reason), tell: true)
        } else {
            self.context.logger.debug(
                "cancel of unknown subscription ignored",
                metadata: [SluiceLogKey.subscription: "\(subscription)"]
            )
        }
    }

    // MARK: Consumer side

    @usableFromInline
    mutating func subscribeUpstream(
        _ source: EventSource<S.Input>,
        options: SubscriptionOptions<S.Input>,
        reply: Reply<SubscriptionID>?
    ) async {
        if let existing = self.upstreams.first(where: {
            $0.1.source.stageID == source.stageID && $0.1.partition == options.partition && !$0.1.cancelling
        })?.0 {
            // Refused before the producer hears of it: both keep the subscription they have.
            reply?.fail(
                SluiceError(
                    .duplicateSubscription,
                    "\(self.cell.stageName) (\(self.cell.stageID)) is already subscribed to \(source.stageName) "
                        + "(\(source.stageID))\(options.partition.map { " partition \($0)" } ?? "") as \(existing)"
                )
            )
            return
        }
        let subscription = SubscriptionID.next()
        guard source.subscribe(subscription, sink: self.cell.sink, options: options, reply: reply) else {
            // Never established: no callback, but the cancel mode applies as to any lost producer.
            let error = SluiceError(.stageEnded, "cannot subscribe to \(source.stageName) (\(source.stageID)): it has ended")
            reply?.fail(error)
            self.stopOnCancel(options.cancel, subscription, source, reason: .failure(error), cancelled: false)
            return
        }
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
            source.cancel(subscription, reason: .down(.failure(error)))
            self.crash(error)
            return
        }
        var demand = ConsumerDemand(
            maxDemand: options.maxDemand,
            minDemand: options.effectiveMinDemand,
            manual: mode == .manual
        )
        let first = demand.initialAsk()
        self.upstreams[subscription] = Upstream(source: source, demand: demand, cancel: options.cancel, partition: options.partition)
        if first > 0 { source.ask(first, on: subscription) }
        await self.afterCallback()
    }

    /// The producer refused a subscription (its reply already told whoever asked): it was never
    /// established, so no callback runs and the stage keeps running. (A producer that ends
    /// with subscriptions still queued reports them as down, not as refused.)
    @usableFromInline
    mutating func upstreamRejected(_ subscription: SubscriptionID, error: any Error) {
        guard self.upstreams.removeValue(forKey: subscription) != nil else { return }
        self.context.logger.debug(
            "subscription refused",
            metadata: [SluiceLogKey.subscription: "\(subscription)", SluiceLogKey.reason: "\(error)"]
        )
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
        if ask > 0 && !current.cancelling { current.source.ask(ask, on: subscription) }
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

    /// Producer-consumer: handles queued input while downstream demand lasts (ends and infos
    /// queued behind events are handled as soon as they are reached).
    @inlinable
    mutating func handleQueuedInput() async {
        while self.stopReason == nil, !self.queuedInput.isEmpty {
            if case .events = self.queuedInput[0], self.pendingDownstreamDemand <= 0 { return }
            // Taken out of the queue and consumed before it is handled, so the batch has a
            // single reference (switching over the temporary kept a second one alive).
            let next = self.queuedInput.removeFirst()
            switch consume next {
            case .ended(let subscription, let reason):
                await self.upstreamEnded(subscription, reason: reason)
            case .events(let subscription, let events):
                await self.consume(consume events, from: subscription)
            case .info(let info, let reply):
                await self.infoBehindBuffer(info, reply: reply)
            }
        }
    }

    @usableFromInline
    mutating func upstreamEnded(_ subscription: SubscriptionID, reason: CancelReason) async {
        guard let upstream = self.upstreams.removeValue(forKey: subscription) else { return }
        await self.callback { stage, context in try await stage.handleCancel(subscription, reason: reason, context: &context) }
        self.stopOnCancel(upstream.cancel, subscription, upstream.source, reason: reason.reason, cancelled: reason.isCancellation)
    }

    /// Applies a lost subscription's cancel mode: stops the stage with `reason` if the mode says
    /// so; `cancelled` tells a cancellation (by either side) from the producer's end.
    @usableFromInline
    mutating func stopOnCancel(
        _ mode: CancelMode,
        _ subscription: SubscriptionID,
        _ source: EventSource<S.Input>,
        reason: StopReason,
        cancelled: Bool
    ) {
        guard mode.endsConsumer(for: reason), self.stopReason == nil, self.drainingReason == nil else { return }
        // Once per stop, at info (as GenStage), except for the routine end of a chain, a
        // producer that finished or shut down, logged at debug so that a pipeline's end does not
        // log a line per stage. A cancellation is never routine, whatever its reason.
        self.context.logger.log(
            level: !cancelled && reason.isNormalOrShutdown ? .debug : .info,
            "stopping after cancel of subscription \(subscription) to \(source.stageName) (\(source.stageID)), reason \(reason)",
            metadata: [SluiceLogKey.subscription: "\(subscription)", SluiceLogKey.reason: "\(reason)"]
        )
        self.requestStop(reason)
    }

    // MARK: Callbacks, commands, stopping

    @inlinable
    mutating func afterCallback() async {
        if !self.context.emitted.isEmpty {
            var events: [S.Output] = []
            swap(&events, &self.context.emitted)
            if S.role == .producerConsumer {
                self.pendingDownstreamDemand = max(0, self.pendingDownstreamDemand - events.count)
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
                guard var upstream = self.upstreams[subscription], !upstream.cancelling else {
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
                await self.cancelSubscription(subscription, reason: reason)
            case .demandMode(let mode):
                await self.setDemandMode(mode)
            }
        }
    }

    @usableFromInline
    mutating func crash(_ error: any Error) {
        guard self.stopReason == nil else { return }
        // A callback that fails because the stage was killed is the kill, not a crash.
        self.stopReason = Task.isCancelled ? .killed : .failure(error)
    }

    @usableFromInline
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

    @usableFromInline
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

    /// The producer demand mode in force: accumulating while demands are held.
    @usableFromInline
    var demandMode: ProducerDemandMode { self.accumulated == nil ? .forward : .accumulate }

    @usableFromInline
    func currentStatus() -> StageStatus {
        var queuedEvents = 0
        var queuedBatches = 0
        for input in self.queuedInput {
            if case .events(_, let events) = input {
                queuedBatches += 1
                queuedEvents += events.count
            }
        }
        return StageStatus(
            id: self.cell.stageID,
            name: self.cell.stageName,
            role: S.role,
            dispatcher: S.role == .consumer ? nil : self.dispatcher.name,
            demandMode: S.role == .consumer ? nil : self.demandMode,
            subscribers: self.dispatcher.subscriberStatus(),
            producers: self.upstreams.map { subscription, upstream in
                StageStatus.Producer(
                    id: subscription,
                    producer: upstream.source.stageID,
                    producerName: upstream.source.stageName,
                    pendingDemand: upstream.demand.pending,
                    maxDemand: upstream.demand.maxDemand,
                    minDemand: upstream.demand.minDemand,
                    isCancelling: upstream.cancelling
                )
            },
            queuedInputBatches: queuedBatches,
            queuedInputEvents: queuedEvents,
            dispatcherHeld: self.dispatcher.heldCount,
            infosBehindEvents: self.infosBehindEvents.count + self.queuedInput.count(where: {
                if case .info = $0 { return true } else { return false }
            }),
            statistics: self.currentStatistics()
        )
    }

    @usableFromInline
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
                sink.subscriptionEnded(subscription, reason: .down(reason))
            case .subscribeUpstream(_, _, let reply):
                reply?.fail(ended)
            case .statistics(let reply):
                reply.fail(ended)
            case .status(let reply):
                reply.fail(ended)
            case .infoBehindEvents(_, let reply):
                reply?.fail(ended)
            case .events(_, let events):
                droppedEvents += events.count
            default:
                break
            }
        }
        // Infos still waiting behind events are not delivered: their waiters learn the end.
        for waiting in self.infosBehindEvents { waiting.reply?.fail(ended) }
        self.infosBehindEvents = []
        for case .info(_, let reply?) in self.queuedInput { reply.fail(ended) }
        self.dispatcher.forEachSubscriber { subscription, sink in
            sink.subscriptionEnded(subscription, reason: .down(reason))
        }
        for (subscription, upstream) in self.upstreams {
            upstream.source.cancel(subscription, reason: .down(reason))
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
