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
@_spi(Internal) @testable import SluiceRedis
import Synchronization
import Testing

/// Reliable mode under stress: settling by position costs O(batch), a retried settle is
/// idempotent, a consumer deals with its own leftovers first, the window holds while an item
/// at the head is slow, and large items are read within a byte budget.
@Suite("Redis reliable mode under stress", .serialized, .timeLimit(.minutes(2)))
struct RedisStressTests {
    /// A Redis of the test's own, keeping nothing (only where a test must not load the shared
    /// one, or must read its statistics alone); the shared one must be set up all the same.
    private static func privateRedis() async throws -> ThrowawayRedis {
        _ = try RedisTestEnvironment.url()
        let server = try ThrowawayRedis(persistent: false)
        try await server.start()
        return server
    }

    /// A processing list of 100 000 items: trimming a run of 1000 from its head, and the
    /// same trim retried (its first reply lost), each cost Redis well under a millisecond or
    /// so (its own batch), and the retry removes nothing. (Settling by value, `LREM` per item,
    /// scanned the whole list for each retried value: seconds.) Timed inside Redis
    /// (`INFO commandstats`) on a Redis of its own, so the machine's load does not count.
    @Test func aRetriedTrimIsIdempotentAndCostsItsBatchOnly() async throws {
        let server = try await Self.privateRedis()
        defer { server.stop() }
        let configuration = server.configuration("trim", mode: .reliable)
        let keys = RedisKeys(configuration)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.close() } }
        let total = 100_000
        try await client.push(keys.processing, payloads(total, prefix: "p"))
        _ = try await client.command(["HSET", keys.positions, "epoch", "7", "moved", "\(total)", "trimmed", "0"])
        func trim(_ base: Int, _ operations: String, epoch: Int = 7) async throws -> (removed: Int, microseconds: Int) {
            _ = try await client.command(["CONFIG", "RESETSTAT"])
            let reply = try await client.command(
                ["EVAL", RedisScripts.trim, "4", keys.processing, keys.positions, keys.source, keys.dead, "\(epoch)", "\(base)", operations]
            )
            let stats = try await client.command(["INFO", "commandstats"]).text ?? ""
            let line = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_eval:") } ?? ""
            let usec = line.split(separator: ",").first { $0.hasPrefix("usec=") }.flatMap { Int($0.dropFirst(5)) } ?? -1
            return (reply.integer ?? -99, usec)
        }
        let ops = String(repeating: "a", count: 998) + "rd"
        let first = try await trim(0, ops)
        #expect(first.removed == 1000)
        let retried = try await trim(0, ops)
        #expect(retried.removed == 0, "a retry whose first attempt ran does nothing")
        #expect(try await client.length(keys.processing) == total - 1000)
        #expect(try await client.strings(keys.source) == ["p998"], "r pushes the item back once, on the first attempt")
        #expect(try await client.strings(keys.dead) == ["p999"])
        #expect(try await client.strings(keys.processing).first == "p1000")
        #expect(try await trim(5000, "aaa").removed == -1, "a run that does not start at the head is refused")
        #expect(try await trim(1000, "aaa", epoch: 6).removed == -1, "a run of another epoch is refused")
        #expect(try await client.length(keys.processing) == total - 1000)
        let next = try await trim(1000, String(repeating: "a", count: 1000))
        #expect(next.removed == 1000)
        for (name, usec) in [("first", first.microseconds), ("retried", retried.microseconds), ("next", next.microseconds)] {
            #expect(usec >= 0 && usec < 5000, "the \(name) trim ran \(usec) µs in Redis on a list of \(total)")
        }
    }

    /// The move script stops at the byte budget: never more than the budget in one read,
    /// except an item larger than it, which moves alone.
    @Test func aMoveStopsAtTheByteBudgetAndALargeItemMovesAlone() async throws {
        let configuration = try RedisTestEnvironment.configuration("budget", mode: .reliable)
        let keys = RedisKeys(configuration)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let small = [UInt8](repeating: 0x61, count: 400)
        let large = [UInt8](repeating: 0x62, count: 5000)
        try await client.push(keys.source, [small, small, small, large, small])
        _ = try await client.command(["HSET", keys.positions, "epoch", "1", "moved", "0", "trimmed", "0"])
        func move() async throws -> [Int] {
            let reply = try await client.command(
                ["EVAL", RedisScripts.move, "3", keys.source, keys.processing, keys.positions, "1", "100", "1024"]
            )
            return reply.array?.map { $0.text?.utf8.count ?? -1 } ?? []
        }
        #expect(try await move() == [400, 400], "a third small item would pass 1024 bytes")
        #expect(try await move() == [400], "the large item would pass the budget: it waits for a read of its own")
        #expect(try await move() == [5000], "an item larger than the budget moves alone")
        #expect(try await move() == [400])
        #expect(try await move() == [])
        #expect(try await client.command(["HGET", keys.positions, "moved"]).text == "5")
        #expect(try await client.length(keys.processing) == 5)
    }

    /// An item larger than the whole read budget (64 KiB against 1 KiB) among small ones is
    /// delivered in every mode, in its place: no read refuses it or waits for a budget it
    /// can never fit, and nothing is left behind.
    @Test(arguments: [RedisConfiguration.Mode.reliable, .list, .stream])
    func anItemLargerThanTheReadBudgetIsDelivered(mode: RedisConfiguration.Mode) async throws {
        var base = try RedisTestEnvironment.configuration("over-budget", mode: mode)
        base.maxReadBytes = 1024
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let large = "L" + String(repeating: "x", count: 64 << 10)
        let values = (0..<40).map { $0 == 20 ? large : "s\($0)-" + String(repeating: "y", count: 100) }
        try await client.fill(configuration, values.map { Array($0.utf8) })
        let handled = Recorder<String>()
        let pipeline = Pipeline("over-budget", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 100) { message in handled.append(message.text) }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("all 40 handled") { handled.count >= values.count }
        }
        #expect(handled.all == values)
        if mode == .stream {
            #expect(try await client.command(["XPENDING", configuration.key, configuration.group]).array?.first?.integer == 0)
        } else {
            #expect(try await client.length(configuration.key) == 0)
            #expect(try await client.length("\(configuration.key):processing:\(configuration.consumer)") == 0)
        }
    }

    /// A consumer that starts and finds its own processing list non-empty (same name after a
    /// crash) gives those items back to the head of the list, in order, before reading: they
    /// are delivered first, then the rest.
    @Test func ownLeftoversAreGivenBackFirstInOrder() async throws {
        var base = try RedisTestEnvironment.configuration("leftovers", mode: .reliable)
        base.consumer = "crashed-worker"
        let configuration = base
        let keys = RedisKeys(configuration)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(keys.processing, payloads(1500, prefix: "old"))
        _ = try await client.command(["HSET", keys.positions, "epoch", "3", "moved", "9000", "trimmed", "7500"])
        try await client.push(keys.source, payloads(20, prefix: "new"))
        let handled = Recorder<String>()
        let pipeline = Pipeline("leftovers", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in handled.append(message.text) }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("all handled") { handled.count >= 1520 }
        }
        let expected = payloads(1500, prefix: "old") + payloads(20, prefix: "new")
        #expect(handled.all == expected.map { String(decoding: $0, as: UTF8.self) })
        #expect(try await client.length(keys.processing) == 0)
        #expect(try await client.length(keys.source) == 0)
        #expect(try await client.command(["EXISTS", keys.positions]).integer == 0, "a clean shutdown forgets the positions")
    }

    /// The first item's handler is slow, the others are fast: settled items wait behind it in
    /// the processing list, so the window (not demand) stops the reads, and the list never
    /// holds more than the window. Everything is handled once and nothing is left.
    @Test func aSlowItemAtTheHeadHoldsTheWindow() async throws {
        var base = try RedisTestEnvironment.configuration("slowhead", mode: .reliable)
        base.maxInFlight = 50
        base.batchSize = 10
        let configuration = base
        let keys = RedisKeys(configuration)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(keys.source, payloads(400))
        let handled = Recorder<String>()
        let pipeline = Pipeline("slowhead", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 4, maxDemand: 20) { message in
                if message.text == "m0" { try await Task.sleep(for: .milliseconds(600)) }
                handled.append(message.text)
            }
        }
        let (most, heldAtHead) = try await withRunningPipeline(pipeline) {
            var most = 0
            var heldAtHead = 0
            while handled.count < 400 {
                let length = try await client.length(keys.processing)
                most = max(most, length)
                if !handled.all.contains("m0") { heldAtHead = max(heldAtHead, length) }
                try await Task.sleep(for: .milliseconds(2))
            }
            return (most, heldAtHead)
        }
        #expect(most <= 50, "the processing list held \(most) against a window of 50")
        #expect(heldAtHead >= 40, "while m0 was open the reads filled the window (saw \(heldAtHead))")
        #expect(Set(handled.all).count == 400 && handled.count == 400)
        #expect(try await client.length(keys.processing) == 0)
    }

    /// 600 items of 1 MB drain in under 5 s in every mode: reliable reads stay within the byte
    /// budget instead of one 600 MB reply; list and stream reads size themselves by the items
    /// seen. On a Redis of its own, so the shared one does not hold 600 MB.
    @Test(arguments: [RedisConfiguration.Mode.reliable, .list, .stream])
    func sixHundredItemsOfOneMegabyteDrainQuickly(mode: RedisConfiguration.Mode) async throws {
        let server = try await Self.privateRedis()
        defer { server.stop() }
        let configuration = server.configuration("large", mode: mode)
        var loader = configuration
        loader.commandTimeout = .seconds(60)
        let client = RedisClient(configuration: loader)
        defer { Task { await client.close() } }
        let count = 600
        // Built inside Redis: pushing 600 MB through a client would take most of the time limit.
        let build = """
            for i = 1, tonumber(ARGV[1]) do
              local label = 'item' .. i .. '-'
              local item = label .. string.rep('x', 1048576 - #label)
              if ARGV[2] == 'stream' then redis.call('XADD', KEYS[1], '*', 'payload', item)
              else redis.call('RPUSH', KEYS[1], item) end
            end
            return 1
            """
        #expect(try await client.command(["EVAL", build, "1", configuration.key, "\(count)", "\(mode)"]).integer == 1)
        let handled = Recorder<Int>()
        let pipeline = Pipeline("large", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 50) { message in handled.append(message.payload.count) }
        }
        let started = ContinuousClock.now
        try await withRunningPipeline(pipeline, timeLimit: .seconds(60)) {
            try await waitUntil(seconds: 60, "all \(count) handled") { handled.count >= count }
        }
        let took = ContinuousClock.now - started
        #expect(handled.count == count)
        #expect(handled.all.allSatisfy { $0 == 1 << 20 })
        #expect(took < .seconds(5), "600 × 1 MB took \(took) in \(mode) mode")
        if mode != .stream { #expect(try await client.length(configuration.key) == 0) }
    }
}
