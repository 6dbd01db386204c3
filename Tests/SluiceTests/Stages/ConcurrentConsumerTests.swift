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

@Suite("ConcurrentConsumer", .timeLimit(.minutes(1)))
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

    /// An endless producer behind a ledger, and a concurrent consumer whose handlers wait on a
    /// gate, so the test decides when each task finishes.
    struct Rig {
        let producer: StageHandle<ScriptedProducer>
        let consumer: StageHandle<ConcurrentConsumer<Int>>
        let ledger: DemandLedger
        /// The consumer's asks, in order (there is one subscription).
        let askLog: Observed<[Int]>
        let concurrency: Concurrency
        let gate: Gate
        let subscription: SubscriptionID

        /// Starts the rig and waits until the first `maxDemand` handlers run.
        static func start(
            maxDemand: Int,
            minDemand: Int,
            restart: RestartPolicy = .temporary,
            maxRestarts: Int = 3,
            failing: @escaping @Sendable (Int) -> Bool = { _ in false }
        ) async throws -> Rig {
            let concurrency = Concurrency()
            let gate = Gate()
            let askLog = Observed<[Int]>([])
            let ledger = DemandLedger(onAsk: { _, account in askLog.update { $0 = account.asks } })
            let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
            let consumer = try await StageHandle.start(
                ConcurrentConsumer<Int>(restart: restart, maxRestarts: maxRestarts, within: .seconds(3600)) { event in
                    concurrency.enter(event)
                    await gate.enter()
                    concurrency.leave(event)
                    if failing(event) { throw TestFailure(label: "event \(event)") }
                },
                subscribeTo: [
                    .init(ledger.watch(producer), options: .init(maxDemand: maxDemand, minDemand: minDemand))
                ]
            )
            try await concurrency.started.wait("\(maxDemand) handlers to start") { $0.count == maxDemand }
            let subscription = try #require(ledger.allAccounts.keys.first)
            return Rig(
                producer: producer,
                consumer: consumer,
                ledger: ledger,
                askLog: askLog,
                concurrency: concurrency,
                gate: gate,
                subscription: subscription
            )
        }

        /// Every ask of the consumer so far, in order.
        var asks: [Int] { self.askLog.value }

        /// Lets one more handler finish and waits until it did.
        func finishOne() async throws {
            let target = self.concurrency.finished.value.count + 1
            self.gate.release()
            try await self.concurrency.finished.wait("\(target) handlers to finish") { $0.count >= target }
        }

        /// Waits until the consumer asked `count` times, then until the handlers of everything
        /// asked so far are running.
        func waitForAsks(_ count: Int) async throws {
            let asks = try await self.askLog.wait("\(count) asks") { $0.count >= count }
            let asked = asks.prefix(count).reduce(0, +)
            try await self.concurrency.started.wait("\(asked) handlers to start") { $0.count >= asked }
        }

        /// A barrier after a finished handler: the consumer and then the producer handled
        /// everything queued so far.
        func settle() async throws {
            try await self.consumer.settle()
            try await self.producer.settle()
            try await self.consumer.settle()
        }

        func end() async throws {
            self.gate.open()
            try await self.consumer.halt()
            try await self.producer.halt()
            #expect(self.ledger.violations == [])
        }
    }

    /// One ask-sequence case: `maxDemand`/`minDemand`, and whether even events' handlers throw.
    struct AskCase: Sendable, CustomTestStringConvertible {
        let maxDemand: Int
        let minDemand: Int
        let failEven: Bool
        /// The asks after the first: `minDemand` at a time, or 1 at a time for `minDemand` 0.
        var reask: Int { max(self.minDemand, 1) }
        var testDescription: String { "\(self.maxDemand)/\(self.minDemand)\(self.failEven ? ", failing handlers" : "")" }
    }

    @Test(
        "asks maxDemand, then exactly minDemand each time that many tasks finished since the last ask",
        arguments: [
            // 3/2 asks 3, then 2 once two finished (failed handlers free their slots too).
            AskCase(maxDemand: 3, minDemand: 2, failEven: true),
            // 10/2 asks 10, then 2 after every 2 finished: 9 or 10 tasks run all along.
            AskCase(maxDemand: 10, minDemand: 2, failEven: false),
            AskCase(maxDemand: 10, minDemand: 5, failEven: false),
            // minDemand 0 (ConsumerSupervisor: `pending >= 0` always holds): ask 1 per finished task.
            AskCase(maxDemand: 3, minDemand: 0, failEven: false),
        ]
    )
    func askSequence(_ ask: AskCase) async throws {
        let failEven = ask.failEven
        let rig = try await Rig.start(maxDemand: ask.maxDemand, minDemand: ask.minDemand, failing: { failEven && $0 % 2 == 0 })
        #expect(rig.asks == [ask.maxDemand])
        for round in 1...6 {
            let asksBefore = [ask.maxDemand] + Array(repeating: ask.reask, count: round - 1)
            // Fewer finished than minDemand since the last ask: nothing is asked, the slots
            // stay empty.
            for finished in 1..<ask.reask {
                try await rig.finishOne()
                try await rig.settle()
                #expect(rig.asks == asksBefore)
                #expect(rig.concurrency.current == ask.maxDemand - finished)
            }
            // The minDemand-th: ask exactly that many, and maxDemand tasks run again.
            try await rig.finishOne()
            try await rig.waitForAsks(round + 1)
            #expect(rig.asks == asksBefore + [ask.reask])
            #expect(rig.concurrency.current == ask.maxDemand)
        }
        #expect(rig.concurrency.maximum == ask.maxDemand)
        try await rig.end()
    }

    @Test("a transient handler that threw runs again on the same event and keeps its slot: nothing is asked for it")
    func restartKeepsItsSlot() async throws {
        // Every event's first run throws, its second returns.
        let runs = Observed<[Int: Int]>([:])
        let rig = try await Rig.start(maxDemand: 2, minDemand: 1, restart: .transient, maxRestarts: 100) { event in
            runs.update { $0[event, default: 0] += 1 }
            return runs.value[event] == 1
        }
        for released in 1...12 {
            // Each finished run is followed by exactly one start: the rerun, or the event asked
            // for in place of one that succeeded.
            try await rig.finishOne()
            try await rig.concurrency.started.wait("\(2 + released) runs to start") { $0.count >= 2 + released }
            try await rig.settle()
            let finished = rig.concurrency.finished.value
            let succeeded = Dictionary(grouping: finished, by: { $0 }).values.filter { $0.count == 2 }.count
            #expect(rig.asks == [2] + Array(repeating: 1, count: succeeded), "after \(released) finished runs")
            #expect(rig.concurrency.current == 2)
        }
        #expect(rig.concurrency.maximum == 2)
        #expect(runs.value.values.allSatisfy { $0 <= 2 })
        try await rig.end()
    }

    @Test("more reruns than maxRestarts within the period stop the consumer with restartIntensityExceeded")
    func restartIntensity() async throws {
        let rig = try await Rig.start(maxDemand: 1, minDemand: 0, restart: .transient, maxRestarts: 2) { _ in true }
        // Runs 1 and 2 fail and are rerun; the third failure is one rerun too many.
        for run in 1...3 {
            try await rig.finishOne()
            if run < 3 { try await rig.concurrency.started.wait("run \(run + 1)") { $0.count == run + 1 } }
        }
        let reason = try await rig.consumer.ended()
        #expect((reason.error as? SluiceError)?.code == .restartIntensityExceeded, "\(reason)")
        #expect(rig.concurrency.started.value == [0, 0, 0])
        #expect(rig.asks == [1])
        rig.gate.open()
        try await rig.producer.halt()
    }

    @Test("the restart intensity counts the reruns inside a sliding window")
    func restartWindow() {
        let start = ContinuousClock.now
        var intensity = RestartIntensity(maxRestarts: 2, period: .seconds(10))
        let allowed = [0, 5, 11, 12].map { intensity.allowsRestart(at: start + .seconds($0)) }
        // At 11 the rerun at 0 has left the window; at 12 those at 5, 11 and 12 are one too many.
        #expect(allowed == [true, true, true, false])
    }

    @Test("restart options outside their ranges are rejected")
    func restartOptions() {
        #expect(throws: SluiceError.self) { try ConcurrentConsumer<Int>(restart: .permanent) { _ in } }
        #expect(throws: SluiceError.self) { try ConcurrentConsumer<Int>(restart: .transient, maxRestarts: -1) { _ in } }
        #expect(throws: SluiceError.self) { try ConcurrentConsumer<Int>(restart: .transient, within: .zero) { _ in } }
        #expect(throws: Never.self) { try ConcurrentConsumer<Int>(restart: .temporary, maxRestarts: 0) { _ in } }
    }

    @Test("the slot count: finished tasks are asked back once they reach minDemand", arguments: [
        (3, 2, [nil, 2, nil, 2, nil, 2]),
        (10, 2, [nil, 2, nil, 2, nil, 2]),
        (10, 5, [nil, nil, nil, nil, 5, nil, nil, nil, nil, 5]),
        (3, 0, [1, 1, 1, 1]),
        (1, 0, [1, 1]),
    ] as [(Int, Int, [Int?])])
    func slotArithmetic(maxDemand: Int, minDemand: Int, expected: [Int?]) {
        var slots = TaskSlots(maxDemand: maxDemand, minDemand: minDemand)
        slots.started(maxDemand)
        var asks: [Int?] = []
        for _ in expected {
            let ask = slots.finished()
            asks.append(ask)
            // The producer answers every ask in full before the next task finishes.
            if let ask { slots.started(ask) }
            // Running, plus finished and not yet asked back, is maxDemand.
            #expect(slots.running + slots.finishedSinceAsk == maxDemand)
        }
        #expect(asks == expected)
    }

    @Test("stopping waits for the running tasks")
    func stopWaitsForTasks() async throws {
        let rig = try await Rig.start(maxDemand: 3, minDemand: 1)
        let consumer = rig.consumer
        let finished = rig.concurrency.finished
        let finishedAtEnd = Task {
            _ = await consumer.stop()
            return finished.value.count
        }
        // Once the mailbox is closed the stage is ending and waits for its tasks.
        try await eventually("the consumer to start ending") {
            // An unknown task: the consumer ignores it while it still reads its mail.
            !consumer.send(ConcurrentConsumer<Int>.Info(task: -1, subscription: SubscriptionID(rawValue: 0), outcome: .done))
        }
        #expect(finished.value.isEmpty)
        rig.gate.open()
        let finishedWhenStopped = try await withTimeout("the consumer to stop") { await finishedAtEnd.value }
        #expect(finishedWhenStopped == 3, "the stage ended before its tasks finished")
        try await rig.producer.halt()
    }
}
