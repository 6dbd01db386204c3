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
import Testing

/// A throwaway `redis-server` on a free loopback port, persisting every write (AOF, fsync
/// always) in a temporary folder, so it can be killed and restarted without losing data (or,
/// not `persistent`, keeping nothing: for tests that only need a Redis of their own).
final class ThrowawayRedis: @unchecked Sendable {
    let port: Int
    let directory: URL
    let persistent: Bool
    private var process: Process?

    init(persistent: Bool = true) throws {
        self.persistent = persistent
        self.port = Int.random(in: 21_000...29_000)
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
    }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = [
            "--port", "\(self.port)", "--bind", "127.0.0.1", "--dir", self.directory.path,
            "--save", "", "--appendonly", self.persistent ? "yes" : "no", "--appendfsync", "always", "--daemonize", "no",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        var configuration = RedisConfiguration(key: "ping")
        configuration.port = self.port
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.close() } }
        try await waitUntil(seconds: 20, "redis-server on \(self.port) answers") {
            guard process.isRunning else { throw TestFailure("redis-server on \(self.port) exited at start (is the port taken?)") }
            return (try? await client.command(["PING"]))?.text == "PONG"
        }
    }

    /// A configuration for this server with a key no other test uses.
    func configuration(_ purpose: String, mode: RedisConfiguration.Mode) -> RedisConfiguration {
        var configuration = RedisConfiguration(key: RedisTestEnvironment.uniqueKey(purpose))
        configuration.port = self.port
        configuration.mode = mode
        return configuration
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    func kill() {
        guard let process = self.process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func stop() {
        self.kill()
        try? FileManager.default.removeItem(at: self.directory)
    }
}

@Suite("Redis restarted mid-run", .serialized, .timeLimit(.minutes(3)))
struct RedisRestartTests {
    /// Kills and restarts Redis several times while the pipeline reads and settles, so that
    /// a restart falls between a read (or settle) running in Redis and its reply reaching the
    /// source: moved items whose reply was lost must be found and delivered, settled items
    /// whose reply was lost must not be counted as still handed out.
    @Test(arguments: [RedisConfiguration.Mode.reliable, .stream])
    func pipelineReconnectsAndLosesNothing(mode: RedisConfiguration.Mode) async throws {
        _ = try RedisTestEnvironment.url()
        let server = try ThrowawayRedis()
        defer { server.stop() }
        try await server.start()
        var base = RedisConfiguration(key: RedisTestEnvironment.uniqueKey("restart"))
        base.port = server.port
        base.mode = mode
        base.consumer = "restart-worker"
        base.claimMinIdle = .milliseconds(500)
        base.claimInterval = .milliseconds(100)
        base.maximumReconnectBackoff = .milliseconds(200)
        base.commandTimeout = .seconds(2)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.close() } }
        let total = 30_000
        let restarts = 10
        let all = payloads(total)
        if mode == .stream {
            for start in stride(from: 0, to: total, by: 3000) { try await client.add(configuration.key, Array(all[start..<start + 3000])) }
        } else {
            try await client.push(configuration.key, all)
        }
        let handled = Recorder<String>()
        let pipeline = Pipeline("restart", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 100) { message in
                handled.append(message.text)
                if handled.count % 100 == 0 { try await Task.sleep(for: .milliseconds(2)) }
            }
        }
        try await withRunningPipeline(pipeline, timeLimit: .seconds(120)) {
            for restart in 1...restarts {
                try await waitUntil("\(restart * 2500) handled") { handled.count >= restart * 2500 }
                server.kill()
                // The outage itself is not a synchronization: any length would do.
                try await Task.sleep(for: .milliseconds(Int.random(in: 20...200)))
                try await server.start()
            }
            try await waitUntil(seconds: 60, "everything handled after the restarts") { Set(handled.all).count >= total }
        }
        #expect(Set(handled.all) == Set(all.map { String(decoding: $0, as: UTF8.self) }))
        // The first client's connection broke with the restart; this one is new.
        let checker = RedisClient(configuration: configuration)
        defer { Task { await checker.close() } }
        if mode == .stream {
            let pending = try await checker.command(["XPENDING", configuration.key, configuration.group])
            #expect(pending.array?.first?.integer == 0)
        } else {
            #expect(try await checker.length(configuration.key) == 0)
            #expect(try await checker.length("\(configuration.key):processing:restart-worker") == 0)
        }
    }
}
