//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization
import Testing

@testable import Sluice

/// An element that counts how many of its kind are alive, to catch an element moved twice
/// (freed twice) or never released.
private final class Tracked: Sendable {
    static let alive = Atomic<Int>(0)
    let value: Int
    init(_ value: Int) {
        self.value = value
        Self.alive.add(1, ordering: .relaxed)
    }
    deinit { Self.alive.subtract(1, ordering: .relaxed) }
}

@Suite("Moving events: EventQueue and array splits", .serialized)
struct EventQueueTests {
    @Test("a random mix of appends, put-backs, takes and drops matches a plain array, and frees every event exactly once")
    func matchesModel() {
        var generator = SplitMix64(seed: 0x5EED)
        do {
            var queue = EventQueue<Tracked>()
            var model: [Int] = []
            var next = 0
            for _ in 0..<2_000 {
                switch generator.next() % 4 {
                case 0, 1:
                    let count = Int(generator.next() % 40)
                    queue.append((0..<count).map { _ in defer { next += 1 }; return Tracked(next) })
                    model.append(contentsOf: next - count..<next)
                case 2:
                    let count = Int(generator.next() % 50)
                    let taken = queue.take(count)
                    let expected = Array(model.prefix(count))
                    model.removeFirst(expected.count)
                    #expect(taken.map(\.value) == expected)
                    // Put part of it back, as a dispatcher returns leftovers.
                    let back = Int(generator.next() % UInt64(taken.count + 1))
                    var taken2 = taken
                    let returned = taken2.removeSuffixMoving(back)
                    queue.prepend(returned)
                    model.insert(contentsOf: returned.map(\.value), at: 0)
                case 3 where generator.next() % 3 == 0:
                    // Drop some, as a full buffer discards its oldest events.
                    let count = Int(generator.next() % 30)
                    queue.dropFirst(count)
                    model.removeFirst(min(count, model.count))
                default:
                    let count = Int(generator.next() % 80)
                    let taken = queue.take(count)
                    let expected = Array(model.prefix(count))
                    model.removeFirst(expected.count)
                    #expect(taken.map(\.value) == expected)
                }
                #expect(queue.count == model.count)
            }
            #expect(queue.takeAll().map(\.value) == model)
            #expect(queue.isEmpty)
        }
        #expect(Tracked.alive.load(ordering: .relaxed) == 0)
    }

    @Test("removePrefixMoving and removeSuffixMoving split an array in order without losing or doubling events")
    func splits() {
        do {
            for total in 0..<12 {
                for cut in 0...total + 1 {
                    var events = (0..<total).map(Tracked.init)
                    let prefix = events.removePrefixMoving(cut)
                    #expect(prefix.map(\.value) == Array(0..<min(cut, total)))
                    #expect(events.map(\.value) == Array(min(cut, total)..<total))
                    var again = (0..<total).map(Tracked.init)
                    let suffix = again.removeSuffixMoving(min(cut, total))
                    #expect(suffix.map(\.value) == Array(total - min(cut, total)..<total))
                    #expect(again.map(\.value) == Array(0..<total - min(cut, total)))
                }
            }
            var a = (0..<3).map(Tracked.init)
            a.appendMoving((3..<7).map(Tracked.init))
            #expect(a.map(\.value) == Array(0..<7))
            var empty: [Tracked] = []
            empty.appendMoving(a)
            #expect(empty.map(\.value) == Array(0..<7))
        }
        #expect(Tracked.alive.load(ordering: .relaxed) == 0)
    }

    @Test("cutMoving cuts an array into a first run and runs of a size, in order, without losing or doubling events")
    func cuts() {
        do {
            for total in 0..<14 {
                for first in 1...5 {
                    for size in 1...4 {
                        var runs = (0..<total).map(Tracked.init).cutMoving(first: first, size: size)
                        var taken: [[Int]] = []
                        while let run = runs.popLast() { taken.append(run.map(\.value)) }
                        var expected: [[Int]] = [Array(0..<min(first, total))]
                        var start = first
                        while start < total {
                            expected.append(Array(start..<min(start + size, total)))
                            start += size
                        }
                        #expect(taken == expected, "total \(total), first \(first), size \(size)")
                    }
                }
            }
            // A run cut from a shared array leaves the other holder's elements alone.
            let shared = (0..<7).map(Tracked.init)
            var runs = shared.cutMoving(first: 3, size: 2)
            #expect(runs.popLast()!.map(\.value) == [0, 1, 2])
            #expect(shared.map(\.value) == Array(0..<7))
        }
        #expect(Tracked.alive.load(ordering: .relaxed) == 0)
    }

    @Test("a shared batch is copied, not moved out from under its other holder")
    func sharedBatchIsCopied() {
        let shared = (0..<10).map(Tracked.init)
        var mine = shared
        let prefix = mine.removePrefixMoving(4)
        #expect(prefix.map(\.value) == [0, 1, 2, 3])
        #expect(mine.map(\.value) == Array(4..<10))
        #expect(shared.map(\.value) == Array(0..<10))
    }
}
