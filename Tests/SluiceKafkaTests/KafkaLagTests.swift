//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
@_spi(Internal) import SluiceKafka
import Synchronization
import Testing

/// How many messages the handler of ``KafkaLagTests`` may let through (it holds the others).
private final class Allowance: Sendable {
    let allowed = Atomic<Int>(0)
    let handled = Atomic<Int>(0)
}

/// A plain Tansu of one test's own (memory storage) that the test may kill: the shared broker
/// must keep running for everyone.
private final class PrivateTansu: Sendable {
    let port: Int
    private let directory: URL
    private let process: Process

    /// Starts it and waits until it listens (blocking: call it off the pool).
    init(tansu: String) throws {
        let port = try KafkaTLSBroker.freePort()
        self.port = port
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-kafka-lag-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        // Tansu reads options from the environment too: only the ones given here count.
        var environment = ProcessInfo.processInfo.environment
        for name in ["SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID", "STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL"] {
            environment[name] = nil
        }
        self.process = try KafkaTLSBroker.start(tansu, [
            "broker", "--listener-url", "tcp://127.0.0.1:\(port)", "--advertised-listener-url", "tcp://127.0.0.1:\(port)",
            "--storage-engine", "memory://tansu/",
        ], environment: environment, log: self.directory.appendingPathComponent("tansu.log"))
        let deadline = ContinuousClock.now + .seconds(10)
        while !KafkaTLSBroker.answers(port) {
            guard ContinuousClock.now < deadline, self.process.isRunning else {
                Foundation.kill(self.process.processIdentifier, SIGKILL)
                throw TestFailure("Tansu did not listen on 127.0.0.1:\(port) within 10 s (log in \(self.directory.path))")
            }
            usleep(20_000)
        }
    }

    /// Kills it (once) and removes its folder; the exit is awaited off the pool.
    func kill() async {
        let process = self.process
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        _ = try? await KafkaAdmin.onThread { process.waitUntilExit() }
        try? FileManager.default.removeItem(at: self.directory)
    }
}

