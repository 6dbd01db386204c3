//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceTestKit
import Testing

@testable import Sluice

/// The three dispatchers inside running producers.
@Suite("Dispatchers through stages")
struct DispatcherStageTests {
    private func consumer<P: Stage>(
        of producer: StageHandle<P>,
        log: Observed<ConsumerLog>,
        options: SubscriptionOptions<Int>
    ) async throws -> StageHandle<RecordingConsumer> where P.Output == Int {
        try await StageHandle.start(RecordingConsumer(log: log), subscribeTo: [.init(producer, options: options)])
    }

    @Test("demand: events go to the subscriber with the most pending demand first")
    func demandLargestFirst() async throws {
        let small = Observed(ConsumerLog())
        let large = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let a = try await self.consumer(of: producer, log: small, options: .init(maxDemand: 3, demand: .manual))
        let b = try await self.consumer(of: producer, log: large, options: .init(maxDemand: 8, demand: .manual))
        a.send(.ask(3, nil))
        b.send(.ask(8, nil))
        try await a.settle()
        try await b.settle()
        try await producer.settle()
        producer.send(.push(Array(0..<10)))
        try await small.wait("a's events") { $0.events.count >= 2 }
        try await large.wait("b's events") { $0.events.count >= 8 }
        #expect(large.value.events == Array(0..<8))
        #expect(small.value.events == [8, 9])
        try await a.halt()
        try await b.halt()
        try await producer.halt()
    }

