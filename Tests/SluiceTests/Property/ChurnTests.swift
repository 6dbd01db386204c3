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

// A randomized property test of subscriptions that come and go while events flow: consumers
// cancel and subscribe again, a producer-consumer does the same upstream, and the producer
// cancels random subscribers. Reproduce one case with
//
//   SLUICE_FUZZ_SEED=0x1234abcd swift test --filter ChurnTests

/// Emits `total` unique numbers against demand and then nothing more; never ends by itself, so
/// what it emitted is never lost to its end.
struct ChurnProducer: Producer {
    typealias Output = Int

    let total: Int
    var random: SplitMix64
    var next = 0
    var owed = 0

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) async {
        self.owed += demand
        await self.random.yields(upTo: 2)
        // Pays everything owed, in one or two batches.
        let count = min(self.total - self.next, self.owed)
        guard count > 0 else { return }
        let first = self.random.chance(0.5) ? count : self.random.int(0...count)
        context.emit(Array(self.next..<(self.next + first)))
        if first < count { context.emit(Array((self.next + first)..<(self.next + count))) }
        self.next += count
        self.owed -= count
    }
}

/// A producer-consumer passing events through and recording every event it handled.
struct ChurnRelay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    let handled: Observed<[Int]>
    var random: SplitMix64

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) async {
        self.handled.update { $0.append(contentsOf: events) }
        await self.random.yields(upTo: 2)
        context.emit(events)
    }
}

/// A consumer recording every event it handled; never ends by itself.
struct ChurnConsumer: Consumer {
    typealias Input = Int

    let received: Observed<[Int]>
    var random: SplitMix64

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        self.received.update { $0.append(contentsOf: events) }
        await self.random.yields(upTo: 2)
    }
}

@Suite("Random subscription churn", .serialized, .timeLimit(.minutes(2)))
struct ChurnTests {
    static var seeds: [UInt64] {
        var generator = SplitMix64(seed: 0xC4_0A_11_CE)
        let all = FuzzSeeds.all
        return FuzzSeeds.environment("SLUICE_FUZZ_SEED") != nil ? all : (0..<25).map { _ in generator.next() }
    }

