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

/// The demand protocol through real stages: what a producer is asked, in which steps, and in
/// which slices a consumer sees the events.
@Suite("Demand protocol through stages", .timeLimit(.minutes(1)))
struct DemandProtocolTests {
    /// Runs a generating producer of `total` events into one automatic consumer and returns the
    /// producer's `handleDemand` values and the consumer's slice sizes.
    private func run(maxDemand: Int, minDemand: Int?, total: Int) async throws -> (asks: [Int], slices: [Int], ledger: DemandLedger) {
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: total), demands: demands))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: maxDemand, minDemand: minDemand))]
        )
        // The producer ends after `total`; the permanent consumer follows.
        let reason = try await withTimeout("the consumer to end") { await consumer.waitForTermination() }
        guard case .normal = reason else {
            Issue.record("consumer ended with \(reason)")
            return ([], [], ledger)
        }
        #expect(log.value.events == Array(0..<total))
        #expect(ledger.violations == [])
        return (demands.value, log.value.sliceSizes, ledger)
    }

    @Test("10/5: the producer is asked 10, then 5, 5, …; the consumer sees slices of 5")
    func tenFive() async throws {
        let (asks, slices, ledger) = try await self.run(maxDemand: 10, minDemand: 5, total: 50)
        #expect(asks == [10] + Array(repeating: 5, count: 8))
        #expect(slices == Array(repeating: 5, count: 10))
        // The consumer's own asks, seen on the wire, are the same.
        let account = try #require(ledger.allAccounts.values.first)
        #expect(Array(account.asks.prefix(9)) == [10] + Array(repeating: 5, count: 8))
    }

    @Test("100/20: the producer is asked 100, 80, 100, 80; slices are at most 80")
    func hundredTwenty() async throws {
        let (asks, slices, _) = try await self.run(maxDemand: 100, minDemand: 20, total: 540)
        #expect(asks == [100, 80, 100, 80, 100, 80])
        #expect(slices == [80, 20, 80, 80, 20, 80, 80, 20, 80])
    }

    @Test("default 1000/500: asks 1000, then 500s; slices of 500")
    func defaults() async throws {
        let (asks, slices, _) = try await self.run(maxDemand: 1000, minDemand: nil, total: 3000)
        #expect(asks == [1000, 500, 500, 500, 500])
        #expect(slices == Array(repeating: 500, count: 6))
    }

    @Test("maxDemand 1: one event at a time")
    func one() async throws {
        let (asks, slices, _) = try await self.run(maxDemand: 1, minDemand: nil, total: 20)
        #expect(asks == Array(repeating: 1, count: 20))
        #expect(slices == Array(repeating: 1, count: 20))
    }

    @Test("the re-ask is sent only after the slice was handled")
    func reAskAfterSlice() async throws {
        // A consumer whose handler checks, while it handles a slice, what its subscription has
        // asked so far. The ledger records an ask when the consumer sends it, so an ask sent
        // before the handler ran would be seen here.
        struct Checking: Consumer {
            typealias Input = Int
            let ledger: DemandLedger
            let problems: Observed<[String]>
            var handled = 0

            mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
                let asks = self.ledger.account(subscription).asks
                // Before this slice was handled, at most maxDemand (10) may be outstanding.
                if asks.reduce(0, +) > self.handled + 10 {
                    self.problems.append("asks \(asks) while handling events \(self.handled)..<\(self.handled + events.count)")
                }
                self.handled += events.count
            }
        }
        let ledger = DemandLedger()
        let problems = Observed<[String]>([])
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: 100)))
        let consumer = try await StageHandle.start(
            Checking(ledger: ledger, problems: problems),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 10, minDemand: 5))]
        )
        try await withTimeout("the consumer to end") { _ = await consumer.waitForTermination() }
        #expect(problems.value == [])
        let account = try #require(ledger.allAccounts.values.first)
        #expect(account.asks.reduce(0, +) >= 100)
        #expect(ledger.violations == [])
    }

    @Test("manual mode: nothing is asked automatically, asking 0 sends nothing, each batch is one handler call")
    func manualMode() async throws {
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        let ledger = DemandLedger()
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 10, minDemand: 5, demand: .manual))]
        )
        try await consumer.settle()
        try await producer.settle()
        #expect(demands.value == [])
        #expect(try await log.wait("the consumer's handleSubscribe") { !$0.subscriptions.isEmpty }.subscriptions.first?.demand == .manual)

        consumer.send(.ask(0, nil))
        try await consumer.settle()
        try await producer.settle()
        #expect(demands.value == [])
        let subscription = try #require(try await log.wait("the consumer's handleSubscribe") { !$0.subscriptions.isEmpty }.subscriptions.first?.id)
        #expect(ledger.account(subscription).asks == [], "asking 0 must not send an ask")

        // 30 at once, with maxDemand 10: still one handler call with all 30.
        consumer.send(.ask(30, nil))
        try await log.wait("30 events") { $0.events.count >= 30 }
        #expect(log.value.sliceSizes == [30])
        consumer.send(.ask(3, nil))
        consumer.send(.ask(4, nil))
        try await log.wait("37 events") { $0.events.count >= 37 }
        #expect(log.value.sliceSizes == [30, 3, 4])
        #expect(demands.value == [30, 3, 4])
        try await consumer.settle()
        try await producer.settle()
        // Nothing asked behind the stage's back.
        #expect(demands.value == [30, 3, 4])
        #expect(ledger.account(subscription).asks == [30, 3, 4])
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("a stage returning .manual from handleSubscribe asks only what it asks itself")
    func manualFromHandleSubscribe() async throws {
        // Asks 7 from handleSubscribe and 2 per batch afterwards.
        struct SelfAsking: Consumer {
            typealias Input = Int
            let log: Observed<ConsumerLog>

            mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
                self.log.update { $0.subscriptions.append(subscription) }
                context.ask(7, on: subscription.id)
                return .manual
            }

            mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
                self.log.update { $0.batches.append((subscription, events)) }
                if self.log.value.events.count < 11 { context.ask(2, on: subscription) }
            }
        }
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        let consumer = try await StageHandle.start(
            SelfAsking(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: 4))]  // automatic asked, manual chosen
        )
        try await log.wait("11 events") { $0.events.count >= 11 }
        try await consumer.settle()
        try await producer.settle()
        #expect(demands.value == [7, 2, 2])
        #expect(log.value.sliceSizes == [7, 2, 2])
        let statistics = try await consumer.stats()
        #expect(statistics.pendingUpstreamDemand == 0)
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("a producer never sends a subscription more than it asked, even with events to spare")
    func neverMoreThanAsked() async throws {
        let ledger = DemandLedger()
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(ledger.watch(producer), options: .init(maxDemand: 4, minDemand: 1))]
        )
        // Far more events than asked exist: spontaneously emitted ones and queued ones.
        producer.send(.emitNow(Array(0..<50)))
        producer.send(.push(Array(50..<100)))
        try await log.wait("100 events") { $0.events.count >= 100 }
        #expect(log.value.events == Array(0..<100))
        #expect(ledger.violations == [])
        #expect(log.value.sliceSizes.allSatisfy { $0 <= 3 })
        try await consumer.halt()
        try await producer.halt()
    }
}
