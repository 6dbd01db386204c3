//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The consumer side of one subscription's demand: how much is asked and not yet received, and
/// when to ask again.
///
/// A pure state machine: it never sends anything; it returns how much to ask.
///
/// In automatic mode the consumer first asks for `maxDemand`. Incoming events are handed to the
/// stage in slices of at most `maxDemand - minDemand`; after each slice, if the pending demand
/// fell to `minDemand` or below, the consumer asks back up to `maxDemand`. With 10/5 that asks
/// 10, then 5, 5, …; with 100/20 it asks 100, 80, 100, 80, …
@usableFromInline
struct ConsumerDemand: Hashable, Sendable {
    @usableFromInline
    let maxDemand: Int
    @usableFromInline
    let minDemand: Int
    @usableFromInline
    let manual: Bool
    /// Events asked for and not yet received.
    @usableFromInline
    var pending: Int = 0

    @inlinable
    init(maxDemand: Int, minDemand: Int, manual: Bool) {
        precondition(maxDemand > 0 && minDemand >= 0 && minDemand < maxDemand, "validated by SubscriptionOptions")
        self.maxDemand = maxDemand
        self.minDemand = minDemand
        self.manual = manual
    }

    /// The largest slice of events handed to the stage at once in automatic mode.
    @inlinable
    var sliceSize: Int { self.maxDemand - self.minDemand }

    /// The first ask of a new subscription: `maxDemand`, or nothing in manual mode.
    @inlinable
    mutating func initialAsk() -> Int {
        if self.manual { return 0 }
        self.pending = self.maxDemand
        return self.maxDemand
    }

    /// The stage asked for `count` more events itself (manual mode).
    @inlinable
    mutating func asked(_ count: Int) {
        self.pending += count
    }

    /// Accounts for a slice of `count` events that is about to be handed to the stage.
    ///
    /// - Returns: `ask`, the demand to send once the slice was handled (0 for none), and
    ///   `excess`, how many events arrived beyond what was asked (a producer bug; always 0 with
    ///   Sluice producers).
    @inlinable
    mutating func consume(_ count: Int) -> (ask: Int, excess: Int) {
        var remaining = self.pending - count
        var excess = 0
        if remaining < 0 {
            excess = -remaining
            remaining = 0
        }
        if !self.manual && remaining <= self.minDemand {
            self.pending = self.maxDemand
            return (self.maxDemand - remaining, excess)
        }
        self.pending = remaining
        return (0, excess)
    }
}
