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
import SluiceRabbitMQ
import Synchronization
import Testing

/// The RabbitMQ the integration tests use, as printed by `scripts/brokers env`.
enum RabbitTestEnvironment {
    /// The URL of the shared test broker; fails (never skips) when it is not set.
    static func url() throws -> String {
        try self.variable("SLUICE_RABBITMQ_URL")
    }

    /// The broker's node name, for `rabbitmqctl -n`.
    static func node() throws -> String {
        try self.variable("SLUICE_RABBITMQ_NODE")
    }

    private static func variable(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw TestFailure(
                """
                \(name) is not set, so the RabbitMQ integration tests have no broker to talk to. \
                Start the brokers and export their addresses in the shell that runs the tests: \
                `scripts/brokers up` and then `eval "$(scripts/brokers env)"` (see docs/brokers.md).
                """
            )
        }
        return value
    }

    /// A configuration for the shared broker with a queue no other test uses, declared by
    /// the source.
    static func configuration(_ purpose: String, query: String = "") throws -> RabbitMQConfiguration {
        let base = try url()
        var configuration = try RabbitMQConfiguration(url: base + "?queue=\(uniqueName(purpose))" + query)
        configuration.topology.declare = true
        configuration.topology.durable = false
        return configuration
    }

    static func uniqueName(_ purpose: String) -> String {
        "sluice-test-\(purpose)-\(UUID().uuidString.lowercased().prefix(13))"
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 20 ms until it holds; throws after `seconds`.
func waitUntil(seconds: Double = 20, _ what: String, _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out after \(seconds) s waiting until \(what)")
}

/// A flag a test sets and handlers read (shareable, unlike an `Atomic`).
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { self.value.store(true, ordering: .relaxed) }
    var isSet: Bool { self.value.load(ordering: .relaxed) }
}

/// A pipeline whose handlers record each message's text, and hold every delivery of the
/// first channel once `holdAfter` messages were handled, until `release` is set: those stay
/// unacknowledged on that channel while a test breaks it (their settlements are then stale).
func pipelineHoldingTheFirstChannel(
    _ name: String,
    source: CapturingSource,
    logger: Logger,
    maxDemand: Int,
    holdAfter: Int,
    release: Flag,
    handled: Recorder<String>
) -> Pipeline<CapturingSource> {
    Pipeline(name, source: source, configuration: PipelineConfiguration(logger: logger)) {
        Processors(concurrency: 2, maxDemand: maxDemand) { message in
            while message.metadata.channelGeneration == 1 && handled.count >= holdAfter && !release.isSet {
                try await Task.sleep(for: .milliseconds(5))
            }
            handled.append(message.text)
        }
    }
}

/// Waits until `handled` holds `total` distinct messages and the broker's `counts` show the
/// queue empty with nothing unacknowledged, then drains `pipeline`.
func waitUntilAllHandledAndAcknowledged(
    _ total: Int,
    handled: Recorder<String>,
    pipeline: Pipeline<CapturingSource>,
    counts: @Sendable () async throws -> (ready: Int, unacknowledged: Int)
) async throws {
    try await waitUntil("every message handled") { Set(handled.all).count >= total }
    try await waitUntil("every message acknowledged") {
        let counts = try await counts()
        return counts.ready == 0 && counts.unacknowledged == 0
    }
    pipeline.drain()
}

/// A configuration for the shared broker (see ``RabbitTestEnvironment/configuration(_:query:)``)
/// changed by `adjust`, its queue declared and holding `count` messages, and a client on it.
func preloadedQueue(
    _ purpose: String,
    count: Int,
    _ adjust: (inout RabbitMQConfiguration) -> Void = { _ in }
) async throws -> (RabbitMQConfiguration, RabbitMQClient) {
    var configuration = try RabbitTestEnvironment.configuration(purpose)
    adjust(&configuration)
    let client = RabbitMQClient(configuration: configuration)
    try await client.declare(configuration)
    try await client.publish(payloads(count))
    return (configuration, client)
}