    @Test(
        "under random cancels, resubscribes and producer-side cancels, no subscription receives more than it asked, and every event arrives exactly once",
        arguments: ChurnTests.seeds
    )
    func churn(seed: UInt64) async throws {
        var random = SplitMix64(seed: seed)
        let total = random.int(300...3_000)
        let withRelay = random.chance(0.6)
        let consumerCount = random.int(1...4)
        let steps = random.int(10...60)
        let label = "seed 0x\(String(seed, radix: 16)): \(total) events, relay \(withRelay), \(consumerCount) consumers, \(steps) steps"
        let ledger = DemandLedger(keepEvents: true)

        let producer = try await StageHandle.start(
            ChurnProducer(total: total, random: SplitMix64(seed: random.next())),
            options: .init(name: "P")
        )
        let relayHandled = Observed<[Int]>([])
        let relay: StageHandle<ChurnRelay>? =
            withRelay
            ? try await StageHandle.start(
                ChurnRelay(handled: relayHandled, random: SplitMix64(seed: random.next())),
                options: .init(name: "R")
            ) : nil
        let upstream = relay.map { ledger.watch($0) } ?? ledger.watch(producer)
        func options(_ random: inout SplitMix64) -> SubscriptionOptions<Int> {
            let maxDemand = random.int(1...120)
            return .init(maxDemand: maxDemand, minDemand: random.int(0...(maxDemand - 1)), cancel: .temporary)
        }
        var relaySubscriptions: [SubscriptionID] = []
        if let relay {
            relaySubscriptions.append(try await relay.subscribe(to: ledger.watch(producer), options: options(&random)))
        }
        var consumers: [StageHandle<ChurnConsumer>] = []
        var received: [Observed<[Int]>] = []
        for index in 0..<consumerCount {
            let log = Observed<[Int]>([])
            let consumer = try await StageHandle.start(
                ChurnConsumer(received: log, random: SplitMix64(seed: random.next())),
                options: .init(name: "C\(index)")
            )
            try await consumer.subscribe(to: upstream, options: options(&random))
            consumers.append(consumer)
            received.append(log)
        }

        // Churn while events flow.
        for _ in 0..<steps {
            let index = random.int(0...(consumerCount - 1))
            switch random.int(0...5) {
            case 0, 1:
                // A consumer cancels its subscription (if it has one) and maybe subscribes again.
                let status = try await consumers[index].status()
                if let subscription = status.producers.first(where: { !$0.isCancelling })?.id {
                    consumers[index].cancel(subscription, reason: random.chance(0.5) ? .normal : .shutdown)
                }
                if random.chance(0.5) {
                    _ = try? await consumers[index].subscribe(to: upstream, options: options(&random))
                }
            case 2:
                // A consumer without a subscription subscribes again.
                if try await consumers[index].status().producers.allSatisfy(\.isCancelling) {
                    // May still be refused as a duplicate: a producer's cancel may be on its way.
                    _ = try? await consumers[index].subscribe(to: upstream, options: options(&random))
                }
            case 3:
                // The producer (or the relay) cancels one of its subscribers.
                let stage: ProducerSide = relay.map { .relay($0) } ?? .producer(producer)
                let subscribers = try await stage.status().subscribers
                if !subscribers.isEmpty {
                    stage.cancel(subscribers[random.int(0...(subscribers.count - 1))].id)
                }
            case 4:
                // The relay cancels its own upstream subscription and subscribes again.
                if let relay, let subscription = try await relay.status().producers.first(where: { !$0.isCancelling })?.id {
                    if random.chance(0.5) {
                        producer.cancel(subscription, reason: .normal)  // the producer's side
                    } else {
                        relay.cancel(subscription, reason: .normal)  // the relay's own
                    }
                    // Refused as a duplicate while the producer's cancel is on its way.
                    if let again = try? await relay.subscribe(to: ledger.watch(producer), options: options(&random)) {
                        relaySubscriptions.append(again)
                    }
                }
            default:
                await random.yields(upTo: 20)
            }
        }

        // Everyone subscribes again; the rest must now arrive. A stage whose last subscription
        // is still ending (a producer-consumer handles the end only after the input it queued
        // before it) subscribes once the end was handled.
        let logs = received
        let relaySubscribed = Observed<[SubscriptionID]>([])
        let subscribeOptions = (0...consumerCount).map { _ in options(&random) }
        let stages = consumers
        do {
            try await eventually("every event to arrive (\(label))", seconds: 20) {
                if let relay, try await relay.status().producers.isEmpty,
                    let again = try? await relay.subscribe(to: ledger.watch(producer), options: subscribeOptions[consumerCount])
                {
                    relaySubscribed.append(again)
                }
                for (index, consumer) in stages.enumerated() where try await consumer.status().producers.isEmpty {
                    _ = try? await consumer.subscribe(to: upstream, options: subscribeOptions[index])
                }
                return logs.map(\.value.count).reduce(0, +) >= total
            }
        } catch {
            var lines = ["stuck: \(label)"]
            lines.append("producer: \(try await producer.status())")
            if let relay { lines.append("relay: \(try await relay.status())") }
            for consumer in consumers { lines.append("\(consumer.name): \(try await consumer.status())") }
            lines.append("received \(received.map(\.value.count))")
            Issue.record(Comment(rawValue: lines.joined(separator: "\n")))
            throw error
        }
        relaySubscriptions += relaySubscribed.value
        for consumer in consumers { try await consumer.settle() }

        #expect(ledger.violations == [], "\(label)")
        let all = received.flatMap(\.value).sorted()
        #expect(all == Array(0..<total), "\(label): every event exactly once (\(all.count) received)")
        if relay != nil {
            // Nothing the relay received was lost: it handled exactly what the producer sent it.
            let sent = ledger.allAccounts.filter { relaySubscriptions.contains($0.key) }.values.flatMap(\.events).sorted()
            #expect(relayHandled.value.sorted() == sent, "\(label)")
            #expect(sent == Array(0..<total), "\(label)")
        }
        for consumer in consumers { try await consumer.halt() }
        if let relay { try await relay.halt() }
        try await producer.halt()
    }

    /// The stage whose subscribers the churn cancels.
    enum ProducerSide {
        case producer(StageHandle<ChurnProducer>)
        case relay(StageHandle<ChurnRelay>)

        func status() async throws -> StageStatus {
            switch self {
            case .producer(let handle): return try await handle.status()
            case .relay(let handle): return try await handle.status()
            }
        }

        func cancel(_ subscription: SubscriptionID) {
            switch self {
            case .producer(let handle): handle.cancel(subscription, reason: .normal)
            case .relay(let handle): handle.cancel(subscription, reason: .normal)
            }
        }
    }
}
