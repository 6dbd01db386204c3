//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceConnector
import Testing

/// Settlements by position, driven directly: no tasks, threads or timing.
@Suite("Contiguous settlement")
struct ContiguousSettlementTests {
    @Test func aSettledItemBehindAGapWaitsForIt() {
        var run = ContiguousSettlement<Character>()
        let first = run.settle(1, "a")
        let second = run.settle(2, "r")
        #expect(first && second)
        let early = run.takeRun(max: 10)
        #expect(early == nil, "position 0 is still open")
        #expect(run.waiting == 2)
        let third = run.settle(0, "d")
        #expect(third)
        let taken = run.takeRun(max: 10)
        #expect(taken?.start == 0)
        #expect(taken?.marks == ["d", "a", "r"])
        #expect(run.start == 3)
        #expect(run.waiting == 0)
    }

    @Test func aRunIsTakenInChunksOfAtMostMax() {
        var run = ContiguousSettlement<Int>(start: 10)
        for position in (10..<17).reversed() { run.settle(position, position) }
        #expect(run.runLength == 7)
        let runs = (0..<4).map { _ in run.takeRun(max: 3) }
        #expect(runs[0]?.marks == [10, 11, 12])
        #expect(runs[1]?.start == 13)
        #expect(runs[1]?.marks == [13, 14, 15])
        #expect(runs[2]?.marks == [16])
        #expect(runs[3] == nil)
    }

    @Test func aSettlementIsCountedOnce() {
        var run = ContiguousSettlement<Int>()
        let once = run.settle(0, 1)
        let twice = run.settle(0, 2)
        #expect(once && !twice, "settled before")
        let taken = run.takeRun(max: 5)
        #expect(taken?.marks == [1])
        let late = run.settle(0, 3)
        #expect(!late, "taken already")
        #expect(run.mark(at: 0) == nil)
        let none = run.takeRun(max: 5)
        #expect(none == nil)
    }

    @Test func resetGivesTheWaitingMarksAndStartsAgain() {
        var run = ContiguousSettlement<Int>()
        run.settle(2, 20)
        run.settle(4, 40)
        #expect(run.mark(at: 4) == 40)
        #expect(run.mark(at: 3) == nil)
        let waiting = run.reset(to: 0)
        #expect(waiting.sorted() == [20, 40])
        #expect(run.waiting == 0)
        #expect(run.start == 0)
        let none = run.takeRun(max: 1)
        #expect(none == nil)
    }

    /// Random settlement orders: every position is taken exactly once, in order, and never
    /// before every earlier position was settled.
    @Test func randomOrdersTakeEveryPositionOnceInOrder() {
        var generator = SeededRandom(seed: 0x5EED)
        for _ in 0..<200 {
            let count = Int(generator.next() % 300) + 1
            var order = Array(0..<count)
            order.shuffle(using: &generator)
            var run = ContiguousSettlement<Int>()
            var taken: [Int] = []
            var settled = Set<Int>()
            for position in order {
                run.settle(position, position)
                settled.insert(position)
                while let next = run.takeRun(max: Int(generator.next() % 7) + 1) {
                    #expect(next.start == taken.count)
                    for mark in next.marks { #expect(settled.contains(mark)) }
                    taken.append(contentsOf: next.marks)
                }
                #expect(!settled.contains(taken.count), "the first open position is not settled")
            }
            #expect(taken == Array(0..<count))
        }
    }
}
