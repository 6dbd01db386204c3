//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import DequeModule

/// Sends every event to every subscriber, never more than the slowest subscriber asked.
///
/// Each subscriber's demand is kept relative to the smallest one; only the smallest demand is
/// passed upstream, so a subscriber that never asks holds everyone back. A subscriber with a
/// selector receives only the events it selects, and the demand of the others is given back to it.
///
/// A subscriber that joins while demand is outstanding upstream starts with that much negative
/// demand (as in GenStage): it receives every event emitted from then on, but only as far as it
/// asked; the rest wait in its backlog until it asks, and upstream is not asked for more until
/// it caught up.
@usableFromInline
struct BroadcastDispatcher<Event: Sendable>: EventDispatcher {
    // Each dispatcher keeps its own entry type (with the protocol's `subscribe`/`cancel`
    // signatures): they begin alike, but this one's demand is relative and it has a backlog.
    @usableFromInline
    struct Entry {
        @usableFromInline
        let subscription: SubscriptionID
        @usableFromInline
        let sink: EventSink<Event>
        @usableFromInline
        let selector: (@Sendable (Event) -> Bool)?
        /// Demand beyond what every subscriber asked (the common part is in `waiting`), minus
        /// the backlog. Negative for a subscriber that joined while demand was outstanding.
        @usableFromInline
        var demand: Int
        /// Events emitted for this subscriber beyond what it asked (it joined late).
        @usableFromInline
        var backlog: Deque<Event> = []
        /// Events ever sent from the backlog (positions for ``HeldEventsMark``).
        @usableFromInline
        var backlogSent = 0

        @inlinable
        init(
            subscription: SubscriptionID,
            sink: EventSink<Event>,
            selector: (@Sendable (Event) -> Bool)?,
            demand: Int
        ) {
            self.subscription = subscription
            self.sink = sink
            self.selector = selector
            self.demand = demand
        }

        /// Removes and returns up to `count` events from the front of the backlog.
        @inlinable
        mutating func takeBacklog(_ count: Int) -> [Event] {
            let taken = min(count, self.backlog.count)
            guard taken > 0 else { return [] }
            defer {
                self.backlog.removeFirst(taken)
                self.backlogSent += taken
            }
            return Array(self.backlog.prefix(taken))
        }
    }

    // Same shape as DemandDispatcher's entries, init, name, counts and contains: each dispatcher
    // keeps its own bookkeeping inline so its hot path stays specialized.
    @usableFromInline
    var entries: [Entry] = []
    /// Demand passed upstream and not yet satisfied by emitted events.
    @usableFromInline
    var waiting = 0

    @inlinable
    init() {}

    @inlinable
    var name: String { "broadcast" }
    @inlinable
    var subscriberCount: Int { self.entries.count }
    @inlinable
    var discarded: Int { 0 }
    @inlinable
    var undelivered: Int { self.entries.reduce(0) { $0 + $1.backlog.count } }
    @usableFromInline
    var heldCount: Int { self.undelivered }

    @inlinable
    func contains(_ subscription: SubscriptionID) -> Bool {
        self.entries.contains { $0.subscription == subscription }
    }

    @usableFromInline
    func heldMark() -> HeldEventsMark {
        var mark = HeldEventsMark()
        for entry in self.entries where !entry.backlog.isEmpty {
            mark.positions.append((entry.subscription.rawValue, entry.backlogSent + entry.backlog.count))
        }
        return mark
    }

    @usableFromInline
    func hasSent(past mark: HeldEventsMark) -> Bool {
        // A subscriber that left took its backlog with it.
        mark.positions.allSatisfy { place, sent in
            self.entries.first { $0.subscription.rawValue == place }.map { $0.backlogSent >= sent } ?? true
        }
    }

    @usableFromInline
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Event>,
        options: SubscriptionOptions<Event>
    ) throws(SluiceError) {
        if self.entries.contains(where: { $0.sink.stageID == sink.stageID }) {
            throw SluiceError(
                .duplicateSubscription,
                "\(sink.stageID) is already subscribed to this broadcasting producer"
            )
        }
        // The events already asked upstream will reach this subscriber too: it must ask for
        // them before anything more is asked upstream.
        self.entries.append(
            Entry(subscription: subscription, sink: sink, selector: options.selector, demand: -self.waiting)
        )
    }

    @usableFromInline
    mutating func cancel(_ subscription: SubscriptionID) -> RemovedSubscriber<Event>? {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return nil }
        let entry = self.entries.remove(at: index)
        return RemovedSubscriber(sink: entry.sink, releasedDemand: self.normalize())
    }

    @inlinable
    mutating func buffered(_ count: Int) {
        // With subscribers, events are buffered only once `waiting` was used up; what it holds
        // now is fresh demand (refunds) the producer has yet to see.
        guard self.entries.isEmpty else { return }
        self.waiting -= min(self.waiting, count)
    }

    @inlinable
    mutating func ask(_ count: Int, from subscription: SubscriptionID) -> Int {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return 0 }
        self.entries[index].demand += count
        if !self.entries[index].backlog.isEmpty {
            let entry = self.entries[index]
            let events = self.entries[index].takeBacklog(self.pending(of: entry))
            if !events.isEmpty { entry.sink.deliver(events, on: entry.subscription) }
        }
        return self.normalize()
    }

    @inlinable
    mutating func dispatch(_ events: consuming [Event]) -> DispatchOutcome<Event> {
        var events = consume events
        let now = min(self.waiting, events.count)
        guard now > 0 else { return DispatchOutcome(leftover: events) }
        let deliverNow = events.removePrefixMoving(now)
        for index in self.entries.indices {
            let entry = self.entries[index]
            var selected = deliverNow
            if let selector = entry.selector {
                selected = deliverNow.filter(selector)
                self.entries[index].demand += now - selected.count
            }
            if entry.demand < 0 || !entry.backlog.isEmpty {
                // Joined while demand was outstanding: it may have asked less than this.
                let pending = self.pending(of: entry)
                self.entries[index].backlog.append(contentsOf: selected)
                selected = self.entries[index].takeBacklog(pending)
            }
            if !selected.isEmpty { entry.sink.deliver(selected, on: entry.subscription) }
        }
        self.waiting -= now
        let extra = self.normalize()
        return DispatchOutcome(leftover: events, extraDemand: extra)
    }

    @usableFromInline
    func forEachSubscriber(_ body: (SubscriptionID, EventSink<Event>) -> Void) {
        for entry in self.entries { body(entry.subscription, entry.sink) }
    }

    @usableFromInline
    func subscriberStatus() -> [StageStatus.Subscriber] {
        self.entries.map {
            StageStatus.Subscriber(id: $0.subscription, consumer: $0.sink.stageID, pendingDemand: self.pending(of: $0))
        }
    }

    /// What `entry`'s subscriber asked and has not received yet.
    @inlinable
    func pending(of entry: Entry) -> Int {
        entry.demand + entry.backlog.count + self.waiting
    }

    /// Moves the demand every subscriber shares into `waiting`; returns that new upstream demand.
    @inlinable
    mutating func normalize() -> Int {
        guard let least = self.entries.lazy.map(\.demand).min(), least > 0 else { return 0 }
        for index in self.entries.indices { self.entries[index].demand -= least }
        self.waiting += least
        return least
    }
}
