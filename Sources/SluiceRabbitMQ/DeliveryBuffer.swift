//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import SluiceConnector

/// Deliveries the broker pushed and the stage's demand for them: a pure state machine (no
/// locks, no I/O) that the session holds under its lock.
///
/// The demand, the window and what is unsettled in it are the connector foundation's
/// ``ReadCredit``, used as a pushing broker uses it: its window is the prefetch, every delivery
/// is ``ReadCredit/pushed(count:bytes:)`` (the broker sends whatever the demand, up to the
/// prefetch), and a settlement frees its place. Deliveries beyond the pending demand wait here
/// (so the buffer is bounded by the prefetch) until demand claims them
/// (``ReadCredit/claimAhead(demand:)``); demand beyond what was delivered waits for
/// deliveries. A channel generation is a credit epoch: when a channel closes, the broker takes
/// back everything it left unacknowledged, so ``channelClosed(next:)`` frees the window of it
/// (and settlements of that generation no longer count), drops the deliveries still waiting,
/// and gives the demand they had claimed back.
///
/// The connection's thread adds deliveries with ``arrived(_:bytes:)``; the stage takes them
/// with ``request(_:)`` and ``takeDemanded()``.
package struct DeliveryBuffer<Element> {
    /// What the connection's thread does after ``arrived(_:bytes:)`` or ``finish()``.
    package enum ArrivalAction: Equatable, Sendable {
        /// Nothing: the stage cannot take anything now, or was told already.
        case none
        /// Tell the stage that it can take deliveries (or that nothing more comes).
        case notifyStage
    }

    /// Pending demand, the prefetch window and what is unsettled in it, the generation.
    private var credit: ReadCredit
    private var buffered: Deque<Element> = []
    /// How many of `buffered`, from the front, demand claimed: the stage emits them next.
    private var claimed = 0
    /// Whether a note to the stage is on its way.
    private var notified = false

    /// An empty buffer with no demand, for a channel whose prefetch is `prefetch` (1 or
    /// more), whose first generation is `generation`.
    package init(prefetch: Int, generation: UInt64 = 1) {
        // RabbitMQ bounds a consumer by count only (it does not implement prefetch-size).
        self.credit = ReadCredit(window: ReadCredit.Window(count: prefetch, bytes: .max), epoch: generation)
    }

    /// Deliveries waiting for the stage.
    package var count: Int { self.buffered.count }
    /// Demand not yet served.
    package var pendingDemand: Int { self.credit.pendingDemand + self.claimed }
    /// Deliveries of the current generation not settled yet, waiting ones included.
    package var unsettled: Int { self.credit.unsettled }
    /// Whether ``finish()`` was called and every delivery was taken: nothing more comes.
    package var isDrained: Bool { self.credit.isEnding && self.buffered.isEmpty }

    /// Deliveries of `bytes` payload bytes arrived from the broker.
    package mutating func arrived(_ elements: some Collection<Element>, bytes: Int) -> ArrivalAction {
        guard !elements.isEmpty else { return .none }
        self.buffered.append(contentsOf: elements)
        self.claimed += self.credit.pushed(count: elements.count, bytes: bytes)
        guard self.claimed > 0, !self.notified else { return .none }
        self.notified = true
        return .notifyStage
    }

    /// No more deliveries will arrive (the consumer was cancelled, or the stage ended).
    package mutating func finish() -> ArrivalAction {
        _ = self.credit.drain()
        guard !self.notified else { return .none }
        self.notified = true
        return .notifyStage
    }

    /// The stage asked for `demand` more: what it can emit now.
    package mutating func request(_ demand: Int) -> [Element] {
        self.claimed += self.credit.claimAhead(demand: demand)
        return self.take()
    }

    /// The stage got the note: what it can emit now.
    package mutating func takeDemanded() -> [Element] {
        self.notified = false
        return self.take()
    }

    /// Removes every waiting delivery (to give back), whatever the demand.
    package mutating func takeAll() -> [Element] {
        // What waited ahead of demand leaves the credit with the deliveries.
        _ = self.credit.claimAhead(demand: self.credit.ahead)
        defer {
            self.buffered.removeAll()
            self.claimed = 0
        }
        return Array(self.buffered)
    }

    /// `count` deliveries of `bytes` payload bytes of `generation` were settled (acknowledged
    /// or rejected); settlements of a closed generation change nothing.
    package mutating func settled(count: Int, bytes: Int, generation: UInt64) {
        _ = self.credit.settled(count: count, bytes: bytes, epoch: generation)
    }

    /// The channel closed, and the broker requeued what it left unacknowledged: the waiting
    /// deliveries are dropped (their claimed demand is pending again), and the window counts
    /// generation `next` from now on. Returns how many deliveries were dropped (none when
    /// the window counts `next` already: the close was reported before).
    package mutating func channelClosed(next generation: UInt64) -> Int {
        guard generation > self.credit.epoch else { return 0 }
        let dropped = self.buffered.count
        let reclaimed = self.claimed
        self.buffered.removeAll()
        self.claimed = 0
        _ = self.credit.startEpoch(generation)
        _ = self.credit.request(reclaimed)
        return dropped
    }

    private mutating func take() -> [Element] {
        let count = min(self.claimed, self.buffered.count)
        guard count > 0 else { return [] }
        self.claimed -= count
        defer { self.buffered.removeFirst(count) }
        return Array(self.buffered.prefix(count))
    }
}

extension DeliveryBuffer: Sendable where Element: Sendable {}
