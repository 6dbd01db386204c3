//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

@Suite("PartitionDispatcher state machine")
struct PartitionDispatcherTests {
    let log = SinkLog<Int>()

    /// Builds the dispatcher the way `StageHandle.start` does, from a public `Dispatcher`.
    private func make(_ dispatcher: Dispatcher<Int>) -> PartitionDispatcher<Int> {
        guard case .partition(let partitions, let route) = dispatcher.kind else {
            preconditionFailure("not a partition dispatcher")
        }
        return PartitionDispatcher(partitions: partitions, routing: route)
    }

    private func subscribe(_ dispatcher: inout PartitionDispatcher<Int>, _ partition: PartitionKey) throws -> SubscriptionID {
        let subscription = SubscriptionID.next()
        try dispatcher.subscribe(subscription, sink: self.log.makeSink(), options: .init(partition: partition))
        return subscription
    }

    @Test("each event goes to its partition's subscriber, within that subscriber's demand")
    func routing() throws {
        var dispatcher = self.make(.partition(count: 2) { .index($0 % 2) })
        let even = try self.subscribe(&dispatcher, 0)
        let odd = try self.subscribe(&dispatcher, 1)
        #expect(dispatcher.ask(3, from: even) == 3)
        #expect(dispatcher.ask(3, from: odd) == 3)
        #expect(dispatcher.dispatch([0, 1, 2, 3, 4, 5]).leftover.isEmpty)
        #expect(self.log.events(for: even) == [0, 2, 4])
        #expect(self.log.events(for: odd) == [1, 3, 5])
        // One batch per partition, not one message per event.
        #expect(self.log.batches.count == 2)
    }

    @Test("each partition queues separately until its own subscriber asks")
    func separateQueues() throws {
        var dispatcher = self.make(.partition(count: 2) { .index($0 % 2) })
        let even = try self.subscribe(&dispatcher, 0)
        let odd = try self.subscribe(&dispatcher, 1)
        _ = dispatcher.ask(4, from: even)
        _ = dispatcher.dispatch([0, 1, 2, 3])
        #expect(self.log.events(for: even) == [0, 2])
        #expect(self.log.events(for: odd) == [])
        #expect(dispatcher.heldCount == 2)
        // odd asks 1: it gets the oldest of its queued events at once.
        _ = dispatcher.ask(1, from: odd)
        #expect(self.log.events(for: odd) == [1])
        // A new event for odd queues behind 3, even though odd has no demand left anyway.
        _ = dispatcher.ask(2, from: odd)
        #expect(self.log.events(for: odd) == [1, 3])
        _ = dispatcher.dispatch([5, 7])
        #expect(self.log.events(for: odd) == [1, 3, 5])
        #expect(dispatcher.heldCount == 1)
        // even's queue was never involved.
        #expect(self.log.events(for: even) == [0, 2])
    }

    @Test("events beyond the demand passed upstream are returned as leftover")
    func leftover() throws {
        var dispatcher = self.make(.partition(count: 1) { _ in .index(0) })
        let only = try self.subscribe(&dispatcher, 0)
        #expect(dispatcher.dispatch([1]).leftover == [1])
        _ = dispatcher.ask(2, from: only)
        #expect(dispatcher.dispatch([1, 2, 3]).leftover == [3])
        #expect(self.log.events(for: only) == [1, 2])
    }

    @Test("a hash answering nil discards the event without using demand, and counts it")
    func discard() throws {
        var dispatcher = self.make(.partition(count: 1) { $0 < 0 ? nil : .index(0) })
        let only = try self.subscribe(&dispatcher, 0)
        #expect(dispatcher.ask(3, from: only) == 3)
        let outcome = dispatcher.dispatch([-1, 1, -2])
        #expect(outcome.extraDemand == 2)
        #expect(outcome.leftover.isEmpty)
        #expect(dispatcher.discarded == 2)
        #expect(self.log.events(for: only) == [1])
        // The refunded demand lets the producer emit two more that still reach the subscriber.
        _ = dispatcher.dispatch([2, 3])
        #expect(self.log.events(for: only) == [1, 2, 3])
    }

    @Test("the hash variant may transform the events it routes")
    func transformingRoute() throws {
        var dispatcher = self.make(
            .partition(["low", "high"]) { event in (event * 10, event < 5 ? "low" : "high") }
        )
        let low = try self.subscribe(&dispatcher, "low")
        let high = try self.subscribe(&dispatcher, "high")
        _ = dispatcher.ask(2, from: low)
        _ = dispatcher.ask(2, from: high)
        _ = dispatcher.dispatch([1, 7, 2, 9])
        #expect(self.log.events(for: low) == [10, 20])
        #expect(self.log.events(for: high) == [70, 90])
    }

