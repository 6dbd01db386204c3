//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceConnector
import Testing

/// The read-credit state machine, driven directly: no tasks, threads or timing.
@Suite("Read credit")
struct ReadCreditTests {
    private let wide = ReadCredit.Window(count: 1_000_000, bytes: 1 << 40)

    @Test func noDemandNoRead() {
        var credit = ReadCredit(window: self.wide)
        #expect(credit.nextRead(cap: 100) == nil)
        #expect(credit.request(0) == .none)
    }

    @Test func readsAreCappedByDemandAndCap() {
        var credit = ReadCredit(window: self.wide)
        _ = credit.request(250)
        #expect(credit.nextRead(cap: 100) == 100)
        #expect(credit.nextRead(cap: 100) == 100)
        #expect(credit.nextRead(cap: 100) == 50)
        #expect(credit.nextRead(cap: 100) == nil, "three reads in flight already asked for the whole demand")
        #expect(credit.readsInFlight == 3)
    }

    @Test func aShortReplyGivesItsReservationBack() {
        var credit = ReadCredit(window: self.wide)
        _ = credit.request(10)
        #expect(credit.nextRead(cap: 8) == 8)
        #expect(credit.nextRead(cap: 8) == 2)
        credit.completed(asked: 8, got: 3, bytes: 30)
        #expect(credit.pendingDemand == 7)
        #expect(credit.nextRead(cap: 8) == 5, "5 unused by the first read, the second still holds 2")
        credit.completed(asked: 2, got: 2, bytes: 20)
        credit.completed(asked: 5, got: 0, bytes: 0)
        #expect(credit.pendingDemand == 5)
        #expect(credit.nextRead(cap: 100) == 5)
    }

    @Test func aWaitingReaderIsWokenByDemandOnce() {
        var credit = ReadCredit(window: self.wide)
        #expect(credit.nextRead(cap: 10) == nil)
        #expect(credit.request(5) == .wakeReader)
        #expect(credit.request(5) == .none, "woken already; it reads by itself")
        #expect(credit.nextRead(cap: 100) == 10)
        #expect(credit.request(1) == .none, "a busy reader is not woken")
    }

