//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceRabbitMQ
import Testing

@Suite struct AckTrackerTests {
    let now = ContinuousClock.now

    @Test func aContiguousRunIsOneMultipleAck() {
        var tracker = AckTracker(generation: 1)
        #expect(tracker.settle(acknowledged: Array(1...500), now: self.now) == [.ack(500, multiple: true)])
        #expect(tracker.settle(acknowledged: Array(501...502), now: self.now) == [.ack(502, multiple: true)])
        #expect(tracker.deferredCount == 0)
    }

    @Test func acksAboveAGapWaitUntilItCloses() {
        var tracker = AckTracker(generation: 1)
        #expect(tracker.settle(acknowledged: Array(11...20), now: self.now).isEmpty)
        #expect(tracker.deferredCount == 10)
        #expect(tracker.deferredSince == self.now)
        #expect(tracker.settle(acknowledged: Array(1...10), now: self.now) == [.ack(20, multiple: true)])
        #expect(tracker.deferredCount == 0)
        #expect(tracker.deferredSince == nil)
    }

    @Test func rejectionsGoAtOnceAndAMultipleAckSkipsThem() {
        var tracker = AckTracker(generation: 1)
        let frames = tracker.settle(acknowledged: [1, 2, 4], rejected: [(3, true)], now: self.now)
        #expect(frames == [.reject(3, requeue: true), .ack(4, multiple: true)])
        // A rejection at the top of a run: the ack covers only up to the last acknowledged tag.
        #expect(tracker.settle(acknowledged: [5], rejected: [(6, false)], now: self.now) == [.reject(6, requeue: false), .ack(5, multiple: true)])
        #expect(tracker.settle(acknowledged: [7], now: self.now) == [.ack(7, multiple: true)])
    }

    @Test func aFlushSendsDeferredAcksAloneAndTheFloorPassesThem() {
        var tracker = AckTracker(generation: 1)
        _ = tracker.settle(acknowledged: [3, 4], now: self.now)
        #expect(tracker.flushDeferred() == [.ack(3, multiple: false), .ack(4, multiple: false)])
        #expect(tracker.settle(acknowledged: [1, 2], now: self.now) == [.ack(2, multiple: true)])
        #expect(tracker.settle(acknowledged: [5], now: self.now) == [.ack(5, multiple: true)])
    }

    @Test func acknowledgementsAreCoalescedUntilEnoughWait() {
        var tracker = AckTracker(generation: 1, coalescing: 100)
        #expect(tracker.settle(acknowledged: Array(1...40), now: self.now).isEmpty)
        #expect(tracker.unsentCount == 40)
        #expect(tracker.deferredSince == self.now)
        // Deferred ones above a gap count towards the threshold; the held run goes out.
        #expect(tracker.settle(acknowledged: Array(61...90), now: self.now + .milliseconds(1)).isEmpty)
        #expect(tracker.settle(acknowledged: Array(41...50), now: self.now).isEmpty)
        #expect(tracker.settle(acknowledged: Array(91...110), now: self.now) == [.ack(50, multiple: true)])
        #expect(tracker.unsentCount == 50)
        // Closing the gap moves the floor over the deferred ones; they wait in the held run.
        #expect(tracker.settle(acknowledged: Array(51...60), now: self.now).isEmpty)
        #expect(tracker.unsentCount == 60)
        #expect(tracker.flushDeferred() == [.ack(110, multiple: true)])
        #expect(tracker.unsentCount == 0)
        #expect(tracker.deferredSince == nil)
    }

    @Test func aFlushSendsTheHeldRunAndTheDeferredOnes() {
        var tracker = AckTracker(generation: 1, coalescing: 100)
        _ = tracker.settle(acknowledged: [1, 2, 5], rejected: [(3, false)], now: self.now)
        #expect(tracker.flushDeferred() == [.ack(2, multiple: true), .ack(5, multiple: false)])
        #expect(tracker.settle(acknowledged: [4], now: self.now).isEmpty)
        #expect(tracker.flushDeferred() == [.ack(4, multiple: true)])
    }

