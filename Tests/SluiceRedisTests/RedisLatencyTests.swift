//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceTestKit
@_spi(Internal) import SluiceRedis
import Synchronization
import Testing

/// Idle latency and the source's limit: an item pushed to an empty list or stream reaches
/// the handler within a few milliseconds (the blocking read wakes at once), and a source with
/// a limit never takes more and then ends by itself.
@Suite("Redis idle latency and limit", .serialized, .timeLimit(.minutes(1)))
struct RedisLatencyTests {
    /// The median of 10 pushes to an empty key, from the push's reply to the handler: 5 ms
    /// at most. (Up to five rounds of 10, the best median counting: the suites share two
    /// cores, and a round that another suite's burst delayed says nothing about the source.)
    @Test(arguments: [RedisConfiguration.Mode.list, .reliable, .stream])
    func theFirstItemOnAnEmptyKeyArrivesWithinFiveMilliseconds(mode: RedisConfiguration.Mode) async throws {
        var base = try RedisTestEnvironment.configuration("latency", mode: mode)
        base.blockTimeout = .seconds(2)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        if mode == .stream {
            _ = try await client.command(["XGROUP", "CREATE", configuration.key, configuration.group, "$", "MKSTREAM"])
        }
        let arrived = Recorder<ContinuousClock.Instant>()
        let pipeline = Pipeline("latency", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { _ in arrived.append(.now) }
        }
        let medians = try await withRunningPipeline(pipeline) {
            var medians: [Duration] = []
            var round = 0
            while medians.count < 5 && (medians.min() ?? .seconds(1)) > .milliseconds(5) {
                medians.append(try await Self.medianLatency(of: 10, after: &round, mode: mode, configuration, client, arrived))
            }
            return medians
        }
        #expect(medians.min()! <= .milliseconds(5), "medians of 10 pushes: \(medians)")
    }

    private static func medianLatency(
        of pushes: Int,
        after round: inout Int,
        mode: RedisConfiguration.Mode,
        _ configuration: RedisConfiguration,
        _ client: RedisClient,
        _ arrived: Recorder<ContinuousClock.Instant>
    ) async throws -> Duration {
        var latencies: [Duration] = []
        for _ in 0..<pushes {
            round += 1
            let round = round
            // The reader is waiting in its blocking read again by now.
            try await Task.sleep(for: .milliseconds(50))
            if mode == .stream {
                _ = try await client.command(["XADD", configuration.key, "*", "payload", "x\(round)"])
            } else {
                _ = try await client.command(["RPUSH", configuration.key, "x\(round)"])
            }
            let pushed = ContinuousClock.now
            try await waitUntil("item \(round) handled") { arrived.count >= round }
            latencies.append(arrived.all[round - 1] - pushed)
        }
        return latencies.sorted()[latencies.count / 2]
    }

    /// A source with a limit of 250 on a list of 1000, with demand far beyond it: it takes
    /// exactly 250 and the pipeline ends by itself; the list keeps the rest in order.
    @Test(arguments: [RedisConfiguration.Mode.list, .reliable, .stream])
    func aLimitedSourceTakesItsLimitAndEnds(mode: RedisConfiguration.Mode) async throws {
        var base = try RedisTestEnvironment.configuration("limit", mode: mode)
        base.limit = 250
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.fill(configuration, payloads(1000))
        let handled = Recorder<String>()
        let pipeline = Pipeline("limit", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 4, maxDemand: 1000) { message in handled.append(message.text) }
        }
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        #expect(handled.count == 250)
        if mode == .stream {
            let pending = try await client.command(["XPENDING", configuration.key, configuration.group])
            #expect(pending.array?.first?.integer == 0)
        } else {
            #expect(try await client.strings(configuration.key) == payloads(1000)[250...].map { String(decoding: $0, as: UTF8.self) })
        }
    }
}