/// A thread-safe recorder of what handlers saw.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { self.values.withLock { $0.append(value) } }
    var all: [Value] { self.values.withLock { $0 } }
    var count: Int { self.values.withLock { $0.count } }
}

func payloads(_ count: Int, prefix: String = "m") -> [[UInt8]] {
    (0..<count).map { Array("\(prefix)\($0)".utf8) }
}

extension Message where Metadata == RabbitMQMetadata {
    var text: String { String(decoding: self.payload, as: UTF8.self) }
}

/// Runs `body` on a thread of its own and returns its result: blocking work (a child
/// process, key generation) never holds one of the cooperative pool's few threads.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Runs `body` with `resource` and then `stop`s it, also when `body` throws.
func withStopping<R, T>(_ resource: R, stop: (R) async -> Void, _ body: (R) async throws -> T) async throws -> T {
    do {
        let result = try await body(resource)
        await stop(resource)
        return result
    } catch {
        await stop(resource)
        throw error
    }
}

/// `rabbitmqctl` against the test node (on a thread of its own: each call takes about half a
/// second).
enum RabbitControl {
    static func run(_ arguments: [String]) async throws -> String {
        let node = try RabbitTestEnvironment.node()
        return try await offPool { try Self.runBlocking(arguments, node: node) }
    }

    /// Runs `rabbitmqctl` (`executable`) against `node` and returns its output; blocks, so
    /// callers run it on a thread of their own.
    static func runBlocking(
        _ arguments: [String],
        node: String,
        executable: String = "/usr/sbin/rabbitmqctl",
        environment: [String: String]? = nil
    ) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-n", node, "-q"] + arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = Pipe()
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("rabbitmqctl \(arguments.joined(separator: " ")) failed with status \(process.terminationStatus)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Ready and unacknowledged messages of `queue` (0 and 0 before it exists).
    static func counts(_ queue: String) async throws -> (ready: Int, unacknowledged: Int) {
        let text = try await self.run(["list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"])
        return self.parseCounts(text, queue: queue)
    }

    /// The ready and unacknowledged counts of `queue` in `list_queues name messages_ready
    /// messages_unacknowledged` output (0 and 0 when it is not listed).
    static func parseCounts(_ text: String, queue: String) -> (ready: Int, unacknowledged: Int) {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 3, fields[0] == queue else { continue }
            return (Int(fields[1]) ?? -1, Int(fields[2]) ?? -1)
        }
        return (0, 0)
    }

    /// Closes the broker connection that consumes `queue` (no other).
    static func closeConsumerConnection(of queue: String) async throws {
        let consumers = try await self.run(["list_consumers", "--no-table-headers", "queue_name", "channel_pid"])
        let channels = consumers.split(separator: "\n").compactMap { line -> Substring? in
            let fields = line.split(separator: "\t")
            return fields.count == 2 && fields[0] == queue ? fields[1] : nil
        }
        guard let channel = channels.first else { throw TestFailure("no consumer on \(queue)") }
        let list = try await self.run(["list_channels", "--no-table-headers", "pid", "connection"])
        let connection = list.split(separator: "\n").compactMap { line -> Substring? in
            let fields = line.split(separator: "\t")
            return fields.count == 2 && fields[0] == channel ? fields[1] : nil
        }.first
        guard let connection else { throw TestFailure("no connection for channel \(channel)") }
        _ = try await self.run(["close_connection", String(connection), "closed by a Sluice test"])
    }
}

/// Starts a source on `configuration` and returns the typed error its start throws; a start
/// that succeeds, or another error, is recorded as an issue.
func rabbitStartError(_ configuration: RabbitMQConfiguration, logger: Logger) async -> RabbitMQError? {
    do {
        _ = try await RabbitMQSource(configuration: configuration).makeParts(
            context: SourceContext(pipelineName: "start-error", window: 10, logger: logger)
        )
        Issue.record("the source started")
        return nil
    } catch {
        guard let error = error as? RabbitMQError else {
            Issue.record("not a RabbitMQError: \(error)")
            return nil
        }
        return error
    }
}
