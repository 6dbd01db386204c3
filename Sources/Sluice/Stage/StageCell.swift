//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Synchronization

/// Everything a stage can receive. Each case is handled in order by the stage's own task.
@usableFromInline
enum StageMail<S: Stage>: Sendable {
    // This stage as a consumer.
    case events(SubscriptionID, [S.Input])
    case upstreamEnded(SubscriptionID, CancelReason)
    case upstreamRejected(SubscriptionID, any Error)
    case subscribeUpstream(EventSource<S.Input>, SubscriptionOptions<S.Input>, Reply<SubscriptionID>?)
    // This stage as a producer.
    case subscribe(SubscriptionID, EventSink<S.Output>, SubscriptionOptions<S.Output>, Reply<SubscriptionID>?)
    case ask(SubscriptionID, Int)
    /// A subscriber cancelled (``CancelReason/cancelled(_:)``) or ended (``CancelReason/down(_:)``).
    case cancel(SubscriptionID, CancelReason)
    case supply(Int)
    case demandMode(ProducerDemandMode)
    case demandModeQuery(Reply<ProducerDemandMode>)
    // Anyone.
    /// Cancels a subscription of either direction (``StageHandle/cancel(_:reason:)``).
    case cancelSubscription(SubscriptionID, StopReason)
    case info(S.Info)
    /// An info delivered behind the events buffered when it arrived, answered once delivered.
    case infoBehindEvents(S.Info, Reply<Void>?)
    case statistics(Reply<StageStatistics>)
    case status(Reply<StageStatus>)
    case stop(StopReason)
}

/// Waiters for the end of something, answered once with its reason.
@usableFromInline
final class Termination: Sendable {
    @usableFromInline
    struct State: ~Copyable {
        @usableFromInline
        var reason: StopReason?
        @usableFromInline
        var waiters: [CheckedContinuation<StopReason, Never>] = []
    }

    @usableFromInline
    let state = Mutex(State())

    @inlinable
    init() {}

    @usableFromInline
    var reason: StopReason? { self.state.withLock { $0.reason } }

    @usableFromInline
    func finish(_ reason: StopReason) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<StopReason, Never>] in
            guard state.reason == nil else { return [] }
            state.reason = reason
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: reason) }
    }

    @usableFromInline
    func wait() async -> StopReason {
        await withCheckedContinuation { continuation in
            let done = self.state.withLock { state -> StopReason? in
                if let reason = state.reason { return reason }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }
}

/// The shared, thread-safe face of a running stage: its mailbox, its two endpoints and its end.
@usableFromInline
final class StageCell<S: Stage>: Sendable {
    @usableFromInline let stageID: StageID
    @usableFromInline let stageName: String
    @usableFromInline let mailbox: Mailbox<StageMail<S>>
    @usableFromInline let termination = Termination()
    /// This stage as the producer of its subscriptions.
    @usableFromInline let source: EventSource<S.Output>
    /// This stage as the consumer of its subscriptions.
    @usableFromInline let sink: EventSink<S.Input>
    /// The task running the stage, and whether it was killed before the task was known.
    @usableFromInline let task = Mutex<(running: Task<Void, Never>?, killed: Bool)>((nil, false))

    // Inlinable: the endpoints' closures are made here, where the stage type is known, so
    // every ask and delivery posts to a fully specialized mailbox.
    @inlinable
    init(name: String) {
        let stageID = StageID.next()
        let mailbox = Mailbox<StageMail<S>>()
        self.stageID = stageID
        self.stageName = name
        self.mailbox = mailbox
        self.source = EventSource(
            stageID: stageID,
            stageName: name,
            subscribe: { subscription, sink, options, reply in
                mailbox.send(.subscribe(subscription, sink, options, reply))
            },
            ask: { count, subscription in mailbox.send(.ask(subscription, count)) },
            cancel: { subscription, reason in mailbox.send(.cancel(subscription, reason)) }
        )
        self.sink = EventSink(
            stageID: stageID,
            deliver: { events, subscription in mailbox.send(.events(subscription, consume events)) },
            ended: { subscription, reason in mailbox.send(.upstreamEnded(subscription, reason)) },
            rejected: { subscription, error in mailbox.send(.upstreamRejected(subscription, error)) }
        )
    }

    /// Records the task running the stage (cancelling it at once if the stage was killed).
    @usableFromInline
    func attach(_ running: Task<Void, Never>) {
        let killed = self.task.withLock { task -> Bool in
            task.running = running
            return task.killed
        }
        if killed { running.cancel() }
    }

    /// Cancels the stage's task and asks it to stop with `reason`.
    @usableFromInline
    func kill(_ reason: StopReason) {
        let running = self.task.withLock { task -> Task<Void, Never>? in
            task.killed = true
            return task.running
        }
        running?.cancel()
        self.mailbox.send(.stop(reason))
    }
}
