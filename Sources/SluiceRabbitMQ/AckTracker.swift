//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The settlements of one channel generation turned into AMQP frames: a pure state machine
/// (no I/O; the connection's thread sends what it returns).
///
/// Tags of a channel are delivered 1, 2, 3, …. Everything at or below the *floor* is settled.
/// An acknowledgement that closes the gap above the floor goes out as one `basic.ack` with
/// `multiple=true` covering every acknowledged tag up to the new floor; acknowledgements above
/// a tag still unsettled wait (a `multiple` ack would also cover that tag) until the gap
/// closes, or until ``flushDeferred()`` sends them one by one (after
/// ``RabbitMQConfiguration/ackDelay``, or when half the prefetch waits). Rejections go out at
/// once, one per tag.
package struct AckTracker: Sendable {
    /// A frame to send.
    package enum Frame: Hashable, Sendable {
        /// `basic.ack`.
        case ack(UInt64, multiple: Bool)
        /// `basic.reject`.
        case reject(UInt64, requeue: Bool)
    }

    /// The channel generation whose tags this tracks.
    private(set) package var generation: UInt64
    private var floor: UInt64 = 0
    /// Acknowledged above a gap, not sent yet.
    private var deferred: Set<UInt64> = []
    /// Sent (a rejection, or an acknowledgement sent alone) above the floor.
    private var sentAbove: Set<UInt64> = []
    /// When the oldest deferred acknowledgement started waiting.
    private(set) package var deferredSince: ContinuousClock.Instant?

    /// A tracker for a new channel generation (its first tag is 1).
    package init(generation: UInt64) {
        self.generation = generation
    }

    /// Acknowledgements waiting for a gap below them to close.
    package var deferredCount: Int { self.deferred.count }

    /// Settles `acknowledged` and `rejected` tags; returns the frames to send now. Tags settled
    /// before are ignored (each is settled once).
    package mutating func settle(
        acknowledged: [UInt64],
        rejected: [(tag: UInt64, requeue: Bool)] = [],
        now: ContinuousClock.Instant
    ) -> [Frame] {
        var frames: [Frame] = []
        for (tag, requeue) in rejected where tag > self.floor && self.sentAbove.insert(tag).inserted {
            frames.append(.reject(tag, requeue: requeue))
        }
        // The common case: one run of tags right above the floor, nothing else waiting.
        if rejected.isEmpty, self.deferred.isEmpty, self.sentAbove.isEmpty, let run = Self.contiguousRun(acknowledged),
            run.lowerBound == self.floor + 1
        {
            self.floor = run.upperBound
            return [.ack(run.upperBound, multiple: true)]
        }
        for tag in acknowledged where tag > self.floor && !self.sentAbove.contains(tag) { self.deferred.insert(tag) }
        var highestAcknowledged: UInt64?
        while true {
            let next = self.floor + 1
            if self.deferred.remove(next) != nil {
                highestAcknowledged = next
            } else if self.sentAbove.remove(next) == nil {
                break
            }
            self.floor = next
        }
        if let highestAcknowledged { frames.append(.ack(highestAcknowledged, multiple: true)) }
        if self.deferred.isEmpty {
            self.deferredSince = nil
        } else if self.deferredSince == nil {
            self.deferredSince = now
        }
        return frames
    }

    /// Sends every deferred acknowledgement on its own (`multiple=false`).
    package mutating func flushDeferred() -> [Frame] {
        let tags = self.deferred.sorted()
        self.deferred = []
        self.deferredSince = nil
        for tag in tags { self.sentAbove.insert(tag) }
        return tags.map { .ack($0, multiple: false) }
    }

    /// `tags` as a range if they are ascending and contiguous.
    private static func contiguousRun(_ tags: [UInt64]) -> ClosedRange<UInt64>? {
        guard let first = tags.first else { return nil }
        var expected = first
        for tag in tags {
            guard tag == expected else { return nil }
            expected += 1
        }
        return first...(expected - 1)
    }
}
