//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization
import SluiceTestKit
import Testing

@testable import Sluice

@Suite("ConcurrentConsumer")
struct ConcurrentConsumerTests {
    /// Counts handlers running at once and the most ever seen.
    final class Concurrency: Sendable {
        private let running = Atomic<Int>(0)
        private let peak = Atomic<Int>(0)
        let started = Observed<[Int]>([])
        let finished = Observed<[Int]>([])

        var maximum: Int { self.peak.load(ordering: .sequentiallyConsistent) }
        var current: Int { self.running.load(ordering: .sequentiallyConsistent) }

        func enter(_ event: Int) {
            let now = self.running.add(1, ordering: .sequentiallyConsistent).newValue
            _ = self.peak.max(now, ordering: .sequentiallyConsistent)
            self.started.append(event)
        }

        func leave(_ event: Int) {
            self.running.subtract(1, ordering: .sequentiallyConsistent)
            self.finished.append(event)
        }
    }

    @Test("runs a task per event, never more than maxDemand at once, and survives handler errors")
    func boundedConcurrency() async throws {
        let total = 40
        let maxDemand = 4
        let concurrency = Concurrency()
        let gate = Gate()
        let failures = Observed<[Int]>([])
        // At every ask: what the consumer asked in total, minus the handlers that finished, is
        // what it holds (running or on the way). Handlers count themselves finished before the
        // consumer hears of it, so this can only overestimate what the consumer knows.
        let overAsks = Observed<[String]>([])
        let ledger = DemandLedger(onAsk: { _, account in
            let finished = concurrency.finished.value.count
            if account.asked - finished > maxDemand {
                overAsks.append("asked \(account.asked) with \(finished) finished")
            }
        })
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
        let consumer = try await StageHandle.start(
            ConcurrentConsumer<Int>(
                onFailure: { event, _ in failures.append(event) },
                handler: { event in
                    concurrency.enter(event)
                    await gate.enter()
                    concurrency.leave(event)
                    if event % 5 == 0 { throw TestFailure(label: "event \(event)") }
                }
            ),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: maxDemand))]
        )
        // Phase 1: with the gate closed, exactly maxDemand handlers start and no more events are
        // asked for or sent.
        try await concurrency.started.wait("\(maxDemand) handlers to start") { $0.count == maxDemand }
        try await consumer.settle()
        try await producer.settle()
        #expect(concurrency.current == maxDemand)
        #expect(try await producer.stats().eventsOut == maxDemand)
        let subscription = try #require(ledger.allAccounts.keys.first)
        #expect(ledger.account(subscription).asked == maxDemand)

        // Phase 2: let the handlers through one at a time. Handlers finish only as permits are
        // released, so a consumer asking for more than it may hold is caught at its ask.
        for released in 1...total {
            gate.release()
            try await concurrency.finished.wait("\(released) handlers to finish") { $0.count >= released }
        }
        gate.open()
        #expect(concurrency.maximum == maxDemand)
        #expect(overAsks.value == [])
        #expect(ledger.violations == [])

        // Handler errors were reported and did not stop the consumer.
        try await failures.wait("the failures of every fifth event") { $0.count >= total / 5 }
        #expect(failures.value.allSatisfy { $0 % 5 == 0 })
        try await consumer.settle()
        #expect(consumer.stopReason == nil)
        try await producer.halt()
        #expect("\(try await consumer.ended())" == "shutdown")
    }

    @Test("asks again once running plus pending falls to minDemand, back up to maxDemand")
    func reAsking() async throws {
        let concurrency = Concurrency()
        let gate = Gate()
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
        let consumer = try await StageHandle.start(
            ConcurrentConsumer<Int> { event in
                concurrency.enter(event)
                await gate.enter()
                concurrency.leave(event)
            },
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 6, minDemand: 3))]
        )
        try await concurrency.started.wait("6 handlers") { $0.count == 6 }
        let subscription = try #require(ledger.allAccounts.keys.first)
        // Finishing 1, 2 leaves 5, 4 outstanding: above minDemand, nothing asked.
        gate.release(2)
        try await concurrency.finished.wait("2 finished") { $0.count == 2 }
        try await consumer.settle()
        try await consumer.settle()
        #expect(ledger.account(subscription).asks == [6])
        // Finishing the third leaves 3 = minDemand: ask 3 more.
        gate.release()
        try await concurrency.started.wait("3 more handlers") { $0.count == 9 }
        #expect(ledger.account(subscription).asks == [6, 3])
        #expect(concurrency.current == 6)
        gate.open()
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("stopping waits for the running tasks")
    func stopWaitsForTasks() async throws {
        let concurrency = Concurrency()
        let gate = Gate()
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
        let consumer = try await StageHandle.start(
            ConcurrentConsumer<Int> { event in
                concurrency.enter(event)
                await gate.enter()
                concurrency.leave(event)
            },
            subscribeTo: [.init(producer, options: .init(maxDemand: 3))]
        )
        try await concurrency.started.wait("3 handlers") { $0.count == 3 }
        let finishedAtEnd = Task {
            _ = await consumer.stop()
            return concurrency.finished.value.count
        }
        // Once the mailbox is closed the stage is ending and waits for its tasks.
        try await eventually("the consumer to start ending") {
            !consumer.send(.finished(task: -1, subscription: SubscriptionID(rawValue: 0)))
        }
        #expect(concurrency.finished.value.isEmpty)
        gate.open()
        let finished = try await withTimeout("the consumer to stop") { await finishedAtEnd.value }
        #expect(finished == 3, "the stage ended before its tasks finished")
        try await producer.halt()
    }
}
