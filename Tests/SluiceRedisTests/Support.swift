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

/// The Redis the integration tests use, as printed by `scripts/brokers env`.
enum RedisTestEnvironment {
    /// The URL of the shared test Redis; fails (never skips) when it is not set.
    static func url() throws -> String {
        guard let value = ProcessInfo.processInfo.environment["SLUICE_REDIS_URL"], !value.isEmpty else {
            throw TestFailure(
                """
                SLUICE_REDIS_URL is not set, so the Redis integration tests have no Redis to talk to. \
                Start the brokers and export their addresses in the shell that runs the tests: \
                `scripts/brokers up` and then `eval "$(scripts/brokers env)"` (see docs/brokers.md).
                """
            )
        }
        return value
    }

    /// A configuration for the shared test Redis with a key no other test uses.
    static func configuration(_ purpose: String, mode: RedisConfiguration.Mode) throws -> RedisConfiguration {
        let base = try url()
        var configuration = try RedisConfiguration(url: base + (base.contains("?") ? "&" : "?") + "key=\(uniqueKey(purpose))")
        configuration.mode = mode
        return configuration
    }

    static func uniqueKey(_ purpose: String) -> String {
        "sluice-test-\(purpose)-\(UUID().uuidString.lowercased().prefix(13))"
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 10 ms until it holds; throws after `seconds`.
func waitUntil(seconds: Double = 15, _ what: String, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out after \(seconds) s waiting until \(what)")
}

/// A thread-safe recorder of what handlers saw.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { self.values.withLock { $0.append(value) } }
    func append(contentsOf values: [Value]) { self.values.withLock { $0.append(contentsOf: values) } }
    var all: [Value] { self.values.withLock { $0 } }
    var count: Int { self.values.withLock { $0.count } }
}

func payloads(_ count: Int, prefix: String = "m") -> [[UInt8]] {
    (0..<count).map { Array("\(prefix)\($0)".utf8) }
}

extension RedisClient {
    /// `RPUSH` in chunks of 1000.
    func push(_ key: String, _ values: [[UInt8]]) async throws {
        var start = 0
        var commands: [[[UInt8]]] = []
        while start < values.count {
            let end = min(start + 1000, values.count)
            commands.append([Array("RPUSH".utf8), Array(key.utf8)] + values[start..<end])
            start = end
        }
        _ = try await self.pipeline(commands)
    }

    /// `XADD key * payload value` for each value.
    func add(_ stream: String, _ values: [[UInt8]]) async throws {
        _ = try await self.pipeline(values.map { [Array("XADD".utf8), Array(stream.utf8), Array("*".utf8), Array("payload".utf8), $0] })
    }

    /// Puts `values` where a source of `configuration` reads them: `XADD`s to a stream in
    /// stream mode (pipelined 5000 at a time), `RPUSH`es to a list otherwise.
    func fill(_ configuration: RedisConfiguration, _ values: [[UInt8]]) async throws {
        guard configuration.mode == .stream else { return try await self.push(configuration.key, values) }
        for start in stride(from: 0, to: values.count, by: 5000) {
            try await self.add(configuration.key, Array(values[start..<min(start + 5000, values.count)]))
        }
    }

    func length(_ key: String) async throws -> Int {
        try await self.command(["LLEN", key]).integer ?? -1
    }

    func strings(_ key: String) async throws -> [String] {
        try await self.command(["LRANGE", key, "0", "-1"]).array?.compactMap(\.text) ?? []
    }

    /// Deletes every key of a test (`key` and everything named `key:…`).
    func cleanUp(_ key: String) async {
        if let keys = try? await self.command(["KEYS", "\(key)*"]).array?.compactMap(\.text), !keys.isEmpty {
            _ = try? await self.command(["DEL"] + keys)
        }
    }
}

extension Message where Metadata == RedisMetadata {
    var text: String { String(decoding: self.payload, as: UTF8.self) }
}
