//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import Synchronization
import Testing

/// The Kafka-compatible broker the integration tests use, as printed by `scripts/brokers env`.
enum KafkaTestEnvironment {
    /// The bootstrap servers; fails (never skips) when they are not set.
    static func brokers() throws -> String {
        guard let value = ProcessInfo.processInfo.environment["SLUICE_KAFKA_BROKERS"], !value.isEmpty else {
            throw TestFailure(
                """
                SLUICE_KAFKA_BROKERS is not set, so the Kafka integration tests have no broker to talk to. \
                Start the brokers and export their addresses (and the librdkafka runtime) in the shell that runs the tests: \
                `scripts/brokers up` and then `eval "$(scripts/brokers env)"` (see docs/brokers.md).
                """
            )
        }
        return value
    }

    /// The tests' logger; `SLUICE_KAFKA_DEBUG=1` shows the adapter's debug lines.
    static let logger: Logger = {
        var logger = Logger(label: "sluice.test.kafka")
        if ProcessInfo.processInfo.environment["SLUICE_KAFKA_DEBUG"] != nil { logger.logLevel = .debug }
        return logger
    }()

    static func unique(_ purpose: String) -> String {
        "sluice-test-\(purpose)-\(UUID().uuidString.lowercased().prefix(13))"
    }

    /// A configuration with a topic of `partitions` partitions and a group no other test uses.
    static func configuration(_ purpose: String, partitions: Int = 1) async throws -> KafkaConfiguration {
        var configuration = KafkaConfiguration(bootstrapServers: [try brokers()], topics: [unique(purpose)], group: unique("\(purpose)-group"))
        configuration.offsetReset = .earliest
        try await KafkaAdmin(configuration: configuration, logger: logger).createTopic(configuration.topics[0], partitions: partitions)
        return configuration
    }

    static func admin(_ configuration: KafkaConfiguration) -> KafkaAdmin {
        KafkaAdmin(configuration: configuration, logger: logger)
    }

    /// Produces `count` messages `<prefix>-<i>` keyed `key-<i>` (so every partition gets some).
    static func produce(_ configuration: KafkaConfiguration, count: Int, prefix: String = "message", from start: Int = 0) async throws {
        let values = (start..<start + count).map { Array("\(prefix)-\($0)".utf8) }
        let keys = (start..<start + count).map { Array("key-\($0)".utf8) }
        try await admin(configuration).produce(topic: configuration.topics[0], values: values, keys: keys)
    }

    /// A source of `configuration` that reports to new counters.
    static func countedSource(_ configuration: KafkaConfiguration) -> (KafkaSource, KafkaSourceCounters) {
        let counters = KafkaSourceCounters()
        var source = KafkaSource(configuration: configuration)
        source.counters = counters
        return (source, counters)
    }

    /// The sum of the group's committed offsets over the topic's partitions (none: 0).
    static func committedTotal(_ configuration: KafkaConfiguration, partitions: Int) async throws -> Int64 {
        let offsets = try await admin(configuration).committed(group: configuration.group, topic: configuration.topics[0], partitions: partitions)
        return offsets.reduce(0) { $0 + max(0, $1) }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 10 ms until it holds; throws after `seconds`.
func waitUntil(seconds: Double = 45, _ what: String, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out after \(seconds) s waiting until \(what)")
}

/// A thread-safe list of what handlers saw.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])

    func add(_ value: Value) { self.values.withLock { $0.append(value) } }
    var all: [Value] { self.values.withLock { $0 } }
    var count: Int { self.values.withLock { $0.count } }
}

/// Runs `pipeline` until `body` returns, then drains it and waits for the end.
func withPipeline<Source: PipelineSource, Result: Sendable>(
    _ pipeline: Pipeline<Source>,
    _ body: @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await pipeline.run() }
        do {
            let result = try await body()
            pipeline.drain()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            throw error
        }
    }
}

func text(_ message: Message<KafkaMetadata>) -> String {
    String(decoding: message.payload, as: UTF8.self)
}
