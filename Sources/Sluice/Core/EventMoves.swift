//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import DequeModule

// Batches are split and regrouped on the way between stages (a dispatcher gives part of a batch
// to one subscriber and part to another, a consumer takes a batch in slices, a buffer hands out
// what was asked for). Copying part of an array copies every element, which for events holding
// references (a message's payload) costs an atomic retain now and an atomic release later, per
// event. The helpers here move elements instead: `removeLast()` takes an element out of a
// uniquely held array without touching its reference count, and a new array is filled in place.

extension Array {
    /// Removes the last `count` elements and returns them, in order, by moving them.
    ///
    /// Costs `count` element moves and no reference counting when the array is uniquely held.
    @inlinable
    mutating func removeSuffixMoving(_ count: Int) -> [Element] {
        precondition(count >= 0 && count <= self.count, "removeSuffixMoving: \(count) of \(self.count)")
        if count == self.count {
            var all: [Element] = []
            swap(&all, &self)
            return all
        }
        return self.moveSuffix(count)
    }

    /// Moves the last `count` elements into an array of their own, in order, always into new
    /// storage (``removeSuffixMoving(_:)`` hands over the whole array instead when it can).
    @inlinable
    mutating func moveSuffix(_ count: Int) -> [Element] {
        guard count > 0 else { return [] }
        return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            var index = count
            while index > 0 {
                index -= 1
                (buffer.baseAddress! + index).initialize(to: self.removeLast())
            }
            initialized = count
        }
    }

    /// Removes the first `count` elements (or all, if there are fewer) and returns them, in
    /// order, by moving; the array keeps the rest.
    ///
    /// Costs one move per element kept, so it suits one split of a batch. To cut a batch into
    /// many pieces, use an ``EventQueue``.
    @inlinable
    mutating func removePrefixMoving(_ count: Int) -> [Element] {
        if count >= self.count {
            var all: [Element] = []
            swap(&all, &self)
            return all
        }
        guard count > 0 else { return [] }
        var rest = self.removeSuffixMoving(self.count - count)
        swap(&rest, &self)
        return rest
    }

    /// Cuts the array into runs, front first: `first` elements, then runs of `size` (the last
    /// one may be shorter). Returns the runs last first, so that popping them off the end takes
    /// them in order, each uniquely held.
    ///
    /// The runs are filled from the back of the array, so every element outside the first run
    /// moves once and the first run is the array itself, shortened: no reversal, no copy.
    @inlinable
    consuming func cutMoving(first: Int, size: Int) -> [[Element]] {
        precondition(first > 0 && size > 0, "cutMoving: first \(first), size \(size)")
        var elements = consume self
        guard elements.count > first else { return [elements] }
        let tail = (elements.count - first) % size
        var runs: [[Element]] = []
        runs.reserveCapacity(2 + (elements.count - first) / size)
        var length = tail == 0 ? size : tail
        while elements.count > first {
            runs.append(elements.moveSuffix(length))
            length = size
        }
        // The first run keeps the array's storage unless that holds far more room than it uses
        // (a small batch cut from a large hand-off): then it moves to storage of its own, and
        // the large one is freed here rather than with the batch.
        if elements.capacity > 4 * elements.count {
            runs.append(elements.moveSuffix(elements.count))
        } else {
            runs.append(elements)
        }
        return runs
    }

    /// Reverses the elements in place by swapping their bits.
    ///
    /// `Array.reverse()` swaps through copies of the elements: a retain and a release per
    /// element, each touching the element's referenced object (a payload that may be cold in
    /// memory). Swapping inside the buffer moves the bits and touches nothing else.
    @inlinable
    mutating func reverseMoving() {
        self.withUnsafeMutableBufferPointer { $0.reverse() }
    }

    /// Appends the elements of `other` by moving them out of it.
    @inlinable
    mutating func appendMoving(_ other: consuming [Element]) {
        var other = consume other
        if self.isEmpty {
            swap(&self, &other)
            return
        }
        guard !other.isEmpty else { return }
        self.reserveCapacity(self.count + other.count)
        other.reverseMoving()
        while let element = other.popLast() {
            self.append(element)
        }
    }
}

