//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// When the connection's thread hands the deliveries it read to the stage: a pure state
/// machine (no locks, no I/O) owned by that thread.
///
/// Every hand-off wakes the stage, which wakes a processor, whose settlement comes back: a few
/// thread switches, whether the hand-off carries one delivery or hundreds. A broker streaming
/// deliveries sends them in small socket reads (a few dozen messages each), so handing each
/// read over at once spends those switches, taken from the broker's share of the CPU, every few
/// dozen messages. So while deliveries stream in, they are gathered for at most `linger` (or
/// until `target` wait) and handed over together; the first read after a quiet spell of
/// `linger` goes at once, so a lone message waits for nothing.
struct DeliveryHandOff<Element> {
    /// How long deliveries are gathered at most while they stream in.
    let linger: Duration
    /// How many gathered deliveries are handed over without waiting for the rest of `linger`.
    let target: Int
    private var held: [Element] = []
    /// When the first held delivery was read.
    private var heldSince: ContinuousClock.Instant?
    /// When the last read that brought deliveries happened.
    private var lastRead: ContinuousClock.Instant?

    /// A hand-off that gathers for at most `linger`, or until `target` (1 or more) wait.
    init(linger: Duration, target: Int) {
        self.linger = linger
        self.target = max(1, target)
    }

    /// Deliveries waiting to be handed over.
    var count: Int { self.held.count }

    /// When the held deliveries must be handed over (`nil`: none are held).
    var deadline: ContinuousClock.Instant? { self.heldSince.map { $0 + self.linger } }

    /// A turn read `elements` (perhaps none) at `now`: what to hand over now, if anything.
    mutating func read(_ elements: [Element], now: ContinuousClock.Instant) -> [Element] {
        if !elements.isEmpty {
            let quiet = self.lastRead.map { now - $0 > self.linger } ?? true
            self.lastRead = now
            if self.held.isEmpty {
                guard !quiet, elements.count < self.target else { return elements }
                self.held = elements
                self.heldSince = now
                return []
            }
            self.held += elements
        }
        guard let deadline = self.deadline, self.held.count >= self.target || now >= deadline else { return [] }
        return self.takeAll()
    }

    /// Takes every held delivery (the connection closes, or the consumer is cancelled).
    mutating func takeAll() -> [Element] {
        defer {
            self.held = []
            self.heldSince = nil
        }
        return self.held
    }
}
