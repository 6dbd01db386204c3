//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule

/// Settlements by position: items are read in order and numbered 0, 1, 2, …; they may be
/// settled in any order, but they leave the broker only as a contiguous run from the oldest
/// (Kafka commits the highest contiguous offset; a Redis processing list is trimmed from its
/// head). A settled item behind a gap waits until the gap closes.
///
/// A pure state machine (no locks, no I/O). Its memory is one small entry per position
/// between ``start`` and the highest position settled, so it stays within the read window.
///
/// ```swift
/// var run = ContiguousSettlement<Character>()
/// run.settle(1, "a")                 // 0 is still open: nothing leaves
/// run.settle(0, "a")
/// let run01 = run.takeRun(max: 10)   // (start: 0, marks: ["a", "a"])
/// ```
package struct ContiguousSettlement<Mark: Sendable>: Sendable {
    /// The first position not yet taken by ``takeRun(max:)``.
    private(set) package var start: Int
    /// `marks[i]`: how position `start + i` was settled (`nil`: not yet).
    private var marks: Deque<Mark?> = []
    /// How many of `marks` are not `nil`.
    private(set) package var settledCount = 0

    /// Creates a tracker whose first position is `start`.
    package init(start: Int = 0) {
        precondition(start >= 0, "positions are not negative")
        self.start = start
    }

    /// Positions settled and waiting for a gap before them to close (or for ``takeRun(max:)``).
    package var waiting: Int { self.settledCount }

    /// The number of contiguous settled positions from ``start`` (what ``takeRun(max:)`` can take).
    package var runLength: Int {
        var length = 0
        for mark in self.marks {
            guard mark != nil else { break }
            length += 1
        }
        return length
    }

    /// How position `position` was settled, `nil` if it is still open or was taken already.
    package func mark(at position: Int) -> Mark? {
        let index = position - self.start
        guard index >= 0 && index < self.marks.count else { return nil }
        return self.marks[index]
    }

    /// Records that `position` was settled as `mark`. Returns `false` (and changes nothing)
    /// when it was settled before, or taken already: a settlement is counted once.
    @discardableResult
    package mutating func settle(_ position: Int, _ mark: Mark) -> Bool {
        let index = position - self.start
        guard index >= 0 else { return false }
        if index >= self.marks.count {
            self.marks.append(contentsOf: repeatElement(nil, count: index - self.marks.count + 1))
        }
        guard self.marks[index] == nil else { return false }
        self.marks[index] = mark
        self.settledCount += 1
        return true
    }

    /// Takes at most `max` contiguous settled positions from ``start``, which moves past them;
    /// `nil` when ``start`` is still open.
    package mutating func takeRun(max: Int) -> (start: Int, marks: [Mark])? {
        precondition(max >= 1, "a run holds at least one position")
        var taken: [Mark] = []
        while taken.count < max, let first = self.marks.first, let mark = first {
            taken.append(mark)
            self.marks.removeFirst()
        }
        guard !taken.isEmpty else { return nil }
        let runStart = self.start
        self.start += taken.count
        self.settledCount -= taken.count
        return (runStart, taken)
    }

    /// Forgets every position and starts again at `start`; returns the marks of the positions
    /// that were settled and not taken (they will never be taken now).
    package mutating func reset(to start: Int) -> [Mark] {
        precondition(start >= 0, "positions are not negative")
        let settled = self.marks.compactMap { $0 }
        self.marks = []
        self.settledCount = 0
        self.start = start
        return settled
    }
}
