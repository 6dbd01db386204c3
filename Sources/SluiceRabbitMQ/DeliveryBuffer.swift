//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule

/// Deliveries the broker pushed and the stage's demand for them: a pure state machine (no
/// locks, no I/O) that the session holds under its lock.
///
/// The broker pushes up to the prefetch whatever the demand; deliveries beyond the pending
/// demand wait here (so the buffer is bounded by the prefetch), and demand beyond what was
/// delivered waits for deliveries. The connection's thread adds deliveries with
/// ``arrived(_:)``; the stage takes them with ``request(_:)`` and ``takeDemanded()``.
package struct DeliveryBuffer<Element> {
    /// What the connection's thread does after ``arrived(_:)`` or ``finish()``.
    package enum ArrivalAction: Equatable, Sendable {
        /// Nothing: the stage cannot take anything now, or was told already.
        case none
        /// Tell the stage that it can take deliveries (or that nothing more comes).
        case notifyStage
    }

    private var demand = 0
    private var buffered: Deque<Element> = []
    /// Whether a note to the stage is on its way.
    private var notified = false
    private var finished = false

    /// An empty buffer with no demand.
    package init() {}

    /// Deliveries waiting for demand.
    package var count: Int { self.buffered.count }
    /// Demand not yet served.
    package var pendingDemand: Int { self.demand }
    /// Whether ``finish()`` was called and every delivery was taken: nothing more comes.
    package var isDrained: Bool { self.finished && self.buffered.isEmpty }

    /// Deliveries arrived from the broker.
    package mutating func arrived(_ elements: some Sequence<Element>) -> ArrivalAction {
        self.buffered.append(contentsOf: elements)
        return self.notifyIfUseful()
    }

    /// No more deliveries will arrive (the consumer was cancelled).
    package mutating func finish() -> ArrivalAction {
        self.finished = true
        guard !self.notified else { return .none }
        self.notified = true
        return .notifyStage
    }

    /// The stage asked for `demand` more: what it can emit now.
    package mutating func request(_ demand: Int) -> [Element] {
        precondition(demand >= 0, "demand must not be negative")
        self.demand += demand
        return self.take()
    }

    /// The stage got the note: what it can emit now.
    package mutating func takeDemanded() -> [Element] {
        self.notified = false
        return self.take()
    }

    /// Removes every waiting delivery (to give back), whatever the demand.
    package mutating func takeAll() -> [Element] {
        defer { self.buffered.removeAll() }
        return Array(self.buffered)
    }

    /// Removes the waiting deliveries `isStale` picks (a closed channel's), returning how many.
    package mutating func removeAll(where isStale: (Element) -> Bool) -> Int {
        let before = self.buffered.count
        self.buffered.removeAll(where: isStale)
        return before - self.buffered.count
    }

    private mutating func take() -> [Element] {
        let count = min(self.demand, self.buffered.count)
        guard count > 0 else { return [] }
        self.demand -= count
        defer { self.buffered.removeFirst(count) }
        return Array(self.buffered.prefix(count))
    }

    private mutating func notifyIfUseful() -> ArrivalAction {
        guard self.demand > 0, !self.buffered.isEmpty, !self.notified else { return .none }
        self.notified = true
        return .notifyStage
    }
}

extension DeliveryBuffer: Sendable where Element: Sendable {}
