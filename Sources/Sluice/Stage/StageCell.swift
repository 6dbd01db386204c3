//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// Everything a stage can receive. Each case is handled in order by the stage's own task.
@usableFromInline
enum StageMail<S: Stage>: Sendable {
    // This stage as a consumer.
    case events(SubscriptionID, [S.Input])
    case upstreamEnded(SubscriptionID, StopReason)
    case subscribeUpstream(any EventSource<S.Input>, SubscriptionOptions<S.Input>, Reply<SubscriptionID>?)
    case cancelUpstream(SubscriptionID, StopReason)
    // This stage as a producer.
    case subscribe(SubscriptionID, any EventSink<S.Output>, SubscriptionOptions<S.Output>, Reply<SubscriptionID>?)
    case ask(SubscriptionID, Int)
    case cancel(SubscriptionID, StopReason)
    case supply(Int)
    case demandMode(ProducerDemandMode)
    // Anyone.
    case message(S.Message)
    case statistics(Reply<StageStatistics>)
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

    @inlinable
    var reason: StopReason? { self.state.withLock { $0.reason } }

    @inlinable
    func finish(_ reason: StopReason) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<StopReason, Never>] in
            guard state.reason == nil else { return [] }
            state.reason = reason
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: reason) }
    }

    @inlinable
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

/// The shared, thread-safe face of a running stage: its mailbox and its end.
///
/// Producers and consumers hold each other through this class (as ``EventSource`` and
/// ``EventSink``); every call only posts mail.
@usableFromInline
final class StageCell<S: Stage>: EventSource, EventSink, Sendable {
    @usableFromInline
    typealias Output = S.Output
    @usableFromInline
    typealias Input = S.Input

    @usableFromInline
    let stageID: StageID
    @usableFromInline
    let stageName: String
    @usableFromInline
    let mailbox = Mailbox<StageMail<S>>()
    @usableFromInline
    let termination = Termination()

    @inlinable
    init(name: String) {
        self.stageID = StageID.next()
        self.stageName = name
    }

    @inlinable
    func subscribe(
        _ subscription: SubscriptionID,
        sink: any EventSink<S.Output>,
        options: SubscriptionOptions<S.Output>,
        reply: Reply<SubscriptionID>?
    ) -> Bool {
        self.mailbox.send(.subscribe(subscription, sink, options, reply))
    }

    @inlinable
    func ask(_ count: Int, on subscription: SubscriptionID) {
        self.mailbox.send(.ask(subscription, count))
    }

    @inlinable
    func cancel(_ subscription: SubscriptionID, reason: StopReason) {
        self.mailbox.send(.cancel(subscription, reason))
    }

    @inlinable
    func deliver(_ events: [S.Input], on subscription: SubscriptionID) {
        self.mailbox.send(.events(subscription, events))
    }

    @inlinable
    func subscriptionEnded(_ subscription: SubscriptionID, reason: StopReason) {
        self.mailbox.send(.upstreamEnded(subscription, reason))
    }
}
