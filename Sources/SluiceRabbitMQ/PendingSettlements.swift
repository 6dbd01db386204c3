//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Settlements the processors made, waiting for the connection's thread to take them: a pure
/// state machine (no locks, no I/O) that the session holds under its lock.
///
/// Handing each processed batch to the thread at once would wake it once per batch, although
/// acknowledgements only leave it as one `multiple` ack per `threshold` of them (see
/// ``AckTracker``): on a 2-core machine that shares its CPU with the broker, every such
/// wake-up is taken from the broker. So the thread takes what waits here at every turn it
/// makes anyway (deliveries arriving, and at least every ``RabbitMQConfiguration/ackDelay``
/// while anything is unsettled), and a settlement wakes it only when waiting would hold
/// something back: `threshold` acknowledgements, counting those the thread holds already
/// (a `multiple` ack is due), a rejection (it goes out at once), or `immediate` (an ack delay
/// of 0).
struct PendingSettlements {
    /// What the settling thread does after ``add(_:now:)``.
    enum AddAction: Equatable {
        /// Nothing: the connection's thread takes them at its next turn.
        case none
        /// Wake the connection's thread: something is due now.
        case wakeLoop
        /// The connection's thread is gone: nothing will send these (count them unsent).
        case closed
    }

    /// How many acknowledgements wake the thread.
    let threshold: Int
    /// Whether every settlement wakes the thread.
    let immediate: Bool
    private var batches: [UInt64: RabbitMQConsumerDriver.SettleBatch] = [:]
    /// Acknowledgements and rejections waiting.
    private(set) var count = 0
    /// Acknowledgements the thread took and holds, not sent yet (``held(_:)``).
    private(set) var heldByThread = 0
    /// When the oldest waiting settlement was made.
    private(set) var since: ContinuousClock.Instant?
    /// Whether the thread was woken for what waits (one wake until it takes them).
    private var woken = false
    private var isClosed = false

    /// Pending settlements that wake the thread at `threshold` acknowledgements (1 or more),
    /// or at every settlement if `immediate`.
    init(threshold: Int, immediate: Bool) {
        self.threshold = max(1, threshold)
        self.immediate = immediate
    }

    /// Whether nothing waits.
    var isEmpty: Bool { self.count == 0 }

    /// Adds settlements, by channel generation, made at `now`.
    mutating func add(_ batches: [UInt64: RabbitMQConsumerDriver.SettleBatch], now: ContinuousClock.Instant) -> AddAction {
        guard !self.isClosed else { return .closed }
        var rejected = false
        for (generation, batch) in batches where batch.count > 0 {
            self.batches[generation, default: .init()].merge(batch)
            self.count += batch.count
            rejected = rejected || !batch.rejected.isEmpty
        }
        if self.since == nil && self.count > 0 { self.since = now }
        guard !self.woken, self.immediate || rejected || self.count + self.heldByThread >= self.threshold else { return .none }
        self.woken = true
        return .wakeLoop
    }

    /// Takes everything waiting, oldest generation first, with when the oldest was made.
    mutating func take() -> (batches: [(generation: UInt64, batch: RabbitMQConsumerDriver.SettleBatch)], since: ContinuousClock.Instant?) {
        defer {
            self.batches = [:]
            self.count = 0
            self.since = nil
            self.woken = false
        }
        return (self.batches.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, self.since)
    }

    /// The thread holds `count` acknowledgements it took, not sent yet: they count towards the
    /// threshold.
    mutating func held(_ count: Int) {
        self.heldByThread = count
    }

    /// The thread ends: takes what waits; from now on ``add(_:now:)`` answers
    /// ``AddAction/closed``.
    mutating func close() -> [(generation: UInt64, batch: RabbitMQConsumerDriver.SettleBatch)] {
        self.isClosed = true
        return self.take().batches
    }
}