    @Test func theWindowBoundsUnsettledItems() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 10, bytes: 1 << 30))
        _ = credit.request(100)
        #expect(credit.nextRead(cap: 6) == 6)
        #expect(credit.nextRead(cap: 6) == 4)
        #expect(credit.nextRead(cap: 6) == nil)
        credit.completed(asked: 6, got: 6, bytes: 60)
        credit.completed(asked: 4, got: 4, bytes: 40)
        #expect(credit.nextRead(cap: 6) == nil, "demand is left, but 10 items wait for settlement")
        #expect(credit.settled(count: 1, bytes: 10) == .none, "one free item is less than a quarter of the window")
        #expect(credit.settled(count: 2, bytes: 20) == .wakeReader)
        #expect(credit.nextRead(cap: 6) == 3)
    }

    /// Settlements that free a few items at a time do not shrink reads to a few items.
    @Test func aFullWindowWaitsForAWholeReadBeforeReading() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 100_000, bytes: 1 << 40))
        _ = credit.request(1_000_000)
        while let count = credit.nextRead(cap: 1000) { credit.completed(asked: count, got: count, bytes: count) }
        #expect(credit.unsettled == 100_000)
        #expect(credit.settled(count: 300, bytes: 300) == .none)
        #expect(credit.settled(count: 300, bytes: 300) == .none)
        #expect(credit.nextRead(cap: 1000) == nil)
        #expect(credit.settled(count: 400, bytes: 400) == .wakeReader)
        #expect(credit.nextRead(cap: 1000) == 1000)
    }

    @Test func smallDemandIsReadAtOnceEvenWithAFullishWindow() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 100, bytes: 1 << 40))
        _ = credit.request(95)
        #expect(credit.nextRead(cap: 1000) == 95, "demand, not the window, limits this read")
        credit.completed(asked: 95, got: 95, bytes: 0)
        _ = credit.request(3)
        #expect(credit.nextRead(cap: 1000) == 3, "the window has room for what is demanded")
    }

    @Test func theByteWindowStopsReadsUntilSettled() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 1000, bytes: 100))
        _ = credit.request(1000)
        #expect(credit.nextRead(cap: 10) == 10)
        credit.completed(asked: 10, got: 10, bytes: 100)
        #expect(credit.nextRead(cap: 10) == nil)
        #expect(credit.settled(count: 1, bytes: 10) == .wakeReader)
        #expect(credit.nextRead(cap: 10) == 10)
    }

    @Test func prefetchRunsAheadOfDemandWithinTheWindow() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 50, bytes: 1 << 30), prefetch: 20)
        #expect(credit.nextRead(cap: 100) == 20)
        credit.completed(asked: 20, got: 20, bytes: 0)
        _ = credit.request(40)
        #expect(credit.nextRead(cap: 100) == 30, "the window (50) holds 20 unsettled")
    }

    @Test func drainFinishesOnlyWhenNoReadIsInFlight() {
        var credit = ReadCredit(window: self.wide)
        _ = credit.request(10)
        #expect(credit.nextRead(cap: 4) == 4)
        #expect(credit.nextRead(cap: 4) == 4)
        #expect(credit.drain() == .none)
        #expect(credit.nextRead(cap: 4) == nil)
        #expect(credit.request(10) == .none, "draining: demand wakes no reader")
        #expect(credit.completed(asked: 4, got: 4, bytes: 0) == .none)
        #expect(credit.completed(asked: 4, got: 1, bytes: 0) == .finished)
    }

    @Test func drainWithNothingInFlightFinishesAtOnce() {
        var credit = ReadCredit(window: self.wide)
        #expect(credit.drain() == .finished)
        #expect(credit.isEnding && !credit.isStopped)
        #expect(credit.stop() == .finished)
        #expect(credit.isStopped)
    }

    /// A long random run with several reads in flight and settlements interleaved: the two
    /// invariants hold after every step.
    @Test(arguments: [0, 15])
    func invariantsHoldUnderRandomInterleavings(prefetch: Int) {
        var random = SeededRandom(seed: UInt64(42 + prefetch))
        let window = ReadCredit.Window(count: 64, bytes: 4000)
        var credit = ReadCredit(window: window, prefetch: prefetch)
        var demanded = 0
        var read = 0
        var inFlight: [Int] = []
        var unsettled: [Int] = []  // sizes in bytes of items read and not settled
        for _ in 0..<20_000 {
            switch random.next() % 4 {
            case 0:
                let more = Int(random.next() % 20)
                demanded += more
                _ = credit.request(more)
            case 1:
                if let count = credit.nextRead(cap: 1 + Int(random.next() % 16)) { inFlight.append(count) }
            case 2:
                guard !inFlight.isEmpty else { continue }
                let asked = inFlight.remove(at: Int(random.next() % UInt64(inFlight.count)))
                let got = Int(random.next() % UInt64(asked + 1))
                let sizes = (0..<got).map { _ in 1 + Int(random.next() % 100) }
                credit.completed(asked: asked, got: got, bytes: sizes.reduce(0, +))
                read += got
                unsettled += sizes
            default:
                guard !unsettled.isEmpty else { continue }
                let count = 1 + Int(random.next() % UInt64(unsettled.count))
                let bytes = unsettled.prefix(count).reduce(0, +)
                unsettled.removeFirst(count)
                _ = credit.settled(count: count, bytes: bytes)
            }
            let asked = inFlight.reduce(0, +)
            #expect(read + asked <= demanded + prefetch, "never read more than demanded (plus the prefetch allowance)")
            #expect(unsettled.count + asked <= window.count, "never more unsettled than the window")
            #expect(credit.unsettled == unsettled.count)
            // Bytes: a read starts only below the byte window, so at most the reads in flight exceed it.
            #expect(unsettled.reduce(0, +) < window.bytes + 100 * 16 * (inFlight.count + 1))
        }
        #expect(read > 1000, "the run made progress")
    }
}

/// A small deterministic generator (a 64-bit linear congruential step with a xor-shift
/// output), so every run takes the same path.
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state = self.state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return self.state ^ (self.state >> 29)
    }
}

/// A credit with a limit (a consumer that takes a fixed count, `sluice drain --count`).
@Suite("Read credit with a limit")
struct ReadCreditLimitTests {
    private let wide = ReadCredit.Window(count: 1_000_000, bytes: 1 << 40)

    @Test func readsNeverAskForMoreThanTheLimitAndThenDrain() {
        var credit = ReadCredit(window: self.wide, limit: 250)
        _ = credit.request(10_000)
        #expect(credit.nextRead(cap: 100) == 100)
        #expect(credit.nextRead(cap: 100) == 100)
        #expect(credit.nextRead(cap: 100) == 50, "demand allows more, the limit does not")
        #expect(credit.nextRead(cap: 100) == nil)
        credit.completed(asked: 100, got: 100, bytes: 1)
        credit.completed(asked: 100, got: 40, bytes: 1)
        #expect(credit.remainingLimit == 110)
        #expect(credit.nextRead(cap: 100) == 60, "what a short read did not bring may be asked again")
        #expect(!credit.isEnding)
        credit.completed(asked: 50, got: 50, bytes: 1)
        #expect(credit.completed(asked: 60, got: 60, bytes: 1) == .finished, "the limit reached: it drains by itself")
        #expect(credit.isExhausted && credit.isEnding)
        #expect(credit.nextRead(cap: 100) == nil)
    }

