//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Sends each batch to the subscriber with the largest pending demand, up to that demand, then
/// to the next one.
///
/// The demand of a subscriber that cancels is remembered: the producer may still emit events
/// for it, so later asks are reduced by that amount and upstream is never asked twice.
@usableFromInline
struct DemandDispatcher<Event: Sendable>: EventDispatcher {
    @usableFromInline
    struct Entry {
        @usableFromInline
        let subscription: SubscriptionID
        @usableFromInline
        let sink: EventSink<Event>
        @usableFromInline
        var demand: Int

        @inlinable
        init(subscription: SubscriptionID, sink: EventSink<Event>, demand: Int) {
            self.subscription = subscription
            self.sink = sink
            self.demand = demand
        }
    }

    /// Subscribers, ordered by pending demand, largest first (ties keep arrival order).
    @usableFromInline
    var entries: [Entry] = []
    /// Pending demand of cancelled subscribers, not yet covered by emitted events.
    @usableFromInline
    var cancelledDemand = 0

    @inlinable
    init() {}

    @inlinable
    var name: String { "demand" }
    @inlinable
    var subscriberCount: Int { self.entries.count }
    @inlinable
    var discarded: Int { 0 }
    @inlinable
    var undelivered: Int { 0 }
    @usableFromInline
    var heldCount: Int { 0 }

    @inlinable
    func contains(_ subscription: SubscriptionID) -> Bool {
        self.entries.contains { $0.subscription == subscription }
    }

    /// Holds no events: the mark is empty.
    @usableFromInline
    func heldMark() -> HeldEventsMark { HeldEventsMark() }

    @usableFromInline
    func hasSent(past mark: HeldEventsMark) -> Bool { true }

    @usableFromInline
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Event>,
        options: SubscriptionOptions<Event>
    ) throws(SluiceError) {
        self.entries.append(Entry(subscription: subscription, sink: sink, demand: 0))
    }

    @usableFromInline
    mutating func cancel(_ subscription: SubscriptionID) -> RemovedSubscriber<Event>? {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return nil }
        let entry = self.entries.remove(at: index)
        self.cancelledDemand += entry.demand
        return RemovedSubscriber(sink: entry.sink, releasedDemand: 0)
    }

    @inlinable
    mutating func buffered(_ count: Int) {
        self.cancelledDemand -= min(self.cancelledDemand, count)
    }

    @inlinable
    mutating func ask(_ count: Int, from subscription: SubscriptionID) -> Int {
        guard let index = self.entries.firstIndex(where: { $0.subscription == subscription }) else { return 0 }
        var entry = self.entries.remove(at: index)
        entry.demand += count
        self.insert(entry)
        let alreadyEmitted = min(self.cancelledDemand, count)
        self.cancelledDemand -= alreadyEmitted
        return count - alreadyEmitted
    }

    @inlinable
    mutating func dispatch(_ events: consuming [Event]) -> DispatchOutcome<Event> {
        guard let first = self.entries.first, first.demand > 0 else { return DispatchOutcome(leftover: events) }
        if first.demand >= events.count {
            // The whole batch fits the subscriber with the most demand: hand it over as it is.
            var entry = self.entries.removeFirst()
            entry.demand -= events.count
            entry.sink.deliver(consume events, on: entry.subscription)
            self.insert(entry)
            return DispatchOutcome()
        }
        // Split by moving the events, never copying them one by one.
        var queue = EventQueue(consume events)
        while !queue.isEmpty, let first = self.entries.first, first.demand > 0 {
            let count = min(first.demand, queue.count)
            var entry = self.entries.removeFirst()
            entry.demand -= count
            entry.sink.deliver(queue.take(count), on: entry.subscription)
            self.insert(entry)
        }
        return DispatchOutcome(leftover: queue.takeAll())
    }

    @usableFromInline
    func forEachSubscriber(_ body: (SubscriptionID, EventSink<Event>) -> Void) {
        for entry in self.entries { body(entry.subscription, entry.sink) }
    }

    @usableFromInline
    func subscriberStatus() -> [StageStatus.Subscriber] {
        self.entries.map { StageStatus.Subscriber(id: $0.subscription, consumer: $0.sink.stageID, pendingDemand: $0.demand) }
    }

    /// Inserts keeping the order: after every entry with at least as much demand.
    @inlinable
    mutating func insert(_ entry: Entry) {
        var index = self.entries.count
        while index > 0 && self.entries[index - 1].demand < entry.demand { index -= 1 }
        self.entries.insert(entry, at: index)
    }
}
