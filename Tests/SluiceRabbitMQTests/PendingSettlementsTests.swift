//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceRabbitMQ
import Testing

@Suite struct PendingSettlementsTests {
    let now = ContinuousClock.now

    /// Acknowledgements of `tags` on `generation`.
    func acknowledgements(_ tags: ClosedRange<UInt64>, generation: UInt64 = 1) -> [UInt64: RabbitMQConsumerDriver.SettleBatch] {
        var batch = RabbitMQConsumerDriver.SettleBatch()
        for tag in tags { batch.add(tag, bytes: 10) }
        return [generation: batch]
    }

    /// Below the threshold nothing wakes the loop; reaching it wakes it once until it takes
    /// them; it takes them merged, with when the oldest was made.
    @Test func acknowledgementsWakeTheLoopOnceAtTheThreshold() throws {
        var pending = PendingSettlements(threshold: 100, immediate: false)
        #expect(pending.add(self.acknowledgements(1...60), now: self.now) == .none)
        #expect(pending.add(self.acknowledgements(61...99), now: self.now + .milliseconds(5)) == .none)
        #expect(pending.add(self.acknowledgements(100...100), now: self.now + .milliseconds(6)) == .wakeLoop)
        #expect(pending.add(self.acknowledgements(101...150), now: self.now + .milliseconds(7)) == .none)
        #expect(pending.count == 150)
        let (batches, since) = pending.take()
        #expect(since == self.now)
        #expect(batches.count == 1)
        let batch = try #require(batches.first)
        #expect(batch.generation == 1 && batch.batch.acknowledged == Array(1...150) && batch.batch.bytes == 1500)
        #expect(pending.isEmpty && pending.since == nil)
        // After a take, the threshold counts afresh.
        #expect(pending.add(self.acknowledgements(151...249), now: self.now) == .none)
        #expect(pending.add(self.acknowledgements(250...250), now: self.now) == .wakeLoop)
    }

    /// Acknowledgements the thread took and still holds count towards the threshold, so that
    /// the `multiple` ack they and the new ones make is not held back.
    @Test func whatTheThreadHoldsCountsTowardsTheThreshold() {
        var pending = PendingSettlements(threshold: 100, immediate: false)
        #expect(pending.add(self.acknowledgements(1...70), now: self.now) == .none)
        _ = pending.take()
        pending.held(70)
        #expect(pending.add(self.acknowledgements(71...99), now: self.now) == .none)
        #expect(pending.add(self.acknowledgements(100...100), now: self.now) == .wakeLoop)
        _ = pending.take()
        pending.held(0)
        #expect(pending.add(self.acknowledgements(101...130), now: self.now) == .none)
    }

    /// A rejection goes out at once, so it wakes the loop whatever the count; with an ack
    /// delay of 0 every settlement does. Generations come out oldest first.
    @Test func rejectionsAndImmediateSettlementsWakeTheLoop() {
        var pending = PendingSettlements(threshold: 100, immediate: false)
        var rejection = RabbitMQConsumerDriver.SettleBatch()
        rejection.add(7, bytes: 1, requeue: true)
        #expect(pending.add(self.acknowledgements(1...3, generation: 2), now: self.now) == .none)
        #expect(pending.add([1: rejection], now: self.now) == .wakeLoop)
        #expect(pending.take().batches.map(\.generation) == [1, 2])
        var immediate = PendingSettlements(threshold: 100, immediate: true)
        #expect(immediate.add(self.acknowledgements(1...1), now: self.now) == .wakeLoop)
        _ = immediate.take()
        #expect(immediate.add(self.acknowledgements(2...2), now: self.now) == .wakeLoop)
    }

    /// Closing hands over what waits; what comes later is refused (to be counted unsent).
    @Test func closingTakesWhatWaitsAndRefusesTheRest() {
        var pending = PendingSettlements(threshold: 100, immediate: false)
        #expect(pending.add(self.acknowledgements(1...5), now: self.now) == .none)
        #expect(pending.close().map(\.batch.count) == [5])
        #expect(pending.add(self.acknowledgements(6...6), now: self.now) == .closed)
        #expect(pending.isEmpty)
    }
}