    /// Runs that several processors settled out of order move the floor together, as one
    /// `multiple` ack once enough wait, with nothing left deferred.
    @Test func runsMergedOutOfOrderAreOneMultipleAck() {
        var tracker = AckTracker(generation: 1, coalescing: 500)
        #expect(tracker.settle(acknowledged: Array(251...400) + Array(1...250) + Array(401...500), now: self.now) == [.ack(500, multiple: true)])
        #expect(tracker.unsentCount == 0)
        // With a gap left: the run below it is held, the rest waits above the gap.
        #expect(tracker.settle(acknowledged: Array(601...700) + Array(501...550), now: self.now).isEmpty)
        #expect(tracker.deferredCount == 100)
        #expect(tracker.heldCount == 50)
        #expect(tracker.flushDeferred().first == .ack(550, multiple: true))
    }

    @Test func aTagIsSettledOnce() {
        var tracker = AckTracker(generation: 1)
        #expect(tracker.settle(acknowledged: [1], now: self.now) == [.ack(1, multiple: true)])
        #expect(tracker.settle(acknowledged: [1], rejected: [(1, true)], now: self.now).isEmpty)
    }
}

@Suite struct DeliveryBufferTests {
    @Test func deliveriesBeyondDemandWaitAndDemandBeyondDeliveriesWaits() {
        var buffer = DeliveryBuffer<Int>(prefetch: 10)
        #expect(buffer.arrived([1, 2, 3], bytes: 3) == .none)
        #expect(buffer.request(2) == [1, 2])
        #expect(buffer.count == 1)
        #expect(buffer.request(3) == [3])
        #expect(buffer.pendingDemand == 2)
        #expect(buffer.arrived([4], bytes: 1) == .notifyStage)
        // One note covers every arrival until the stage takes.
        #expect(buffer.arrived([5, 6], bytes: 2) == .none)
        #expect(buffer.takeDemanded() == [4, 5])
        #expect(buffer.count == 1)
        #expect(buffer.pendingDemand == 0)
        #expect(buffer.unsettled == 6, "every delivery holds a place in the prefetch window until settled")
        buffer.settled(count: 5, bytes: 5, generation: 1)
        #expect(buffer.unsettled == 1)
    }

    @Test func finishingTellsTheStageOnceAndDrainsAfterTheLastTake() {
        var buffer = DeliveryBuffer<Int>(prefetch: 10)
        _ = buffer.arrived([1, 2], bytes: 2)
        #expect(buffer.finish() == .notifyStage)
        #expect(buffer.finish() == .none)
        #expect(!buffer.isDrained)
        #expect(buffer.takeAll() == [1, 2])
        #expect(buffer.isDrained)
        #expect(buffer.request(5).isEmpty, "nothing is left to claim")
    }

    @Test func deliveriesThatArriveWhileDrainingAreStillHandedOut() {
        var buffer = DeliveryBuffer<Int>(prefetch: 10)
        _ = buffer.request(3)
        _ = buffer.finish()
        _ = buffer.takeDemanded()
        #expect(buffer.arrived([1, 2], bytes: 2) == .notifyStage, "deliveries before cancel-ok")
        #expect(buffer.takeDemanded() == [1, 2])
        #expect(buffer.isDrained)
    }

    /// A closed channel's waiting deliveries are dropped (the broker requeued them), the demand
    /// they had claimed is pending again, the window is free for the next channel, and late
    /// settlements of the closed one do not free the new channel's window.
    @Test func aClosedChannelGivesBackItsDemandAndItsWindow() {
        var buffer = DeliveryBuffer<Int>(prefetch: 10)
        _ = buffer.request(4)
        #expect(buffer.arrived([1, 2, 3, 4, 5, 6], bytes: 6) == .notifyStage)
        #expect(buffer.unsettled == 6)
        // The channel closes before the stage took the four it had claimed.
        #expect(buffer.channelClosed(next: 2) == 6)
        #expect(buffer.count == 0)
        #expect(buffer.pendingDemand == 4)
        #expect(buffer.unsettled == 0)
        #expect(buffer.takeDemanded().isEmpty)
        #expect(buffer.arrived([11, 12, 13, 14, 15], bytes: 5) == .notifyStage)
        #expect(buffer.takeDemanded() == [11, 12, 13, 14])
        buffer.settled(count: 4, bytes: 4, generation: 1)
        #expect(buffer.unsettled == 5, "settlements of the closed channel change nothing")
        buffer.settled(count: 4, bytes: 4, generation: 2)
        #expect(buffer.unsettled == 1)
        #expect(buffer.request(1) == [15])
        #expect(buffer.channelClosed(next: 2) == 0, "a second report of the same close changes nothing")
        #expect(buffer.unsettled == 1)
    }
}