    @Test func randomReadsTogetherNeverPassTheLimit() {
        var generator = SeededRandom(seed: 0x11A1)
        for _ in 0..<100 {
            let limit = Int(generator.next() % 500) + 1
            var credit = ReadCredit(window: self.wide, prefetch: Int(generator.next() % 50), limit: limit)
            var brought = 0
            var inFlight: [Int] = []
            for _ in 0..<400 {
                _ = credit.request(Int(generator.next() % 40))
                if let asked = credit.nextRead(cap: Int(generator.next() % 30) + 1) { inFlight.append(asked) }
                #expect(brought + inFlight.reduce(0, +) <= limit)
                if !inFlight.isEmpty && generator.next() % 2 == 0 {
                    let asked = inFlight.removeFirst()
                    let got = Int(generator.next() % UInt64(asked + 1))
                    credit.completed(asked: asked, got: got, bytes: got)
                    brought += got
                }
            }
            #expect(brought <= limit)
            #expect(credit.isExhausted == (brought == limit))
        }
    }

    // MARK: A broker that pushes (AMQP prefetch)

    @Test func pushedItemsServePendingDemandAndWaitAheadOfTheRest() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 50, bytes: 1 << 30))
        _ = credit.request(10)
        #expect(credit.pushed(count: 4, bytes: 40) == 4, "pending demand takes all four")
        #expect(credit.pushed(count: 10, bytes: 100) == 6, "six more were demanded; four come ahead of demand")
        #expect(credit.pendingDemand == 0)
        #expect(credit.ahead == 4)
        #expect(credit.unsettled == 14)
        #expect(credit.claimAhead(demand: 3) == 3)
        #expect(credit.claimAhead(demand: 5) == 1, "one was left ahead; the other four are pending")
        #expect(credit.ahead == 0)
        #expect(credit.pendingDemand == 4)
        #expect(credit.pushed(count: 2, bytes: 20) == 2)
        #expect(credit.pendingDemand == 2)
        _ = credit.settled(count: 16, bytes: 160)
        #expect(credit.unsettled == 0)
    }

    /// What a closed channel left unsettled leaves the window at once, and its late
    /// settlements do not free the new epoch's window a second time.
    @Test func aNewEpochFreesTheWindowAndIgnoresOlderSettlements() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 50, bytes: 1 << 30), epoch: 1)
        _ = credit.request(30)
        _ = credit.pushed(count: 50, bytes: 500)
        #expect(credit.unsettled == 50 && credit.ahead == 20)
        _ = credit.settled(count: 10, bytes: 100, epoch: 1)
        #expect(credit.unsettled == 40)
        _ = credit.startEpoch(2)
        #expect(credit.epoch == 2)
        #expect(credit.unsettled == 0, "the broker took the 40 back")
        #expect(credit.ahead == 0, "the items waiting ahead of demand went with their channel")
        _ = credit.pushed(count: 30, bytes: 300)
        #expect(credit.settled(count: 20, bytes: 200, epoch: 1) == .none)
        #expect(credit.unsettled == 30, "late settlements of epoch 1 change nothing")
        _ = credit.settled(count: 30, bytes: 300, epoch: 2)
        #expect(credit.unsettled == 0)
    }

    @Test func aNewEpochWakesAReaderTheWindowHeldBack() {
        var credit = ReadCredit(window: ReadCredit.Window(count: 10, bytes: 1 << 30))
        _ = credit.request(100)
        #expect(credit.nextRead(cap: 10) == 10)
        credit.completed(asked: 10, got: 10, bytes: 10)
        #expect(credit.nextRead(cap: 10) == nil, "the window is full")
        #expect(credit.startEpoch(1) == .wakeReader)
        #expect(credit.nextRead(cap: 10) == 10)
    }

    /// Random pushes, claims, settlements and epochs: demand is never lost or doubled (every
    /// unit of demand is pending or was served by exactly one item) and the unsettled count
    /// equals what the current epoch pushed and did not settle.
    @Test func pushedAccountingHoldsUnderRandomInterleavings() {
        var random = SeededRandom(seed: 7)
        var credit = ReadCredit(window: ReadCredit.Window(count: 1 << 20, bytes: 1 << 40), epoch: 1)
        var demanded = 0
        var served = 0
        var unsettledNow = 0
        var aheadNow = 0
        for _ in 0..<5000 {
            switch random.next() % 5 {
            case 0:
                let demand = Int(random.next() % 30)
                demanded += demand
                let claimed = credit.claimAhead(demand: demand)
                served += claimed
                aheadNow -= claimed
            case 1:
                let count = Int(random.next() % 30)
                let claimed = credit.pushed(count: count, bytes: count)
                served += claimed
                aheadNow += count - claimed
                unsettledNow += count
            case 2:
                let count = Int(random.next() % UInt64(unsettledNow + 1))
                _ = credit.settled(count: count, bytes: count, epoch: credit.epoch)
                unsettledNow -= count
            case 3:
                _ = credit.settled(count: Int(random.next() % 30), bytes: 0, epoch: credit.epoch - 1)
            default:
                if random.next() % 10 == 0 {
                    _ = credit.startEpoch(credit.epoch + 1)
                    // What waited ahead is gone with its channel; its demand was never spent.
                    unsettledNow = 0
                    aheadNow = 0
                }
            }
            #expect(credit.pendingDemand == demanded - served)
            #expect(credit.ahead == aheadNow)
            #expect(credit.unsettled == unsettledNow)
        }
    }
}
