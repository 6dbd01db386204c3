//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
@_spi(Internal) import SluiceRedis
import Synchronization
import Testing

/// Runs a pipeline on `source` (whose ``RedisConfiguration/limit`` is `taking`) whose handler
/// settles the first `taking − 1` messages at once and holds the last one until `body`
/// returned: meanwhile the source took exactly `taking` and still runs. Returns what `body`
/// returned once the pipeline ended.
private func whileHoldingTheLast<T: Sendable>(
    of source: RedisSource,
    taking: Int,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let gate = HoldGate()
    let pipeline = Pipeline("lag", source: source) {
        Processors(concurrency: 1, maxDemand: 10) { (message: inout Message<RedisMetadata>) async throws in
            guard gate.handled.add(1, ordering: .relaxed).newValue == taking else { return }
            while !gate.released.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
        }
    }
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await pipeline.run()
            return nil
        }
        group.addTask {
            defer { gate.released.store(true, ordering: .relaxed) }
            try await waitUntil("the source took \(taking)") { gate.handled.load(ordering: .relaxed) == taking }
            return try await body()
        }
        var result: T?
        for try await value in group { result = result ?? value }
        return result!
    }
}

/// What the handler of ``whileHoldingTheLast(of:taking:_:)`` counted, and whether it may let
/// the held message go.
private final class HoldGate: Sendable {
    let handled = Atomic<Int>(0)
    let released = Atomic<Bool>(false)
}

/// Runs `body` with a source of a new key of `mode` holding `count` messages, limited to
/// `limit`, and a client on the same Redis; deletes the key's data afterwards.
private func withPreloadedSource<T>(
    _ purpose: String,
    mode: RedisConfiguration.Mode,
    count: Int,
    limit: Int,
    _ body: (RedisSource, RedisClient, RedisConfiguration) async throws -> T
) async throws -> T {
    var configuration = try RedisTestEnvironment.configuration(purpose, mode: mode)
    let client = RedisClient(configuration: configuration)
    defer {
        let key = configuration.key
        Task { await client.cleanUp(key); await client.close() }
    }
    if mode == .stream {
        try await client.add(configuration.key, payloads(count))
    } else {
        try await client.push(configuration.key, payloads(count))
    }
    configuration.limit = limit
    return try await body(RedisSource(configuration: configuration), client, configuration)
}

@Suite("Redis source lag", .serialized, .timeLimit(.minutes(1)))
struct RedisLagTests {
    @Test("list and reliable modes: the lag is LLEN of the source list, N − k after k were taken", arguments: ["list", "reliable"])
    func listLagIsTheListLength(mode: String) async throws {
        try await withPreloadedSource("lag-\(mode)", mode: mode == "list" ? .list : .reliable, count: 50, limit: 7) { source, client, configuration in
            let key = configuration.key
            await #expect(throws: RedisError.self, "not running yet") { _ = try await source.lag() }
            let (lag, length) = try await whileHoldingTheLast(of: source, taking: 7) {
                (try await source.lag(), try await client.length(key))
            }
            #expect(lag == 43)
            #expect(length == 43, "the broker's own count")
            await #expect(throws: RedisError.self, "ended") { _ = try await source.lag() }
        }
    }

    @Test("stream mode: the lag is the group's lag in XINFO GROUPS, N − k after k were read")
    func streamLagIsTheGroupLag() async throws {
        try await withPreloadedSource("lag-stream", mode: .stream, count: 30, limit: 12) { source, client, configuration in
            let key = configuration.key
            let (lag, info) = try await whileHoldingTheLast(of: source, taking: 12) {
                (try await source.lag(), try await client.command(["XINFO", "GROUPS", key]))
            }
            #expect(lag == 18)
            // The broker's own entry for the group: … "lag" 18 …
            let fields = info.array?.first?.array ?? []
            let brokerLag = fields.firstIndex(of: .string(Array("lag".utf8))).map { fields[$0 + 1] }
            #expect(brokerLag == .integer(18), "\(fields)")
        }
    }

    @Test("a failing query throws and the source keeps running: a stream whose group was destroyed")
    func aFailingQueryThrows() async throws {
        try await withPreloadedSource("lag-nogroup", mode: .stream, count: 5, limit: 3) { source, client, configuration in
            let (key, group) = (configuration.key, configuration.group)
            let failure = try await whileHoldingTheLast(of: source, taking: 3) { () async throws -> String in
                _ = try await client.command(["XGROUP", "DESTROY", key, group])
                do {
                    let lag = try await source.lag()
                    return "answered \(String(describing: lag))"
                } catch let error as RedisError {
                    return "\(error.code)"
                }
            }
            #expect(failure == "\(RedisError.Code.noGroup)")
        }
    }

    @Test("while Redis is down the query throws, promptly; once it is back it answers again")
    func anUnreachableRedisThrows() async throws {
        _ = try RedisTestEnvironment.url()
        let server = try ThrowawayRedis()
        defer { server.stop() }
        try await server.start()
        var configuration = server.configuration("lag-down", mode: .list)
        configuration.maximumReconnectBackoff = .milliseconds(200)
        configuration.connectTimeout = .seconds(1)
        let client = RedisClient(configuration: configuration)
        try await client.push(configuration.key, payloads(20))
        await client.close()
        configuration.limit = 5
        let source = RedisSource(configuration: configuration)
        let (down, back) = try await whileHoldingTheLast(of: source, taking: 5) { () async throws -> (String, Int?) in
            server.kill()
            let clock = ContinuousClock()
            let started = clock.now
            var down = "answered"
            do {
                _ = try await source.lag()
            } catch let error as RedisError {
                down = "\(error.code) after \(clock.now - started < .seconds(5) ? "less" : "more") than 5 s"
            }
            try await server.start()
            try await waitUntil("the lag is answered again") { (try? await source.lag()) != nil }
            return (down, try await source.lag())
        }
        // The first command finds the connection broken (lost); later ones cannot connect (failed).
        let codes = [RedisError.Code.connectionLost, .connectionFailed]
        #expect(codes.map { "\($0) after less than 5 s" }.contains(down), "\(down)")
        #expect(back == 15, "the data survived the restart (append-only file)")
    }
}
