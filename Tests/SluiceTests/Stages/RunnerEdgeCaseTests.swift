//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import Sluice
import Testing

@Suite("Killing stages", .timeLimit(.minutes(1)))
struct KillTests {
    @Test("killing a concurrent consumer cancels its running handlers instead of waiting for them")
    func killCancelsConcurrentHandlers() async throws {
        let started = Observed(0)
        let cancelled = Observed(0)
        let producer = try await (0..<100).startProducer()
        let consumer = try await StageHandle.start(
            ConcurrentConsumer<Int> { _ in
                started.increment()
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    cancelled.increment()
                    throw error
                }
            },
            subscribeTo: [.init(producer, options: .init(maxDemand: 4))]
        )
        try await started.wait("4 handlers running") { $0 == 4 }
        let reason = try await withTimeout("kill returns") { await consumer.kill() }
        #expect(reason == .killed)
        #expect(try await cancelled.wait("all 4 handlers cancelled") { $0 == 4 } == 4)
        await producer.stop()
    }

    @Test("killing a stage whose callback awaits ends it with killed")
    func killInterruptsAnAwaitingCallback() async throws {
        struct Sleeper: Consumer {
            typealias Input = Int
            let entered: Observed<Int>
            mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
                self.entered.increment()
                try await Task.sleep(for: .seconds(3600))
            }
        }
        let entered = Observed(0)
        let producer = try await (0..<10).startProducer()
        let consumer = try await StageHandle.start(Sleeper(entered: entered), subscribeTo: [.init(producer)])
        try await entered.wait("callback entered") { $0 == 1 }
        let reason = try await withTimeout("kill returns") { await consumer.kill() }
        guard case .killed = reason else {
            Issue.record("expected killed, got \(reason)")
            return
        }
        await producer.stop()
    }
}

@Suite("Asking by hand in automatic mode", .timeLimit(.minutes(1)))
struct AutomaticExtraAskTests {
    struct AsksOnce: Consumer {
        typealias Input = Int
        let received: Observed<Int>
        var asked = false
        mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
            if !self.asked {
                self.asked = true
                context.ask(4, on: subscription)
            }
            self.received.increment(by: events.count)
        }
    }

    @Test("an extra ask from a callback is counted in the subscription's pending demand")
    func extraAskIsAccounted() async throws {
        let demands = Observed<[Int]>([])
        let producer = try await StageHandle.start(ScriptedProducer(.queue, demands: demands))
        let received = Observed(0)
        let consumer = try await StageHandle.start(
            AsksOnce(received: received),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, minDemand: 5))]
        )
        producer.send(.push(Array(0..<30)))
        try await received.wait("all 30 events") { $0 == 30 }
        // Barriers: the consumer has sent every ask it will send, then the producer has seen them.
        _ = try await consumer.statistics()
        _ = try await producer.statistics()
        let asked = demands.value.reduce(0, +)
        let statistics = try await consumer.statistics()
        #expect(asked > 30)
        #expect(statistics.upstreamSubscriptions == 1)
        // What the consumer believes is still coming is exactly what it asked and did not get.
        #expect(statistics.pendingUpstreamDemand == asked - 30)
        await consumer.stop()
        await producer.stop()
    }
}
