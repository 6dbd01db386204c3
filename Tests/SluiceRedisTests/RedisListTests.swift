//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
@_spi(Internal) import SluiceRedis
import Testing

@Suite("Redis list and reliable-list sources", .timeLimit(.minutes(2)))
struct RedisListTests {
    @Test(arguments: [RedisConfiguration.Mode.list, .reliable])
    func consumesEveryItemOnceThroughAPipeline(mode: RedisConfiguration.Mode) async throws {
        let configuration = try RedisTestEnvironment.configuration("e2e", mode: mode)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(configuration.key, payloads(2500))
        let seen = Recorder<String>()
        let keys = Recorder<String>()
        let pipeline = Pipeline("e2e", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 300) { message in
                seen.append(message.text)
                keys.append(message.metadata.key)
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("2500 handled") { seen.count >= 2500 }
        }
        #expect(seen.count == 2500)
        #expect(Set(seen.all) == Set(payloads(2500).map { String(decoding: $0, as: UTF8.self) }))
        #expect(Set(keys.all) == [configuration.key])
        #expect(try await client.length(configuration.key) == 0)
        if mode == .reliable {
            #expect(try await client.length("\(configuration.key):processing:\(configuration.consumer)") == 0, "all acknowledged")
        }
    }

    // The back-pressure check (the broker holds exactly what the topology may not take,
    // with no slack) is `RedisConformanceTests.backPressureIsExact`, for every mode.

    /// A drain whose note reaches the source stage only after a read finished (the stage's
    /// task waits for a thread while the read thread runs on) must still emit that read:
    /// list mode once lost such a pop on drain under load. Several pipelines with busy
    /// handlers keep the cooperative pool saturated so that the stage lags behind its read
    /// thread, and each drains while reads are going on.
    @Test func aDrainUnderLoadLosesNoPop() async throws {
        let rounds = 6
        let pipelinesPerRound = 4
        let itemsPerPipeline = 3000
        for round in 0..<rounds {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<pipelinesPerRound {
                    group.addTask {
                        try await Self.drainOnce(label: "round \(round) pipeline \(index)", items: itemsPerPipeline)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    private static func drainOnce(label: String, items: Int) async throws {
        let configuration = try RedisTestEnvironment.configuration("drain-load", mode: .list)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(configuration.key, payloads(items))
        let handled = Recorder<String>()
        let pipeline = Pipeline("drain-load", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 20) { message in
                // Busy (not sleeping): holds a cooperative thread like real work does.
                let until = ContinuousClock.now + .microseconds(40)
                while ContinuousClock.now < until {}
                handled.append(message.text)
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("\(label): some handled") { handled.count >= Int.random(in: 50...400) }
        }
        let left = try await client.length(configuration.key)
        #expect(left + handled.count == items, "\(label): \(items - left - handled.count) popped items neither handled nor back in the list")
        #expect(Set(handled.all).count == handled.count, "\(label): handled twice")
    }

    @Test func dispositionsRequeueDeadLetterAndDrop() async throws {
        for mode in [RedisConfiguration.Mode.list, .reliable] {
            let configuration = try RedisTestEnvironment.configuration("dispositions", mode: mode)
            let client = RedisClient(configuration: configuration)
            try await client.push(configuration.key, [Array("ok".utf8), Array("dead".utf8), Array("drop".utf8), Array("again".utf8)])
            let requeued = Recorder<Int>()
            var policy = PipelineConfiguration()
            policy.failurePolicy = .deadLetter
            let pipeline = Pipeline("dispositions", source: RedisSource(configuration: configuration), configuration: policy) {
                Processors(concurrency: 1, maxDemand: 10) { message in
                    switch message.text {
                    case "dead": throw TestFailure("poison")
                    case "drop": message.fail(TestFailure("unwanted"), disposition: .drop)
                    case "again":
                        requeued.append(1)
                        // Requeued once, then accepted.
                        if requeued.count == 1 { message.fail(TestFailure("later"), disposition: .requeue) }
                    default: break
                    }
                }
            }
            try await withRunningPipeline(pipeline) {
                try await waitUntil("requeued item came back") { requeued.count >= 2 }
                try await waitUntil("dead-lettered") { try await client.length("\(configuration.key):dead") == 1 }
            }
            #expect(try await client.strings("\(configuration.key):dead") == ["dead"], "\(mode)")
            #expect(try await client.length(configuration.key) == 0, "\(mode)")
            if mode == .reliable {
                #expect(try await client.length("\(configuration.key):processing:\(configuration.consumer)") == 0)
            }
            await client.cleanUp(configuration.key)
            await client.close()
        }
    }

    @Test func reliableModeLosesNothingWhenCancelledMidBatchAndRestarted() async throws {
        var base = try RedisTestEnvironment.configuration("cancel", mode: .reliable)
        base.consumer = "worker-1"
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let all = payloads(3000)
        try await client.push(configuration.key, all)
        let handled = Recorder<String>()
        let source = RedisSource(configuration: configuration)
        let first = Pipeline("cancel-1", source: source) {
            Processors(concurrency: 2, maxDemand: 200) { message in
                try await Task.sleep(for: .milliseconds(1))
                handled.append(message.text)
            }
        }
        try await withTimeLimit(.seconds(20)) {
            let run = Task { try await first.run() }
            try await waitUntil("some handled") { handled.count >= 300 }
            run.cancel()
            _ = await run.result
        }
        let afterFirst = handled.count
        #expect(afterFirst < 3000)
        // A second run (same consumer name) finishes the rest; nothing is lost.
        let second = Pipeline("cancel-2", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 200) { message in handled.append(message.text) }
        }
        try await withRunningPipeline(second) {
            try await waitUntil("everything handled") { Set(handled.all).count >= 3000 }
        }
        #expect(Set(handled.all) == Set(all.map { String(decoding: $0, as: UTF8.self) }))
        #expect(try await client.length(configuration.key) == 0)
        #expect(try await client.length("\(configuration.key):processing:worker-1") == 0)
    }

    @Test func reaperReturnsTheItemsOfADeadConsumer() async throws {
        var base = try RedisTestEnvironment.configuration("reaper", mode: .reliable)
        base.reapInterval = .milliseconds(200)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        // A consumer that died with three items in its processing list: registered, no
        // liveness key (it expired).
        try await client.push("\(configuration.key):processing:dead-worker", payloads(3, prefix: "orphan"))
        _ = try await client.command(["SADD", "\(configuration.key):consumers", "dead-worker"])
        // And a live one whose items must stay.
        try await client.push("\(configuration.key):processing:live-worker", payloads(2, prefix: "busy"))
        _ = try await client.command(["SADD", "\(configuration.key):consumers", "live-worker"])
        _ = try await client.command(["SET", "\(configuration.key):alive:live-worker", "1", "PX", "60000"])
        let seen = Recorder<String>()
        let pipeline = Pipeline("reaper", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in seen.append(message.text) }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("orphans handled") { seen.count >= 3 }
        }
        #expect(Set(seen.all) == ["orphan0", "orphan1", "orphan2"])
        #expect(try await client.length("\(configuration.key):processing:dead-worker") == 0)
        #expect(try await client.length("\(configuration.key):processing:live-worker") == 2)
    }
}