/// A queue of events that hands them out front first, in batches of any size, by moving them.
///
/// Batches are kept whole (a batch taken whole is handed over as it is); each is stored reversed
/// so that its front can be taken off its end without copying.
@usableFromInline
package struct EventQueue<Element> {
    /// Whole batches, each reversed (its next element last).
    @usableFromInline
    var chunks: Deque<[Element]> = []
    /// Whether `chunks.first` was reversed already; later chunks are reversed when reached, so
    /// a batch that is taken whole is never reversed at all.
    @usableFromInline
    var firstReversed = false
    @usableFromInline
    package private(set) var count = 0

    @inlinable
    package init() {}

    /// A queue holding `events`.
    @inlinable
    package init(_ events: consuming [Element]) {
        self.append(events)
    }

    @inlinable
    package var isEmpty: Bool { self.count == 0 }

    /// Adds `events` at the back.
    @inlinable
    package mutating func append(_ events: consuming [Element]) {
        guard !events.isEmpty else { return }
        self.count += events.count
        self.chunks.append(events)
    }

    /// Puts `events` back at the front, in order.
    @inlinable
    package mutating func prepend(_ events: consuming [Element]) {
        guard !events.isEmpty else { return }
        self.count += events.count
        if self.firstReversed {
            // Only the first batch may be reversed: the new first one is stored reversed too,
            // and the one behind it stays as it is.
            var events = consume events
            events.reverseMoving()
            if let first = self.chunks.popFirst() {
                // Both reversed: merge them so that the flag describes the first batch only.
                var merged = first
                merged.appendMoving(events)
                self.chunks.prepend(merged)
            } else {
                self.chunks.prepend(events)
            }
        } else {
            self.chunks.prepend(events)
        }
    }

    /// Removes and returns the first `count` events (or all, if there are fewer).
    @inlinable
    package mutating func take(_ count: Int) -> [Element] {
        var wanted = Swift.min(count, self.count)
        guard wanted > 0 else { return [] }
        self.count -= wanted
        var result: [Element] = []
        while wanted > 0 {
            let available = self.chunks[0].count
            if available <= wanted {
                // The whole first batch: restore its order (if it was reversed) and move it.
                var chunk = self.chunks.removeFirst()
                if self.firstReversed { chunk.reverseMoving() }
                self.firstReversed = false
                wanted -= available
                result.appendMoving(chunk)
            } else {
                // Part of the first batch: worked on outside the deque (moved out and back, no
                // copy), so each element costs one array removal and no deque access.
                var chunk = self.chunks.removeFirst()
                if !self.firstReversed {
                    chunk.reverseMoving()
                    self.firstReversed = true
                }
                if result.isEmpty {
                    let taken = wanted
                    result = [Element](unsafeUninitializedCapacity: taken) { buffer, initialized in
                        for index in 0..<taken {
                            (buffer.baseAddress! + index).initialize(to: chunk.removeLast())
                        }
                        initialized = taken
                    }
                } else {
                    result.reserveCapacity(result.count + wanted)
                    for _ in 0..<wanted {
                        result.append(chunk.removeLast())
                    }
                }
                self.chunks.prepend(chunk)
                wanted = 0
            }
        }
        return result
    }

    /// Removes and returns every event.
    @inlinable
    package mutating func takeAll() -> [Element] {
        self.take(self.count)
    }

    /// Drops the first `count` events (or all), without gathering them into an array.
    @inlinable
    package mutating func dropFirst(_ count: Int) {
        var dropping = Swift.min(count, self.count)
        self.count -= dropping
        while dropping > 0 {
            let available = self.chunks[0].count
            if available <= dropping {
                self.chunks.removeFirst()
                self.firstReversed = false
                dropping -= available
            } else {
                if self.firstReversed {
                    self.chunks[0].removeLast(dropping)
                } else {
                    self.chunks[0].removeFirst(dropping)
                }
                dropping = 0
            }
        }
    }
}

extension EventQueue: Sendable where Element: Sendable {}
