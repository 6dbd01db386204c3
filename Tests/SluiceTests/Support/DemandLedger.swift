//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

@testable import Sluice

/// Watches subscriptions from the outside: every ask a consumer sends and every batch a
/// producer delivers, per subscription.
///
/// ``watch(_:)`` wraps a producer's endpoint; consumers subscribe to the wrapper instead of the
/// producer. An ask is recorded before it is posted to the producer and a batch before it is
/// posted to the consumer, so "received more than asked" is detected exactly, at the delivery
/// that breaks the rule, whatever the timing.
final class DemandLedger: Sendable {
    struct Account: Sendable {
        /// Every ask, in order, including asks of 0 (which the engine should never send).
        var asks: [Int] = []
        /// The size of every delivered batch, in order.
        var batches: [Int] = []
        var events: [Int] = []
        var asked: Int { self.asks.reduce(0, +) }
        var received: Int { self.batches.reduce(0, +) }
    }

    private let accounts = Mutex<[SubscriptionID: Account]>([:])
    private let problems = Mutex<[String]>([])
    /// Also keep the delivered events (only for `Int` events).
    let keepEvents: Bool
    /// Called with a subscription's account each time its consumer sends an ask, before the
    /// ask reaches the producer.
    let onAsk: (@Sendable (SubscriptionID, Account) -> Void)?

    init(keepEvents: Bool = false, onAsk: (@Sendable (SubscriptionID, Account) -> Void)? = nil) {
        self.keepEvents = keepEvents
        self.onAsk = onAsk
    }

    /// Every delivery that exceeded what its subscription had asked.
    var violations: [String] { self.problems.withLock { $0 } }

    func account(_ subscription: SubscriptionID) -> Account {
        self.accounts.withLock { $0[subscription] ?? Account() }
    }

    var allAccounts: [SubscriptionID: Account] { self.accounts.withLock { $0 } }

    func watch<P: Stage>(_ producer: StageHandle<P>) -> ProducerRef<P.Output> {
        self.watch(producer.producer)
    }

    func watch<Event: Sendable>(_ producer: ProducerRef<Event>) -> ProducerRef<Event> {
        let source = producer.source
        let wrapped = EventSource<Event>(
            stageID: source.stageID,
            stageName: source.stageName,
            subscribe: { subscription, sink, options, reply in
                let watchedSink = EventSink<Event>(
                    stageID: sink.stageID,
                    deliver: { events, subscription in
                        self.delivered(events, on: subscription)
                        sink.deliver(events, on: subscription)
                    },
                    ended: { subscription, reason in sink.subscriptionEnded(subscription, reason: reason) },
                    rejected: { subscription, error in sink.subscriptionRejected(subscription, error: error) }
                )
                return source.subscribe(subscription, sink: watchedSink, options: options, reply: reply)
            },
            ask: { count, subscription in
                let account = self.accounts.withLock { accounts -> Account in
                    accounts[subscription, default: Account()].asks.append(count)
                    return accounts[subscription]!
                }
                self.onAsk?(subscription, account)
                source.ask(count, on: subscription)
            },
            cancel: { subscription, reason in source.cancel(subscription, reason: reason) }
        )
        return ProducerRef(source: wrapped)
    }

    private func delivered<Event>(_ events: [Event], on subscription: SubscriptionID) {
        let problem = self.accounts.withLock { accounts -> String? in
            var account = accounts[subscription, default: Account()]
            account.batches.append(events.count)
            if self.keepEvents, let ints = events as? [Int] { account.events.append(contentsOf: ints) }
            accounts[subscription] = account
            if account.received > account.asked {
                return "\(subscription) received \(account.received) events but asked only \(account.asked) "
                    + "(asks \(account.asks), batches \(account.batches))"
            }
            return nil
        }
        if let problem { self.problems.withLock { $0.append(problem) } }
    }
}

/// Records what a dispatcher delivers, for state-machine tests without tasks.
final class SinkLog<Event: Sendable>: Sendable {
    private let deliveries = Mutex<[(SubscriptionID, [Event])]>([])
    private let endings = Mutex<[(SubscriptionID, String)]>([])

    init() {}

    /// A new sink (with its own stage identity) that records into this log.
    func makeSink() -> EventSink<Event> {
        EventSink(
            stageID: StageID.next(),
            deliver: { events, subscription in self.deliveries.withLock { $0.append((subscription, events)) } },
            ended: { subscription, reason in self.endings.withLock { $0.append((subscription, "\(reason)")) } },
            rejected: { subscription, error in self.endings.withLock { $0.append((subscription, "rejected(\(error))")) } }
        )
    }

    /// Every delivery, in order.
    var batches: [(subscription: SubscriptionID, events: [Event])] {
        self.deliveries.withLock { $0.map { (subscription: $0.0, events: $0.1) } }
    }

    /// The batches delivered on `subscription`, in order.
    func batches(for subscription: SubscriptionID) -> [[Event]] {
        self.deliveries.withLock { $0.filter { $0.0 == subscription }.map(\.1) }
    }

    /// Every event delivered on `subscription`, in order.
    func events(for subscription: SubscriptionID) -> [Event] {
        self.batches(for: subscription).flatMap { $0 }
    }

    func clear() {
        self.deliveries.withLock { $0 = [] }
    }
}
