//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

@Suite("EventBuffer state machine")
struct EventBufferTests {
    @Test("keep .last discards the oldest events and counts them")
    func keepLast() {
        var buffer = EventBuffer<Int>(limit: .events(5), keep: .last)
        #expect(buffer.store([0, 1, 2]) == 0)
        #expect(buffer.store([3, 4, 5, 6]) == 2)
        #expect(buffer.count == 5)
        #expect(buffer.take(10) == [2, 3, 4, 5, 6])
        #expect(buffer.isEmpty)
        // One batch larger than the whole buffer keeps its own newest events.
        #expect(buffer.store(Array(0..<8)) == 3)
        #expect(buffer.take(100) == [3, 4, 5, 6, 7])
    }

    @Test("keep .first discards the new events and counts them")
    func keepFirst() {
        var buffer = EventBuffer<Int>(limit: .events(5), keep: .first)
        #expect(buffer.store([0, 1, 2]) == 0)
        #expect(buffer.store([3, 4, 5, 6]) == 2)
        #expect(buffer.store([7]) == 1)
        #expect(buffer.take(10) == [0, 1, 2, 3, 4])
    }

    @Test("a buffer of size 0 keeps nothing")
    func sizeZero() {
        var last = EventBuffer<Int>(limit: .events(0), keep: .last)
        #expect(last.store([1, 2, 3]) == 3)
        #expect(last.isEmpty)
        var first = EventBuffer<Int>(limit: .events(0), keep: .first)
        #expect(first.store([1, 2, 3]) == 3)
        #expect(first.isEmpty)
    }

    @Test("an unbounded buffer keeps everything")
    func unbounded() {
        var buffer = EventBuffer<Int>(limit: .unbounded, keep: .last)
        #expect(buffer.store(Array(0..<50_000)) == 0)
        #expect(buffer.store([50_000]) == 0)
        #expect(buffer.count == 50_001)
    }

    @Test("take returns the oldest events first; putBack restores them in order at the front")
    func takeAndPutBack() {
        var buffer = EventBuffer<Int>(limit: .events(100), keep: .last)
        _ = buffer.store(Array(0..<10))
        let taken = buffer.take(4)
        #expect(taken == [0, 1, 2, 3])
        buffer.putBack(Array(taken.suffix(2)))
        #expect(buffer.take(3) == [2, 3, 4])
        #expect(buffer.take(0) == [])
        #expect(buffer.count == 5)
    }
}
