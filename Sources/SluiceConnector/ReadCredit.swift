//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The read credit of one broker source: how much a reader may ask the broker for next.
///
/// A pure state machine (no locks, no I/O); the connector holds it under its lock and acts on
/// what it returns. Every source keeps its demand ledger with it, by one convention: a read
/// *reserves* what it asks for when it is sent (``nextRead(cap:)``), and gives back what its
/// reply did not use when it completes (``completed(asked:got:bytes:)``). Several reads may be
/// in flight at once.
///
/// Invariants (checked by the tests):
/// - From a destructive source (`prefetch == 0`): what reads in flight asked for plus what
///   was read never exceeds the demand received, so no item is taken that nobody asked for.
///   A non-destructive source may run ahead of demand by at most `prefetch` items.
/// - With a limit, reads in flight and completed never ask for more than it in all.
/// - What was read but is not yet settled with the broker, plus what reads in flight asked
///   for, never exceeds ``Window/count``. When the window rather than demand holds reads
///   back, a read waits until a whole read (or a quarter of the window) is free. No read starts while the unsettled bytes reach
///   ``Window/bytes`` (a read's size is known only once it arrived, so the bytes can exceed
///   the window by what the reads in flight bring).
///
/// A broker that pushes within a window of its own (an AMQP consumer's prefetch) sends items
/// no read asked for: the reader counts them with ``pushed(count:bytes:)``, and demand claims
/// the ones that came ahead of it with ``claimAhead(demand:)``. Items belong to an *epoch* (a
/// channel, a session): when the broker takes back what an epoch left unsettled (its channel
/// closed, so it redelivers them), ``startEpoch(_:)`` frees the window of them, and
/// ``settled(count:bytes:epoch:)`` ignores their late settlements.
package struct ReadCredit: Sendable {
    /// The bound on what was read and not yet settled with the broker.
    package struct Window: Sendable, Hashable {
        /// Items read and not yet settled, reads in flight included (1 or more).
        package var count: Int
        /// Payload bytes read and not yet settled (1 or more).
        package var bytes: Int

        /// Creates a window.
        package init(count: Int, bytes: Int) {
            precondition(count >= 1 && bytes >= 1, "a read window must allow at least one item and one byte")
            self.count = count
            self.bytes = bytes
        }
    }

    private enum Phase: Sendable, Equatable {
        case reading
        case draining
        case stopped
    }

    /// What the reader does after ``request(_:)`` or ``settled(count:bytes:)``.
    package enum WakeAction: Sendable, Equatable {
        /// Nothing: the reader is busy and will call ``nextRead(cap:)`` again by itself.
        case none
        /// The reader waits for credit: wake it.
        case wakeReader
    }

    /// What follows a read's completion or a drain.
    package enum ReadsAction: Sendable, Equatable {
        /// Reads may still complete (or more may start).
        case none
        /// Draining or stopped, and no read is in flight any more: nothing else will arrive.
        case finished
    }

    /// The window.
    package let window: Window
    /// How far a non-destructive source may read ahead of demand (0: destructive).
    package let prefetch: Int
    /// How many more items reads may bring in all (`nil`: no limit). Reads never ask for more
    /// than this; once they brought it, the credit drains by itself (``isExhausted``).
    private(set) package var remainingLimit: Int?

    private var phase = Phase.reading
    /// Demand received and not yet served by a completed read.
    private var pending = 0
    /// What the reads in flight asked for.
    private var reserved = 0
    /// How many reads are in flight.
    private(set) package var readsInFlight = 0
    private var unsettledCount = 0
    private var unsettledBytes = 0
    /// Whether the reader found no credit and waits to be woken.
    private var readerWaiting = false
    /// The cap of the last ``nextRead(cap:)``, for deciding whether to wake the reader.
    private var lastCap = 1
    /// Pushed items that no demand claimed yet (``pushed(count:bytes:)``).
    private(set) package var ahead = 0
    /// The epoch items are read and settled in (``startEpoch(_:)``).
    private(set) package var epoch: UInt64

    /// Creates the credit of a source.
    ///
    /// - Parameters:
    ///   - window: The bound on items (and bytes) read and not yet settled.
    ///   - prefetch: How many items a non-destructive source may read beyond demand; 0 for a
    ///     destructive source (a list pop), which must never take more than was demanded.
    ///   - limit: The most items all reads together may bring (`nil`: no limit), for a
    ///     consumer that takes a fixed count and then ends: it never asks for more.
    ///   - epoch: The first epoch (see ``startEpoch(_:)``).
    package init(window: Window, prefetch: Int = 0, limit: Int? = nil, epoch: UInt64 = 0) {
        precondition(prefetch >= 0, "prefetch must not be negative")
        precondition((limit ?? 0) >= 0, "a limit must not be negative")
        self.window = window
        self.prefetch = prefetch
        self.remainingLimit = limit
        self.epoch = epoch
        if limit == 0 { self.phase = .draining }
    }

    /// Whether reads brought the whole limit, so the credit drains by itself.
    package var isExhausted: Bool { self.remainingLimit == 0 }

    /// Demand received and not yet served by a completed read.
    package var pendingDemand: Int { self.pending }
    /// Items read and not yet settled.
    package var unsettled: Int { self.unsettledCount }
    /// Whether reads have been told to end (``drain()`` or ``stop()``).
    package var isEnding: Bool { self.phase != .reading }
    /// Whether ``stop()`` was called.
    package var isStopped: Bool { self.phase == .stopped }

    /// The stage asked for `demand` more items.
    package mutating func request(_ demand: Int) -> WakeAction {
        precondition(demand >= 0, "demand must not be negative")
        self.pending += demand
        return self.wakeIfCredit()
    }

    /// How many items the next read may ask for (at most `cap`), reserving them; `nil` when
    /// it may not read now (no demand, the window is full, or draining). After `nil` the
    /// reader waits: ``request(_:)`` or ``settled(count:bytes:)`` answers ``WakeAction/wakeReader``
    /// once there is credit again.
    package mutating func nextRead(cap: Int) -> Int? {
        precondition(cap >= 1, "a read must be allowed at least one item")
        self.lastCap = cap
        let available = self.available(cap: cap)
        guard available > 0 else {
            self.readerWaiting = self.phase == .reading
            return nil
        }
        let count = min(available, cap)
        self.reserved += count
        self.readsInFlight += 1
        self.readerWaiting = false
        return count
    }

    /// A read that asked for `asked` items (as ``nextRead(cap:)`` answered) brought `got`
    /// items of `bytes` payload bytes (0 and 0 if it failed). Its reservation is released:
    /// what it did not use is pending again.
    @discardableResult
    package mutating func completed(asked: Int, got: Int, bytes: Int) -> ReadsAction {
        precondition(self.readsInFlight > 0 && asked <= self.reserved, "\(#function): no read of \(asked) in flight")
        precondition(got >= 0 && got <= asked, "\(#function): a read of \(asked) brought \(got)")
        self.reserved -= asked
        self.readsInFlight -= 1
        self.pending = max(0, self.pending - got)
        self.unsettledCount += got
        self.unsettledBytes += bytes
        if let remaining = self.remainingLimit {
            self.remainingLimit = remaining - got
            if remaining == got && self.phase == .reading { self.phase = .draining }
        }
        return self.readsAction
    }

    /// `count` items of `bytes` payload bytes were settled with the broker (or given back).
    package mutating func settled(count: Int, bytes: Int) -> WakeAction {
        self.unsettledCount = max(0, self.unsettledCount - count)
        self.unsettledBytes = max(0, self.unsettledBytes - bytes)
        return self.wakeIfCredit()
    }

    /// `count` items of `bytes` payload bytes arrived without a read asking for them (a
    /// broker pushing within its own window). Pending demand takes what it can; the rest wait
    /// ``ahead`` of demand for ``claimAhead(demand:)``. All of them are unsettled until
    /// settled. Returns how many of them pending demand took.
    @discardableResult
    package mutating func pushed(count: Int, bytes: Int) -> Int {
        precondition(count >= 0 && bytes >= 0, "\(#function): \(count) items of \(bytes) bytes")
        let claimed = min(count, self.pending)
        self.pending -= claimed
        self.ahead += count - claimed
        self.unsettledCount += count
        self.unsettledBytes += bytes
        return claimed
    }

    /// The stage asked for `demand` more from a pushing broker: items pushed ahead of demand
    /// serve it first, the rest is pending (as after ``request(_:)``). Returns how many of the
    /// items waiting ahead it claimed.
    package mutating func claimAhead(demand: Int) -> Int {
        precondition(demand >= 0, "demand must not be negative")
        let claimed = min(demand, self.ahead)
        self.ahead -= claimed
        self.pending += demand - claimed
        return claimed
    }

    /// The broker took back every item of the epochs before `epoch` that is not settled yet
    /// (their channel closed and it redelivers them): they leave the window, items still
    /// waiting ``ahead`` of demand are gone, and later settlements of those epochs are
    /// ignored. Reads and pushes from now on count in `epoch`.
    package mutating func startEpoch(_ epoch: UInt64) -> WakeAction {
        precondition(epoch > self.epoch, "epoch \(epoch) does not follow \(self.epoch)")
        self.epoch = epoch
        self.ahead = 0
        self.unsettledCount = 0
        self.unsettledBytes = 0
        return self.wakeIfCredit()
    }

    /// ``settled(count:bytes:)`` of items read in `epoch`; settlements of an epoch before the
    /// current one change nothing (``startEpoch(_:)`` freed their window already).
    package mutating func settled(count: Int, bytes: Int, epoch: UInt64) -> WakeAction {
        guard epoch >= self.epoch else { return .none }
        return self.settled(count: count, bytes: bytes)
    }

    /// Stop starting reads; the reads in flight still complete.
    package mutating func drain() -> ReadsAction {
        if self.phase == .reading { self.phase = .draining }
        self.readerWaiting = false
        return self.readsAction
    }

    /// Stop for good (the stage ended).
    package mutating func stop() -> ReadsAction {
        self.phase = .stopped
        self.readerWaiting = false
        return self.readsAction
    }

    /// What the next read may ask for before its cap. When the window rather than demand
    /// limits it, a read waits until a useful share of the window is free (a whole read, or a
    /// quarter of the window if that is smaller): settlements free the window a few items at
    /// a time, and reading each trickle at once would shrink every read to a few items (as a
    /// TCP window does without silly-window avoidance).
    private func available(cap: Int) -> Int {
        guard self.phase == .reading, self.unsettledBytes < self.window.bytes else { return 0 }
        var byDemand = self.pending + self.prefetch - self.reserved
        if let remaining = self.remainingLimit { byDemand = min(byDemand, remaining - self.reserved) }
        let byWindow = self.window.count - self.unsettledCount - self.reserved
        if byWindow < byDemand && byWindow < min(cap, max(1, self.window.count / 4)) { return 0 }
        return max(0, min(byDemand, byWindow))
    }

    private var readsAction: ReadsAction {
        self.phase != .reading && self.readsInFlight == 0 ? .finished : .none
    }

    private mutating func wakeIfCredit() -> WakeAction {
        guard self.readerWaiting, self.available(cap: self.lastCap) > 0 else { return .none }
        self.readerWaiting = false
        return .wakeReader
    }
}