    @Test("demand: a cancelled subscriber's pending demand (asked and not yet served) is not asked from the producer again")
    func demandCancelledNotAskedTwice() async throws {
        let demands = Observed<[Int]>([])
        let firstLog = Observed(ConsumerLog())
        let secondLog = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue, demands: demands))
        let first = try await self.consumer(of: producer, log: firstLog, options: .init(maxDemand: 10, demand: .manual))
        let second = try await self.consumer(of: producer, log: secondLog, options: .init(maxDemand: 10, demand: .manual))
        first.send(.ask(10, nil))
        try await first.settle()
        producer.send(.push([0, 1, 2, 3]))  // 6 still owed to first
        try await firstLog.wait("4 events") { $0.events.count == 4 }
        first.send(.cancel(nil))
        #expect(try await first.ended() == .normal, "a permanent consumer that cancels ends with the cancel's reason")
        second.send(.ask(8, nil))
        try await second.settle()
        try await producer.settle()
        #expect(demands.value == [10, 2], "6 of second's 8 are covered by what the producer still owes")
        producer.send(.push(Array(4..<20)))
        try await secondLog.wait("8 events") { $0.events.count >= 8 }
        try await producer.settle()
        #expect(secondLog.value.events == Array(4..<12))
        #expect(firstLog.value.events == [0, 1, 2, 3])
        try await second.halt()
        try await producer.halt()
    }

    @Test("demand: every event reaches exactly one of several consumers")
    func demandExactlyOnce() async throws {
        let logs = (0..<3).map { _ in Observed(ConsumerLog()) }
        let ledger = DemandLedger()
        // Held until every consumer subscribed, or the first could take everything.
        let producer = try await StageHandle.start(
            ScriptedProducer(.generate(limit: 3_000)),
            options: .init(demandMode: .accumulate)
        )
        var consumers: [StageHandle<RecordingConsumer>] = []
        for (index, log) in logs.enumerated() {
            consumers.append(
                try await StageHandle.start(
                    RecordingConsumer(log: log),
                    subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 10 * (index + 1)))]
                )
            )
        }
        producer.setDemandMode(.forward)
        for consumer in consumers {
            try await withTimeout("a consumer to end") { _ = await consumer.waitForTermination() }
        }
        let all = logs.flatMap(\.value.events).sorted()
        #expect(logs.allSatisfy { !$0.value.events.isEmpty }, "every consumer took part")
        #expect(all == Array(0..<3_000))
        #expect(ledger.violations == [])
    }

    @Test("broadcast: subscribers asking 10 and 3 each first receive 3; one that never asks holds everyone back")
    func broadcastMinimum() async throws {
        let demands = Observed<[Int]>([])
        let ten = Observed(ConsumerLog())
        let three = Observed(ConsumerLog())
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(
            ScriptedProducer(.generate(limit: nil), demands: demands),
            options: .init(dispatcher: .broadcast)
        )
        // A subscriber that never asks.
        let silent = try await self.consumer(of: producer, log: Observed(ConsumerLog()), options: .init(demand: .manual))
        let a = try await StageHandle.start(
            RecordingConsumer(log: ten),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 10))]
        )
        let b = try await StageHandle.start(
            RecordingConsumer(log: three),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 3))]
        )
        try await a.settle()
        try await b.settle()
        try await producer.settle()
        #expect(demands.value == [], "the silent subscriber holds everyone back")
        #expect(ten.value.events == [])

        silent.send(.cancel(nil))
        try await three.wait("b's first events") { !$0.batches.isEmpty }
        try await ten.wait("a's first events") { !$0.batches.isEmpty }
        #expect(demands.value.first == 3)
        // The first batch each subscription received holds 3 events (b's handler then sees it
        // in slices of at most maxDemand - minDemand = 2).
        let aAccount = ledger.account(try #require(ten.value.subscriptions.first?.id))
        let bAccount = ledger.account(try #require(three.value.subscriptions.first?.id))
        #expect(aAccount.batches.first == 3)
        #expect(bAccount.batches.first == 3)
        #expect(ten.value.batches.first?.events == [0, 1, 2])
        #expect(three.value.batches.first?.events == [0, 1])
        // From then on both receive the same stream, never more than each asked.
        try await ten.wait("30 events") { $0.events.count >= 30 }
        try await three.wait("30 events") { $0.events.count >= 30 }
        #expect(Array(ten.value.events.prefix(30)) == Array(0..<30))
        #expect(Array(three.value.events.prefix(30)) == Array(0..<30))
        #expect(three.value.sliceSizes.allSatisfy { $0 <= 2 })
        #expect(ledger.violations == [])
        try await a.halt()
        try await b.halt()
        try await silent.halt()
        try await producer.halt()
    }

    @Test("broadcast: a selector filters events and the filtered demand is refunded")
    func broadcastSelector() async throws {
        let evens = Observed(ConsumerLog())
        let all = Observed(ConsumerLog())
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(
            ScriptedProducer(.generate(limit: 200)),
            options: .init(dispatcher: .broadcast, demandMode: .accumulate)
        )
        let a = try await self.consumer(of: producer, log: all, options: .init(maxDemand: 10))
        let b = try await StageHandle.start(
            RecordingConsumer(log: evens),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 10, selector: { $0 % 2 == 0 }))]
        )
        producer.setDemandMode(.forward)
        try await withTimeout("both consumers to end") {
            _ = try await a.ended()
            _ = try await b.ended()
        }
        #expect(all.value.events == Array(0..<200))
        #expect(evens.value.events == Array(stride(from: 0, to: 200, by: 2)))
        #expect(ledger.violations == [])
        // Refunds kept the filtering subscriber from asking for twice the events.
        let asked = try #require(ledger.allAccounts.values.first).asked
        #expect(asked <= 100 + 10)
    }

    @Test("broadcast: the same consumer subscribing twice is rejected with duplicateSubscription")
    func broadcastDuplicate() async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .broadcast))
        let consumer = try await self.consumer(of: producer, log: log, options: .init(cancel: .temporary))
        let error = await #expect(throws: SluiceError.self) {
            try await consumer.subscribe(to: producer, options: .init(cancel: .temporary))
        }
        #expect(error?.code == .duplicateSubscription)
        #expect(error?.message.contains("\(consumer.id)") == true)
        // The first subscription still works.
        let statistics = try await producer.stats()
        #expect(statistics.subscribers == 1)
        producer.send(.push([1, 2]))
        try await log.wait("events on the first subscription") { $0.events == [1, 2] }
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("partition: one subscriber per partition, each fed separately; nil discards without using demand")
    func partition() async throws {
        let logs = (0..<3).map { _ in Observed(ConsumerLog()) }
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(dispatcher: .partition(count: 3) { $0 % 10 == 9 ? nil : .index($0 % 3) })
        )
        var consumers: [StageHandle<RecordingConsumer>] = []
        for (index, log) in logs.enumerated() {
            consumers.append(
                try await StageHandle.start(
                    RecordingConsumer(log: log),
                    subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 5 + index * 7, partition: .index(index)))]
                )
            )
        }
        producer.send(.push(Array(0..<900)))
        for log in logs {
            try await log.wait("the partition's events", until: { $0.events.count >= 270 })
        }
        let statistics = try await producer.stats()
        for (index, log) in logs.enumerated() {
            let expected = (0..<900).filter { $0 % 10 != 9 && $0 % 3 == index }
            #expect(log.value.events == expected)
        }
        #expect(statistics.dispatcherDiscarded == 90)
        #expect(statistics.buffered == 0)
        #expect(ledger.violations == [])
        for consumer in consumers { try await consumer.halt() }
        try await producer.halt()
    }

    @Test("partition: named partitions, a transforming route, unknown and taken partitions")
    func namedPartitions() async throws {
        let low = Observed(ConsumerLog())
        let high = Observed(ConsumerLog())
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(dispatcher: .partition(["low", "high"]) { ($0 * 100, $0 < 5 ? "low" : "high") })
        )
        let a = try await self.consumer(of: producer, log: low, options: .init(maxDemand: 10, partition: "low"))
        let b = try await self.consumer(of: producer, log: high, options: .init(maxDemand: 10, partition: "high"))

        let unknown = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(
                RecordingConsumer(),
                subscribeTo: [.init(producer, options: .init(partition: "middle"))]
            )
        }
        #expect(unknown?.code == .unknownPartition)
        #expect(unknown?.message.contains("\"middle\"") == true)
        let taken = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(
                RecordingConsumer(),
                subscribeTo: [.init(producer, options: .init(partition: "low"))]
            )
        }
        #expect(taken?.code == .partitionTaken)

        producer.send(.push([1, 7, 3, 9]))
        try await low.wait("low events") { $0.events.count >= 2 }
        try await high.wait("high events") { $0.events.count >= 2 }
        #expect(low.value.events == [100, 300])
        #expect(high.value.events == [700, 900])
        try await a.halt()
        try await b.halt()
        try await producer.halt()
    }
}
