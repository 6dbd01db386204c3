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
/// Acknowledgements that move the floor are *held* and go out together as one `basic.ack`
/// with `multiple=true` once `coalescing` acknowledgements wait (held, or deferred above a
/// gap), so the broker handles a few frames per prefetch window rather than one per
/// processed batch. Acknowledgements above a tag still unsettled are *deferred* (a `multiple`
/// ack would also cover that tag) until the gap closes. ``flushDeferred()`` sends everything
/// waiting (after ``RabbitMQConfiguration/ackDelay``, when half the prefetch is deferred, and
/// before closing). Rejections go out at once, one per tag.
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
    /// How many waiting acknowledgements release the held `multiple` ack.
    private let coalescing: Int
    private var floor: UInt64 = 0
    /// The highest acknowledged tag at or below the floor whose `multiple` ack is not sent yet.
    private var heldTop: UInt64?
    /// Acknowledgements that ack to ``heldTop`` covers.
    private(set) package var heldCount = 0
    /// Acknowledged above a gap, not sent yet.
    private var deferred: Set<UInt64> = []
    /// Sent (a rejection, or an acknowledgement sent alone) above the floor.
    private var sentAbove: Set<UInt64> = []
    /// When the oldest acknowledgement not sent yet (held or deferred) started waiting.
    private(set) package var deferredSince: ContinuousClock.Instant?

    /// A tracker for a new channel generation (its first tag is 1) that sends a `multiple`
    /// ack once `coalescing` acknowledgements wait (1: as soon as the floor moves).
    package init(generation: UInt64, coalescing: Int = 1) {
        self.generation = generation
        self.coalescing = max(1, coalescing)
    }

    /// Acknowledgements waiting for a gap below them to close.
    package var deferredCount: Int { self.deferred.count }

    /// Acknowledgements not sent yet, held or deferred (lost if the channel closes now).
    package var unsentCount: Int { self.heldCount + self.deferred.count }

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
            self.heldTop = run.upperBound
            self.heldCount += run.count
        } else {
            // In order, so that runs merged from several processors move the floor without
            // passing through `deferred`.
            self.passSettledAboveFloor()
            for tag in acknowledged.sorted() where tag > self.floor && (self.sentAbove.isEmpty || !self.sentAbove.contains(tag)) {
                guard tag == self.floor + 1 else {
                    self.deferred.insert(tag)
                    continue
                }
                self.floor = tag
                self.heldTop = tag
                self.heldCount += 1
                self.passSettledAboveFloor()
            }
        }
        if self.unsentCount >= self.coalescing, let ack = self.releaseHeld() { frames.append(ack) }
        if self.unsentCount == 0 {
            self.deferredSince = nil
        } else if self.deferredSince == nil {
            self.deferredSince = now
        }
        return frames
    }

    /// Sends every waiting acknowledgement: the held ones as one `multiple` ack, the deferred
    /// ones on their own (`multiple=false`).
    package mutating func flushDeferred() -> [Frame] {
        var frames = self.releaseHeld().map { [$0] } ?? []
        let tags = self.deferred.sorted()
        self.deferred = []
        self.deferredSince = nil
        for tag in tags { self.sentAbove.insert(tag) }
        frames += tags.map { .ack($0, multiple: false) }
        return frames
    }

    /// Moves the floor over the tags right above it that are settled already (deferred
    /// acknowledgements join the held run; sent ones are passed).
    private mutating func passSettledAboveFloor() {
        while !(self.deferred.isEmpty && self.sentAbove.isEmpty) {
            let next = self.floor + 1
            if self.deferred.remove(next) != nil {
                self.heldTop = next
                self.heldCount += 1
            } else if self.sentAbove.remove(next) == nil {
                break
            }
            self.floor = next
        }
    }

    private mutating func releaseHeld() -> Frame? {
        guard let top = self.heldTop else { return nil }
        self.heldTop = nil
        self.heldCount = 0
        return .ack(top, multiple: true)
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
