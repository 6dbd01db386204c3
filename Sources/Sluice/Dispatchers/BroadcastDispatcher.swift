//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Sends every event to every subscriber, never more than the slowest subscriber asked.
///
/// Each subscriber's demand is kept relative to the smallest one; only the smallest demand is
/// passed upstream, so a subscriber that never asks holds everyone back. A subscriber with a
/// selector receives only the events it selects, and the demand of the others is given back to it.
/// A subscriber that joins while demand is outstanding upstream does not receive the events
/// emitted for that demand: it never asked for them.
@usableFromInline
struct BroadcastDispatcher<Event: Sendable>: EventDispatcher {
    @usableFromInline
    struct Entry {
        @usableFromInline
        let subscription: SubscriptionID
        @usableFromInline
        let sink: EventSink<Event>
        @usableFromInline
        let selector: (@Sendable (Event) -> Bool)?
        /// Demand beyond what every subscriber asked (the common part is in `waiting`).
        @usableFromInline
        var demand: Int
        /// How many of the next events are not for this subscriber: they were asked upstream
        /// before it subscribed.
        @usableFromInline
        var skip: Int

        @inlinable
        init(
            subscription: SubscriptionID,
            sink: EventSink<Event>,
            selector: (@Sendable (Event) -> Bool)?,
            demand: Int,
            skip: Int
        ) {
            self.subscription = subscription
            self.sink = sink
            self.selector = selector
            self.demand = demand
            self.skip = skip
        }
    }

    @usableFromInline
    var entries: [Entry] = []
    /// Demand passed upstream and not yet satisfied by emitted events.
    @usableFromInline
    var waiting = 0

    @inlinable
    init() {}

    @inlinable
    var subscriberCount: Int { self.entries.count }
    @inlinable
    var discarded: Int { 0 }
    @inlinable
    var undelivered: Int { 0 }

    @inlinable
    func contains(_ subscription: SubscriptionID) -> Bool {
        self.entries.contains { $0.subscription == subscription }
    }

    @inlinable
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
        self.entries.append(
            Entry(subscription: subscription, sink: sink, selector: options.selector, demand: 0, skip: self.waiting)
        )
    }

    @inlinable
    mutating func cancel(_ subscription: SubscriptionID) -> Int {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return 0 }
        self.entries.remove(at: index)
        return self.normalize()
    }

    @inlinable
    mutating func buffered(_ count: Int) {
        // Only happens with no subscriber, or with `waiting` already used up by a dispatch.
        self.waiting -= min(self.waiting, count)
    }

    @inlinable
    mutating func ask(_ count: Int, from subscription: SubscriptionID) -> Int {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return 0 }
        self.entries[index].demand += count
        return self.normalize()
    }

    @inlinable
    mutating func dispatch(_ events: [Event]) -> DispatchOutcome<Event> {
        let now = min(self.waiting, events.count)
        guard now > 0 else { return DispatchOutcome(leftover: events) }
        self.waiting -= now
        let deliverNow = events.slice(0..<now)
        for index in self.entries.indices {
            let entry = self.entries[index]
            var events = deliverNow
            if entry.skip > 0 {
                // Skipped events used none of this subscriber's demand: it keeps the same
                // distance to the others, so its relative demand does not change.
                let skipped = min(entry.skip, now)
                self.entries[index].skip -= skipped
                events = skipped == now ? [] : deliverNow.slice(skipped..<now)
            }
            if let selector = entry.selector {
                let selected = events.filter(selector)
                self.entries[index].demand += events.count - selected.count
                events = selected
            }
            if !events.isEmpty { entry.sink.deliver(events, on: entry.subscription) }
        }
        let extra = self.normalize()
        return DispatchOutcome(leftover: now == events.count ? [] : events.slice(now..<events.count), extraDemand: extra)
    }

    @inlinable
    func forEachSubscriber(_ body: (SubscriptionID, EventSink<Event>) -> Void) {
        for entry in self.entries { body(entry.subscription, entry.sink) }
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
