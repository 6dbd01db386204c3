//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CRedisRawLoops
import Foundation
import Sluice
@_spi(Internal) import SluiceRedis

/// Consumes preloaded 100-byte items from Redis through a Sluice pipeline that discards them,
/// and the same data with a raw hiredis loop on one connection, in the same run.
struct RedisSuite {
    let quick: Bool

    private var total: Int { self.quick ? 200_000 : 1_000_000 }
    private var repetitions: Int { self.quick ? 1 : 3 }
    private let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 100)
    private let processors = 2
    private let maxDemand = 4000

    func run() async {
        await runBrokerSuite("redis", variable: "SLUICE_REDIS_URL") { try await self.measure(url: $0) }
    }

    private func measure(url: String) async throws {
        print("suite redis: \(self.total) items of 100 bytes, median of \(self.repetitions) runs (raw and sluice runs alternate)")
        print("pipeline: RedisSource batchSize 1000 → Processors(concurrency: \(self.processors), maxDemand: \(self.maxDemand)) discarding")
        print("timed: from Pipeline.run() (connecting included) until every message was handled and settled")
        print("raw: a C loop on one hiredis connection, LPOP key 1000 / XREADGROUP COUNT 1000 + XACK, payloads counted, not copied")
        print(pad("consumer", 44) + pad("msgs/s", 14) + "vs raw")
        var base = try RedisConfiguration(url: url + (url.contains("?") ? "&" : "?") + "key=bench")
        base.batchSize = 1000
        // SLUICE_BENCH_REDIS_ONLY=list (or reliable, stream, raw…) measures only those parts,
        // for profiling one of them; the others report 0.
        let only = ProcessInfo.processInfo.environment["SLUICE_BENCH_REDIS_ONLY"].map { $0.split(separator: ",").map(String.init) }
        func wanted(_ part: String) -> Bool { only?.contains(part) ?? true }
        let skipped: () async throws -> (Int, Double) = { (0, 1) }
        // Each raw run is followed by the Sluice run it is compared with, so that both see much
        // the same load on a noisy machine.
        let (rawList, list) = try await self.medians(
            wanted("rawList") ? { try await self.rawList(base) } : skipped,
            wanted("list") ? { try await self.sluice(base, mode: .list) } : skipped
        )
        let reliable = try await self.medians(wanted("reliable") ? { try await self.sluice(base, mode: .reliable) } : skipped, skipped).0
        let (rawStream, stream) = try await self.medians(
            wanted("rawStream") ? { try await self.rawStream(base) } : skipped,
            wanted("stream") ? { try await self.sluice(base, mode: .stream) } : skipped
        )
        print(pad("raw LPOP key 1000", 44) + pad(formatRate(rawList), 14))
        print(pad("sluice list (pipelined LPOP, at most once)", 44) + pad(formatRate(list), 14) + String(format: "%.2f×", list / rawList))
        print(pad("sluice reliable (move script + LTRIM)", 44) + pad(formatRate(reliable), 14) + String(format: "%.2f× list raw", reliable / rawList))
        print(pad("raw XREADGROUP COUNT 1000 + XACK", 44) + pad(formatRate(rawStream), 14))
        print(pad("sluice stream (XREADGROUP + batched XACK)", 44) + pad(formatRate(stream), 14) + String(format: "%.2f×", stream / rawStream))
        print(
            "RESULT redis list_msgs_per_s=\(Int(list)) reliable_msgs_per_s=\(Int(reliable)) stream_msgs_per_s=\(Int(stream)) "
                + String(format: "vs_raw=%.2f stream_vs_raw=%.2f", list / rawList, stream / rawStream)
        )
    }

    /// Runs `first` and then `second` (each returns items and seconds), `repetitions` times
    /// in turn; the median rate of each.
    private func medians(
        _ first: () async throws -> (Int, Double),
        _ second: () async throws -> (Int, Double)
    ) async throws -> (Double, Double) {
        var firstRates: [Double] = []
        var secondRates: [Double] = []
        for _ in 0..<self.repetitions {
            let (firstItems, firstSeconds) = try await first()
            firstRates.append(Double(firstItems) / firstSeconds)
            let (secondItems, secondSeconds) = try await second()
            secondRates.append(Double(secondItems) / secondSeconds)
        }
        firstRates.sort()
        secondRates.sort()
        return (firstRates[firstRates.count / 2], secondRates[secondRates.count / 2])
    }

    private func fresh(_ base: RedisConfiguration, mode: RedisConfiguration.Mode) -> RedisConfiguration {
        var configuration = base
        configuration.key = "sluice-bench-\(mode)-\(UUID().uuidString.prefix(8))"
        configuration.mode = mode
        configuration.group = "bench"
        configuration.consumer = "bench-consumer"
        return configuration
    }

    private func preload(_ client: RedisClient, _ configuration: RedisConfiguration) async throws {
        let key = Array(configuration.key.utf8)
        if configuration.mode == .stream {
            let add: [[UInt8]] = [Array("XADD".utf8), key, Array("*".utf8), Array("payload".utf8), self.payload]
            var remaining = self.total
            while remaining > 0 {
                let n = min(remaining, 20_000)
                _ = try await client.pipeline(Array(repeating: add, count: n))
                remaining -= n
            }
            _ = try await client.command(["XGROUP", "CREATE", configuration.key, configuration.group, "0"])
        } else {
            let push = [Array("RPUSH".utf8), key] + Array(repeating: self.payload, count: 1000)
            var remaining = self.total
            while remaining > 0 {
                let n = min(remaining / 1000, 100)
                _ = try await client.pipeline(Array(repeating: push, count: n))
                remaining -= n * 1000
            }
        }
    }

    private func rawList(_ base: RedisConfiguration) async throws -> (Int, Double) {
        try await self.raw(base, mode: .list) { configuration in
            sluice_redis_raw_lpop(configuration.host, Int32(configuration.port), configuration.password, Int32(configuration.database), configuration.key, 1000)
        }
    }

    private func rawStream(_ base: RedisConfiguration) async throws -> (Int, Double) {
        try await self.raw(base, mode: .stream) { configuration in
            sluice_redis_raw_xreadgroup(
                configuration.host, Int32(configuration.port), configuration.password, Int32(configuration.database),
                configuration.key, configuration.group, "raw", 1000
            )
        }
    }

    /// Preloads a fresh key for `mode`, runs the C `loop` on a thread of its own (it blocks),
    /// then deletes the key; returns the items the loop consumed and the seconds it took (as
    /// the loop timed itself).
    private func raw(
        _ base: RedisConfiguration,
        mode: RedisConfiguration.Mode,
        _ loop: @escaping @Sendable (RedisConfiguration) -> sluice_redis_raw_result
    ) async throws -> (Int, Double) {
        let configuration = self.fresh(base, mode: mode)
        let client = RedisClient(configuration: configuration)
        try await self.preload(client, configuration)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<sluice_redis_raw_result, Never>) in
            Thread { continuation.resume(returning: loop(configuration)) }.start()
        }
        _ = try await client.command(["DEL", configuration.key])
        await client.close()
        if result.failed != 0 {
            let message = withUnsafeBytes(of: result.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw RawLoopFailed(message: message)
        }
        return (Int(result.items), result.seconds)
    }

    private func sluice(_ base: RedisConfiguration, mode: RedisConfiguration.Mode) async throws -> (Int, Double) {
        let configuration = self.fresh(base, mode: mode)
        let client = RedisClient(configuration: configuration)
        try await self.preload(client, configuration)
        let total = self.total
        let pipeline = Pipeline("bench", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: self.processors, maxDemand: self.maxDemand) { _ in }
        }
        let start = ContinuousClock.now
        var end = start
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            while pipeline.statistics.acknowledged < total {
                try await Task.sleep(for: .milliseconds(1))
            }
            // Timed up to the moment every message was handled and handed to the
            // acknowledger; the drain after it (which may wait out one blocking read) is not.
            end = ContinuousClock.now
            pipeline.drain()
            try await group.waitForAll()
        }
        let seconds = (end - start).inSeconds
        _ = try await client.command(["DEL", configuration.key, "\(configuration.key):processing:bench-consumer", "\(configuration.key):consumers", "\(configuration.key):positions:bench-consumer"])
        await client.close()
        return (total, seconds)
    }
}

/// A raw C loop failed.
struct RawLoopFailed: Error, CustomStringConvertible {
    let message: String
    var description: String { "raw loop: \(self.message)" }
}
