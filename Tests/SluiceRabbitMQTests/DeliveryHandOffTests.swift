//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceRabbitMQ
import Testing

@Suite struct DeliveryHandOffTests {
    let start = ContinuousClock.now

    func at(_ milliseconds: Double) -> ContinuousClock.Instant {
        self.start + .microseconds(Int(milliseconds * 1000))
    }

    /// The first read after a quiet spell goes at once; reads that follow within the linger
    /// are gathered until it ends (an empty turn then hands them over).
    @Test func streamingReadsAreGatheredForTheLinger() {
        var handOff = DeliveryHandOff<Int>(linger: .milliseconds(1), target: 100)
        #expect(handOff.read([1, 2], now: self.at(0)) == [1, 2])
        #expect(handOff.deadline == nil)
        #expect(handOff.read([3], now: self.at(0.3)).isEmpty)
        #expect(handOff.deadline == self.at(1.3))
        #expect(handOff.read([4, 5], now: self.at(0.8)).isEmpty)
        #expect(handOff.read([], now: self.at(1.2)).isEmpty)
        #expect(handOff.count == 3)
        #expect(handOff.read([], now: self.at(1.3)) == [3, 4, 5])
        #expect(handOff.deadline == nil)
        // Still streaming: the next read is gathered again.
        #expect(handOff.read([6], now: self.at(1.5)).isEmpty)
        // A read at the deadline goes with the others.
        #expect(handOff.read([7], now: self.at(2.5)) == [6, 7])
        // After a quiet spell longer than the linger, a read goes at once.
        #expect(handOff.read([8], now: self.at(4)) == [8])
    }

    /// Reaching the target hands over without waiting for the linger; a read of the target
    /// or more is never held.
    @Test func theTargetEndsTheWait() {
        var handOff = DeliveryHandOff<Int>(linger: .milliseconds(1), target: 3)
        #expect(handOff.read([1], now: self.at(0)) == [1])
        #expect(handOff.read([2, 3], now: self.at(0.1)).isEmpty)
        #expect(handOff.read([4], now: self.at(0.2)) == [2, 3, 4])
        #expect(handOff.read([5, 6, 7], now: self.at(0.3)) == [5, 6, 7])
        #expect(handOff.read([8], now: self.at(0.4)).isEmpty)
        #expect(handOff.takeAll() == [8])
        #expect(handOff.count == 0 && handOff.deadline == nil)
        // A target of 1 never holds anything.
        var single = DeliveryHandOff<Int>(linger: .milliseconds(1), target: 0)
        #expect(single.read([1], now: self.at(0)) == [1])
        #expect(single.read([2], now: self.at(0.1)) == [2])
    }
}
