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
import Synchronization
import Testing

/// What the source owes to the connector pieces: a drain does not wait out a blocking read,
/// and what was read and not settled stays within the window.
@Suite("Redis source on the connection loop", .timeLimit(.minutes(1)))
struct RedisConnectorTests {
    /// With a 10 s block timeout, a drain that had to wait for the blocking read to time out
    /// would take 10 s; `CLIENT UNBLOCK` ends it at once.
    @Test(arguments: [RedisConfiguration.Mode.list, .reliable, .stream])
    func aDrainEndsABlockingReadAtOnce(mode: RedisConfiguration.Mode) async throws {
        var base = try RedisTestEnvironment.configuration("unblock", mode: mode)
        base.blockTimeout = .seconds(10)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let handled = Recorder<String>()
        let pipeline = Pipeline("unblock", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in handled.append(message.text) }
        }
        let drained = Mutex<ContinuousClock.Instant?>(nil)
        let ended = try await withThrowingTaskGroup(of: ContinuousClock.Instant.self) { group in
            group.addTask {
                try await pipeline.run()
                return .now
            }
            // The key is empty: the reader is waiting in its blocking read by now.
            try await Task.sleep(for: .milliseconds(500))
            drained.withLock { $0 = .now }
            pipeline.drain()
            let ended = try await group.next()!
            return ended
        }
        let took = ended - drained.withLock { $0! }
        #expect(took < .seconds(2), "the drain took \(took) against a 10 s block timeout")
        #expect(handled.count == 0)
    }

    /// Slow handlers with more demand than the window: the reliable processing list (what was
    /// moved and not settled, reads in flight included) never holds more than `maxInFlight`.
    @Test func unsettledItemsStayWithinTheWindow() async throws {
        var base = try RedisTestEnvironment.configuration("window", mode: .reliable)
        base.maxInFlight = 20
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(configuration.key, payloads(300))
        let handled = Recorder<String>()
        let pipeline = Pipeline("window", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 50) { message in
                try await Task.sleep(for: .milliseconds(2))
                handled.append(message.text)
            }
        }
        let processing = "\(configuration.key):processing:\(configuration.consumer)"
        let most = try await withRunningPipeline(pipeline) {
            var most = 0
            while handled.count < 300 {
                most = max(most, try await client.length(processing))
                try await Task.sleep(for: .milliseconds(1))
            }
            return most
        }
        #expect(most <= 20, "the processing list held \(most) items against a window of 20")
        #expect(most > 0, "the sampling saw the reads")
        #expect(Set(handled.all).count == 300)
        #expect(try await client.length(processing) == 0)
    }

    /// Issue 13: without ``RedisConfiguration/maxInFlight`` the window is the pipeline's
    /// (here 2 × maxDemand 50 = 100), not a fixed 100 000: fast handlers settle faster than
    /// Redis trims or acknowledges, and what Redis holds unsettled (the reliable processing
    /// list, the stream's pending entries: what a `kill -9` would deliver again) stays within
    /// it while 5 000 items pass.
    @Test(arguments: [RedisConfiguration.Mode.reliable, .stream])
    func withoutMaxInFlightTheWindowIsThePipelines(mode: RedisConfiguration.Mode) async throws {
        let configuration = try RedisTestEnvironment.configuration("pipeline-window", mode: mode)
        #expect(configuration.maxInFlight == nil)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let total = 5000
        try await client.fill(configuration, payloads(total))
        if mode == .stream {
            // The group exists before the pipeline starts, so the sampling can read it from the first moment.
            _ = try await client.command(["XGROUP", "CREATE", configuration.key, configuration.group, "0"])
        }
        let handled = Atomic<Int>(0)
        let pipeline = Pipeline("pipeline-window", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 50) { _ in handled.add(1, ordering: .relaxed) }
        }
        #expect(pipeline.window == 100)
        let processing = "\(configuration.key):processing:\(configuration.consumer)"
        let most = try await withRunningPipeline(pipeline) {
            var most = 0
            while handled.load(ordering: .relaxed) < total {
                let held = mode == .stream
                    ? try await client.command(["XPENDING", configuration.key, configuration.group]).array?.first?.integer ?? 0
                    : try await client.length(processing)
                most = max(most, held)
                try await Task.sleep(for: .milliseconds(1))
            }
            return most
        }
        #expect(most <= 100, "Redis held \(most) unsettled items against the pipeline's window of 100")
        #expect(most > 0, "the sampling saw the reads")
        #expect(handled.load(ordering: .relaxed) == total)
    }

    @Test func windowOptionsOutsideTheirRangeAreTypedErrors() throws {
        var configuration = RedisConfiguration(key: "k")
        configuration.maxInFlight = 0
        #expect(throws: RedisError.self) { try configuration.validate() }
        configuration.maxInFlight = 10
        configuration.maxInFlightBytes = 100
        let error = try #require(throws: RedisError.self) { try configuration.validate() }
        #expect(error.code == .invalidConfiguration)
        #expect(error.message.contains("maxInFlightBytes"))
        configuration.maxInFlightBytes = 1 << 20
        try configuration.validate()
    }
}