    @Test("named partitions")
    func named() throws {
        var dispatcher = self.make(.partition(names: ["a", "b"]) { $0 == 0 ? "a" : "b" })
        let a = try self.subscribe(&dispatcher, "a")
        let b = try self.subscribe(&dispatcher, "b")
        _ = dispatcher.ask(5, from: a)
        _ = dispatcher.ask(5, from: b)
        _ = dispatcher.dispatch([0, 1, 0, 2])
        #expect(self.log.events(for: a) == [0, 0])
        #expect(self.log.events(for: b) == [1, 2])
    }

    @Test("an unknown partition, a taken partition, or none at all is rejected with a typed error")
    func rejectedSubscriptions() throws {
        var dispatcher = self.make(.partition(names: ["a", "b"]) { _ in "a" })
        let unknown = #expect(throws: SluiceError.self) { _ = try self.subscribe(&dispatcher, "c") }
        #expect(unknown?.code == .unknownPartition)
        #expect(unknown?.message.contains("\"c\"") == true)
        let numbered = #expect(throws: SluiceError.self) { _ = try self.subscribe(&dispatcher, 0) }
        #expect(numbered?.code == .unknownPartition)

        let holder = try self.subscribe(&dispatcher, "a")
        let taken = #expect(throws: SluiceError.self) { _ = try self.subscribe(&dispatcher, "a") }
        #expect(taken?.code == .partitionTaken)
        #expect(taken?.message.contains("\"a\"") == true)
        #expect(taken?.message.contains("\(holder)") == true)

        let missing = #expect(throws: SluiceError.self) {
            try dispatcher.subscribe(SubscriptionID.next(), sink: self.log.makeSink(), options: .init())
        }
        #expect(missing?.code == .invalidOption)
        #expect(missing?.message.contains("partition") == true)
        #expect(dispatcher.subscriberCount == 1)
    }

    @Test("a cancelled partition keeps its queue for the next subscriber; what the producer still owes is not asked twice")
    func cancelAndResubscribe() throws {
        var dispatcher = self.make(.partition(count: 2) { .index($0 % 2) })
        let even = try self.subscribe(&dispatcher, 0)
        let odd = try self.subscribe(&dispatcher, 1)
        #expect(dispatcher.ask(4, from: even) == 4)
        _ = dispatcher.dispatch([1, 3])  // both queue for odd, even still has 4 unmet
        #expect(dispatcher.cancel(even)?.releasedDemand == 0)
        #expect(dispatcher.cancel(odd)?.releasedDemand == 0)
        let odd2 = try self.subscribe(&dispatcher, 1)
        // odd2 gets the queue at once. Of even's 4, the producer still owes only 2 (the other
        // 2 went to odd's queue): those 2 are not asked again.
        #expect(dispatcher.ask(3, from: odd2) == 1)
        #expect(self.log.events(for: odd2) == [1, 3])
        #expect(dispatcher.ask(3, from: odd2) == 3)
    }

    @Test("a cancelled subscriber whose demand the producer no longer owes does not hold back the next one")
    func cancelledDemandNotOwed() throws {
        var dispatcher = self.make(.partition(count: 2) { .index($0 % 2) })
        let even = try self.subscribe(&dispatcher, 0)
        _ = try self.subscribe(&dispatcher, 1)
        #expect(dispatcher.ask(2, from: even) == 2)
        _ = dispatcher.dispatch([1, 3])  // both for odd: the producer owes nothing now
        _ = dispatcher.cancel(even)
        let even2 = try self.subscribe(&dispatcher, 0)
        #expect(dispatcher.ask(2, from: even2) == 2)
    }

    @Test("events buffered with nobody subscribed pay the outstanding demand, cancelled or not")
    func bufferedPaysWaiting() throws {
        var dispatcher = self.make(.partition(count: 1) { _ in .index(0) })
        let first = try self.subscribe(&dispatcher, 0)
        #expect(dispatcher.ask(10, from: first) == 10)
        _ = dispatcher.cancel(first)
        dispatcher.buffered(10)
        let second = try self.subscribe(&dispatcher, 0)
        #expect(dispatcher.ask(4, from: second) == 4)
        #expect(dispatcher.dispatch([0, 1, 2, 3]).leftover.isEmpty)
        #expect(self.log.events(for: second) == [0, 1, 2, 3])
    }
}
