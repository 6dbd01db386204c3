//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import Synchronization

/// Watches subscriptions from the outside: every ask a consumer sends and every batch a
/// producer delivers, per subscription.
///
/// ``watch(_:)-(StageHandle<P>)`` wraps a producer's endpoint; consumers subscribe to the
/// wrapper instead of the producer. An ask is recorded before it is posted to the producer
/// and a batch before it is posted to the consumer, so "received more than asked" is detected
/// exactly, at the delivery that breaks the rule, whatever the timing.
///
/// ```swift
/// let ledger = DemandLedger()
/// try await consumer.subscribe(to: ledger.watch(producer), options: SubscriptionOptions(maxDemand: 10))
/// …
/// #expect(ledger.violations.isEmpty)
/// ```
public final class DemandLedger: Sendable {
    /// What one subscription asked for and received.
    public struct Account: Sendable {
        /// Every ask, in order, including asks of 0 (which the engine should never send).
        public private(set) var asks: [Int] = []
        /// The size of every delivered batch, in order.
        public private(set) var batches: [Int] = []
        /// The delivered events, when the ledger keeps them (only `Int` events).
        public private(set) var events: [Int] = []
        /// The sum of the asks (kept as they are recorded, not summed on each check).
        public private(set) var asked = 0
        /// The sum of the delivered batches.
        public private(set) var received = 0

        mutating func record(ask count: Int) {
            self.asks.append(count)
            self.asked += count
        }

        mutating func record(batch count: Int, events: [Int]?) {
            self.batches.append(count)
            self.received += count
            if let events { self.events.append(contentsOf: events) }
        }

        /// Creates an empty account.
        public init() {}
    }

    private let accounts = Mutex<[SubscriptionID: Account]>([:])
    private let problems = Mutex<[String]>([])
    /// Whether the delivered events are kept too (only for `Int` events).
    public let keepEvents: Bool
    /// Called with a subscription's account each time its consumer sends an ask, before the
    /// ask reaches the producer.
    public let onAsk: (@Sendable (SubscriptionID, Account) -> Void)?

    /// Creates an empty ledger.
    ///
    /// - Parameters:
    ///   - keepEvents: Also keep the delivered events (only for `Int` events).
    ///   - onAsk: Called on every ask, before it reaches the producer.
    public init(keepEvents: Bool = false, onAsk: (@Sendable (SubscriptionID, Account) -> Void)? = nil) {
        self.keepEvents = keepEvents
        self.onAsk = onAsk
    }

    /// Every delivery that exceeded what its subscription had asked.
    public var violations: [String] { self.problems.withLock { $0 } }

    /// The account of one subscription (empty if it never asked nor received).
    public func account(_ subscription: SubscriptionID) -> Account {
        self.accounts.withLock { $0[subscription] ?? Account() }
    }

    /// Every subscription's account.
    public var allAccounts: [SubscriptionID: Account] { self.accounts.withLock { $0 } }

    /// A producer that is `producer`, watched by this ledger.
    public func watch<P: Stage>(_ producer: StageHandle<P>) -> ProducerRef<P.Output> {
        self.watch(producer.producer)
    }

    /// A producer that is `producer`, watched by this ledger.
    public func watch<Event: Sendable>(_ producer: ProducerRef<Event>) -> ProducerRef<Event> {
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
                if let onAsk = self.onAsk {
                    let account = self.accounts.withLock { accounts -> Account in
                        accounts[subscription, default: Account()].record(ask: count)
                        return accounts[subscription]!
                    }
                    onAsk(subscription, account)
                } else {
                    self.accounts.withLock { $0[subscription, default: Account()].record(ask: count) }
                }
                source.ask(count, on: subscription)
            },
            cancel: { subscription, reason in source.cancel(subscription, reason: reason) }
        )
        return ProducerRef(source: wrapped)
    }

    private func delivered<Event>(_ events: [Event], on subscription: SubscriptionID) {
        let problem = self.accounts.withLock { accounts -> String? in
            // Changed in place: copying the account out would copy its arrays for every batch.
            accounts[subscription, default: Account()].record(batch: events.count, events: self.keepEvents ? events as? [Int] : nil)
            let account = accounts[subscription]!
            if account.received > account.asked {
                return "\(subscription) received \(account.received) events but asked only \(account.asked) "
                    + "(asks \(account.asks), batches \(account.batches))"
            }
            return nil
        }
        if let problem { self.problems.withLock { $0.append(problem) } }
    }
}
