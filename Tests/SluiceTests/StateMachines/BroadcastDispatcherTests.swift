//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

@Suite("BroadcastDispatcher state machine")
struct BroadcastDispatcherTests {
    let log = SinkLog<Int>()

    private func subscribe(
        _ dispatcher: inout BroadcastDispatcher<Int>,
        selector: (@Sendable (Int) -> Bool)? = nil
    ) throws -> SubscriptionID {
        let subscription = SubscriptionID.next()
        try dispatcher.subscribe(subscription, sink: self.log.makeSink(), options: .init(selector: selector))
        return subscription
    }

    @Test("subscribers asking 10 and 3: upstream is asked 3 and each first receives 3")
    func minimumDemand() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let b = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: a) == 0)
        #expect(dispatcher.ask(3, from: b) == 3)
        let outcome = dispatcher.dispatch(Array(0..<5))
        #expect(outcome.leftover == [3, 4])
        #expect(self.log.batches(for: a) == [[0, 1, 2]])
        #expect(self.log.batches(for: b) == [[0, 1, 2]])
        // b asks 3 more: a still has 7, so 3 more go upstream.
        #expect(dispatcher.ask(3, from: b) == 3)
        #expect(dispatcher.ask(1, from: b) == 1)
        _ = dispatcher.dispatch([3, 4, 5, 6])
        #expect(self.log.events(for: a) == Array(0..<7))
        #expect(self.log.events(for: b) == Array(0..<7))
    }

    @Test("a subscriber that never asks holds everyone back")
    func silentSubscriberHoldsBack() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let a = try self.subscribe(&dispatcher)
        let silent = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: a) == 0)
        #expect(dispatcher.dispatch([1, 2]).leftover == [1, 2])
        #expect(self.log.batches.isEmpty)
        // Once the silent one leaves, a's demand goes upstream.
        #expect(dispatcher.cancel(silent)?.releasedDemand == 10)
        _ = dispatcher.dispatch([1, 2])
        #expect(self.log.events(for: a) == [1, 2])
    }

    @Test("a selector filters events and the filtered events' demand is refunded")
    func selectorRefund() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let all = try self.subscribe(&dispatcher)
        let even = try self.subscribe(&dispatcher, selector: { $0 % 2 == 0 })
        _ = dispatcher.ask(4, from: all)
        #expect(dispatcher.ask(4, from: even) == 4)
        var outcome = dispatcher.dispatch([1, 2, 3, 4])
        #expect(self.log.events(for: all) == [1, 2, 3, 4])
        #expect(self.log.events(for: even) == [2, 4])
        // `even` used only 2 of its 4; `all` used all 4, so nothing extra goes upstream yet.
        #expect(outcome.extraDemand == 0)
        // When `all` asks 2 again, both have 2 left: 2 go upstream.
        #expect(dispatcher.ask(2, from: all) == 2)
        outcome = dispatcher.dispatch([5, 7])
        #expect(self.log.events(for: even) == [2, 4])
        #expect(self.log.events(for: all) == [1, 2, 3, 4, 5, 7])
        // With only the filtering subscriber left, filtered events come back as extra demand.
        _ = dispatcher.cancel(all)
        var solo = BroadcastDispatcher<Int>()
        let odd = try self.subscribe(&solo, selector: { $0 % 2 == 1 })
        #expect(solo.ask(3, from: odd) == 3)
        outcome = solo.dispatch([10, 11, 12])
        #expect(self.log.events(for: odd) == [11])
        #expect(outcome.extraDemand == 2)
    }

    @Test("the same consumer subscribing twice is rejected with duplicateSubscription")
    func duplicate() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let sink = self.log.makeSink()
        try dispatcher.subscribe(SubscriptionID.next(), sink: sink, options: .init())
        let error = #expect(throws: SluiceError.self) {
            try dispatcher.subscribe(SubscriptionID.next(), sink: sink, options: .init())
        }
        #expect(error?.code == .duplicateSubscription)
        #expect(error?.message.contains("\(sink.stageID)") == true)
        #expect(dispatcher.subscriberCount == 1)
    }

    @Test("a subscriber joining while demand is outstanding gets every later event, but never more than it asked")
    func lateSubscriber() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let early = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: early) == 10)  // the producer now owes 10
        let late = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(3, from: late) == 0)
        _ = dispatcher.dispatch(Array(0..<10))
        #expect(self.log.events(for: early) == Array(0..<10))
        #expect(self.log.events(for: late) == [0, 1, 2], "late asked only 3")
        #expect(dispatcher.undelivered == 7)
        // Nothing more goes upstream until the late subscriber caught up.
        #expect(dispatcher.ask(5, from: early) == 0)
        #expect(dispatcher.ask(7, from: late) == 0)
        #expect(self.log.events(for: late) == Array(0..<10))
        #expect(dispatcher.undelivered == 0)
        #expect(dispatcher.ask(3, from: late) == 3)
        _ = dispatcher.dispatch([10, 11, 12])
        #expect(self.log.events(for: early) == Array(0..<13))
        #expect(self.log.events(for: late) == Array(0..<13))
    }

    @Test("a late subscriber with a selector: filtered events are refunded, selected ones wait for its demand")
    func lateSubscriberWithSelector() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let early = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(6, from: early) == 6)
        let late = try self.subscribe(&dispatcher, selector: { $0 % 2 == 0 })
        #expect(dispatcher.ask(1, from: late) == 0)
        _ = dispatcher.dispatch(Array(0..<6))
        #expect(self.log.events(for: late) == [0])
        #expect(dispatcher.ask(5, from: late) == 0)
        #expect(self.log.events(for: late) == [0, 2, 4])
        // late asked 6 and received 3 evens (the odds used none of its demand): it has 3 left.
        #expect(dispatcher.ask(2, from: early) == 2)
    }

    @Test("a subscriber joining after the others left inherits what the producer still owes, within its asks")
    func subscriberAfterOthersLeft() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let first = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: first) == 10)
        _ = dispatcher.cancel(first)
        let second = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(4, from: second) == 0, "the producer still owes 10")
        _ = dispatcher.dispatch(Array(0..<10))
        #expect(self.log.events(for: second) == [0, 1, 2, 3])
        #expect(dispatcher.ask(6, from: second) == 0)
        #expect(self.log.events(for: second) == Array(0..<10))
        #expect(dispatcher.ask(2, from: second) == 2)
    }

    @Test("events buffered with nobody subscribed pay the outstanding demand; a new subscriber gets them")
    func bufferedPaysWaiting() throws {
        var dispatcher = BroadcastDispatcher<Int>()
        let first = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(10, from: first) == 10)
        _ = dispatcher.cancel(first)
        dispatcher.buffered(10)  // the producer paid with nobody subscribed
        let second = try self.subscribe(&dispatcher)
        #expect(dispatcher.ask(4, from: second) == 4)
        _ = dispatcher.dispatch([0, 1, 2, 3])  // the runner serves them from its buffer
        #expect(self.log.events(for: second) == [0, 1, 2, 3])
    }
}
