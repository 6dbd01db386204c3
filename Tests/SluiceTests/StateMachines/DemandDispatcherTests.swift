//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

@Suite("DemandDispatcher state machine")
struct DemandDispatcherTests {
    let log = SinkLog<Int>()

    private func subscribe(_ dispatcher: inout DemandDispatcher<Int>) throws -> SubscriptionID {
        let subscription = SubscriptionID.next()
        try dispatcher.subscribe(subscription, sink: self.log.makeSink(), options: .init())
        return subscription
    }

    @Test("each ask is passed upstream in full")
    func asksPassUpstream() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let b = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: a) == 10)
        #expect(dispatcher.ask(3, from: b) == 3)
        #expect(dispatcher.ask(5, from: SubscriptionID.next()) == 0)  // unknown subscription
        #expect(dispatcher.subscriberCount == 2)
    }

    @Test("events go to the largest pending demand first, up to that demand, then the next")
    func largestDemandFirst() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let b = try self.subscribe(&dispatcher)
        let c = try self.subscribe(&dispatcher)
        _ = dispatcher.ask(3, from: a)
        _ = dispatcher.ask(7, from: b)
        _ = dispatcher.ask(5, from: c)
        // b (7) first: 7 events; then c (5) takes the rest of the batch.
        #expect(dispatcher.dispatch(Array(0..<10)).leftover.isEmpty)
        #expect(self.log.batches.map(\.subscription) == [b, c])
        #expect(self.log.events(for: b) == Array(0..<7))
        #expect(self.log.events(for: c) == [7, 8, 9])
        // Now a has 3, c has 2: a first.
        self.log.clear()
        #expect(dispatcher.dispatch([10, 11, 12, 13]).leftover.isEmpty)
        #expect(self.log.events(for: a) == [10, 11, 12])
        #expect(self.log.events(for: c) == [13])
        #expect(self.log.batches.map(\.subscription) == [a, c])
    }

    @Test("subscribers with equal demand are served in the order they asked")
    func ties() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let b = try self.subscribe(&dispatcher)
        _ = dispatcher.ask(2, from: b)
        _ = dispatcher.ask(2, from: a)
        _ = dispatcher.dispatch([1, 2, 3])
        #expect(self.log.batches.map(\.subscription) == [b, a])
        #expect(self.log.events(for: b) == [1, 2])
        #expect(self.log.events(for: a) == [3])
    }

    @Test("events nobody can take are returned as leftover")
    func leftover() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        #expect(dispatcher.dispatch([1, 2]).leftover == [1, 2])
        _ = dispatcher.ask(3, from: a)
        let outcome = dispatcher.dispatch([1, 2, 3, 4, 5])
        #expect(outcome.leftover == [4, 5])
        #expect(outcome.extraDemand == 0)
        #expect(self.log.events(for: a) == [1, 2, 3])
    }

    @Test("a cancelled subscriber's pending demand (asked and not yet served) is not asked upstream again")
    func cancelledDemandRemembered() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let b = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: a) == 10)
        _ = dispatcher.dispatch([1, 2, 3, 4])  // a has 6 unmet
        #expect(dispatcher.cancel(a)?.releasedDemand == 0)
        #expect(!dispatcher.contains(a))
        // The producer still owes those 6 events: b's asks are reduced until they are covered.
        #expect(dispatcher.ask(4, from: b) == 0)
        #expect(dispatcher.ask(4, from: b) == 2)
        #expect(dispatcher.ask(4, from: b) == 4)
        // The 6 events the producer still emits for a go to b.
        _ = dispatcher.dispatch(Array(5..<11))
        #expect(self.log.events(for: b) == Array(5..<11))
    }

    @Test("events a subscriber has not asked for are never sent to it")
    func neverMoreThanAsked() throws {
        var dispatcher = DemandDispatcher<Int>()
        let subscriptions = try (0..<4).map { _ in try self.subscribe(&dispatcher) }
        var asked: [SubscriptionID: Int] = [:]
        var next = 0
        for round in 0..<50 {
            let subscription = subscriptions[round % 4]
            let count = (round * 7) % 5
            _ = dispatcher.ask(count, from: subscription)
            asked[subscription, default: 0] += count
            let batch = Array(next..<(next + round % 9))
            next += batch.count
            _ = dispatcher.dispatch(batch)
        }
        for subscription in subscriptions {
            #expect(self.log.events(for: subscription).count <= asked[subscription, default: 0])
        }
    }

    @Test("events the producer had to buffer pay the remembered demand of cancelled subscribers")
    func bufferedPaysCancelledDemand() throws {
        var dispatcher = DemandDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: a) == 10)
        _ = dispatcher.cancel(a)
        // The producer emits 6 of the 10 it owed; nobody can take them, so they are buffered.
        dispatcher.buffered(6)
        let b = try self.subscribe(&dispatcher)
        // b's 10 must be served from the buffer (6) and the producer's remaining debt (4): the
        // producer is asked for the 6 again so the runner takes them from its buffer.
        #expect(dispatcher.ask(10, from: b) == 6)
        #expect(dispatcher.ask(5, from: b) == 5)
    }
}