@Suite("Kafka source lag", .timeLimit(.minutes(1)))
struct KafkaLagTests {
    @Test("the lag is the end offset minus the group's commit: N before anything was committed, N − k after k were settled, then 0")
    func lagFollowsTheCommits() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("lag", partitions: 1)
        let topic = configuration.topics[0]
        let admin = KafkaTestEnvironment.admin(configuration)
        // The test broker (Tansu) answers ListOffsets "latest" with the last *batch's* base
        // offset + 1, not the partition's end: each message goes in a produce request of its
        // own (a producer per message, confirmed before the next), so every batch holds one
        // message and the end offset the lag is measured from is right.
        for index in 0..<12 {
            try await admin.produce(topic: topic, values: [Array("message-\(index)".utf8)], partition: 0)
        }
        let source = KafkaSource(configuration: configuration)
        await #expect(throws: KafkaError.self, "not running yet") { _ = try await source.lag() }
        let allowance = Allowance()
        let pipeline = Pipeline("lag", source: source) {
            // maxDemand 1: a processor settles what it was handed together, so one message at a time.
            Processors(concurrency: 1, maxDemand: 1) { (message: inout Message<KafkaMetadata>) async throws in
                while allowance.handled.load(ordering: .relaxed) >= allowance.allowed.load(ordering: .relaxed) {
                    try await Task.sleep(for: .milliseconds(5))
                }
                allowance.handled.add(1, ordering: .relaxed)
            }
        }
        try await withPipeline(pipeline) {
            // Nothing committed yet: the group starts at the earliest offset, so all 12 count.
            try await waitUntil(seconds: 30, "the consumer was assigned and counts all 12") { (try? await source.lag()) == 12 }
            allowance.allowed.store(5, ordering: .relaxed)
            try await waitUntil(seconds: 20, "the 5 settled were committed") { try await source.lag() == 7 }
            let committed = try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1)
            #expect(committed == 5, "the broker's own commit")
            allowance.allowed.store(12, ordering: .relaxed)
            try await waitUntil(seconds: 20, "everything was committed") { try await source.lag() == 0 }
            #expect(allowance.handled.load(ordering: .relaxed) == 12)
        }
        await #expect(throws: KafkaError.self, "ended") { _ = try await source.lag() }
    }

    @Test("a group that starts at the latest offset and never committed has no lag for what came before it")
    func latestStartsWithoutLag() async throws {
        var configuration = try await KafkaTestEnvironment.configuration("lag-latest", partitions: 1)
        configuration.offsetReset = .latest
        let admin = KafkaTestEnvironment.admin(configuration)
        // One message per produce request (see above), so that the end offset is right.
        for index in 0..<3 { try await admin.produce(topic: configuration.topics[0], values: [Array("old-\(index)".utf8)], partition: 0) }
        let source = KafkaSource(configuration: configuration)
        let pipeline = Pipeline("lag-latest", source: source) {
            Processors(concurrency: 1, maxDemand: 1) { _ in }
        }
        try await withPipeline(pipeline) {
            try await waitUntil(seconds: 30, "the consumer was assigned") { (try? await source.lag()) != nil }
            #expect(try await source.lag() == 0, "the 3 older messages are not this group's to read")
        }
    }

    @Test("while the brokers cannot be reached the query fails within its timeout, and the source keeps running")
    func anUnreachableBrokerFailsTheQuery() async throws {
        guard let tansu = ProcessInfo.processInfo.environment["SLUICE_TANSU"], !tansu.isEmpty else {
            throw TestFailure("SLUICE_TANSU is not set: run `scripts/brokers up` and `eval \"$(scripts/brokers env)\"` first")
        }
        let broker = try await KafkaAdmin.onThread { try PrivateTansu(tansu: tansu) }
        var configuration = KafkaConfiguration(
            bootstrapServers: ["127.0.0.1:\(broker.port)"],
            topics: [KafkaTestEnvironment.unique("lag-down")],
            group: KafkaTestEnvironment.unique("lag-down-group")
        )
        configuration.offsetReset = .earliest
        configuration.closeTimeout = .seconds(1)
        configuration.revokeTimeout = .seconds(1)
        let admin = KafkaTestEnvironment.admin(configuration)
        do {
            try await admin.createTopic(configuration.topics[0], partitions: 1)
            // One message per produce request (see above), so that the end offset is right.
            for index in 0..<3 { try await admin.produce(topic: configuration.topics[0], values: [Array("m\(index)".utf8)], partition: 0) }
            let source = KafkaSource(configuration: configuration)
            let handled = Recorder<String>()
            let pipeline = Pipeline("lag-down", source: source) {
                Processors(concurrency: 1, maxDemand: 1) { message in handled.add(text(message)) }
            }
            try await withPipeline(pipeline) {
                try await waitUntil(seconds: 30, "all 3 committed") { (try? await source.lag()) == 0 }
                await broker.kill()
                let clock = ContinuousClock()
                let durations = Recorder<Duration>()
                let failures = Recorder<KafkaError.Code>()
                try await waitUntil(seconds: 10, "a query failed") {
                    let started = clock.now
                    defer { durations.add(clock.now - started) }
                    do {
                        _ = try await source.lag()
                        return false
                    } catch let error as KafkaError {
                        failures.add(error.code)
                        return true
                    }
                }
                // The brokers' failure, not the source's end: the source still runs.
                #expect([.connectionFailed, .clientFailed].contains(failures.all.first), "\(failures.all)")
                let slowest = durations.all.max() ?? .zero
                #expect(slowest < KafkaSource.lagQueryTimeout * 3 + .seconds(1), "each query is bounded: \(durations.all)")
            }
            #expect(handled.count == 3)
        } catch {
            await broker.kill()
            throw error
        }
        await broker.kill()
    }
}
