//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import Sluice
import Testing

@Suite("Killing stages")
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
        #expect(reason.isNormalOrShutdown)
        #expect(try await cancelled.wait("all 4 handlers cancelled") { $0 == 4 } == 4)
        await producer.stop()
    }

    @Test("killing a stage whose callback awaits ends it with shutdown")
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
        guard case .shutdown = reason else {
            Issue.record("expected shutdown, got \(reason)")
            return
        }
        await producer.stop()
    }
}
