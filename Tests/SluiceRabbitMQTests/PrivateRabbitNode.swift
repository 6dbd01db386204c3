//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A RabbitMQ node of a test's own (its own node name, ports, data, logs and HOME in a
/// temporary folder), for tests that kill or reconfigure the broker: the shared node the other
/// tests use is never touched.
///
/// The launcher runs as the leader of a session and process group of its own (as
/// `scripts/brokers` starts one), so ``kill()`` and ``stop()`` end the shell wrapper and the
/// Erlang VM together, and nothing else. Data survive ``kill()``: ``start()`` again recovers
/// durable queues and persistent messages.
final class PrivateRabbitNode: Sendable {
    let name: String
    let port: Int
    let distributionPort: Int
    let directory: URL
    /// The process group of the running launcher (0 when stopped).
    private let group = Atomic<Int32>(0)
    private static let bin = "/usr/lib/rabbitmq/bin"

    /// Prepares the node's folder; `advancedConfiguration` is an Erlang term file's text
    /// (`RABBITMQ_ADVANCED_CONFIG_FILE`), such as `[{rabbit, [{consumer_timeout, 2000}]}].`
    init(advancedConfiguration: String = "[].") throws {
        let suffix = UUID().uuidString.lowercased().prefix(8)
        self.name = "sluicetest-\(suffix)@localhost"
        (self.port, self.distributionPort) = try Self.twoFreePorts()
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-rabbit-\(suffix)")
        let manager = FileManager.default
        for folder in ["home", "mnesia", "logs"] {
            try manager.createDirectory(at: self.directory.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        try "listeners.tcp.1 = 127.0.0.1:\(self.port)\nloopback_users.guest = true\n"
            .write(to: self.file("rabbitmq.conf"), atomically: true, encoding: .utf8)
        try advancedConfiguration.write(to: self.file("advanced.config"), atomically: true, encoding: .utf8)
        try "[].".write(to: self.file("enabled_plugins"), atomically: true, encoding: .utf8)
        try "".write(to: self.file("rabbitmq-env.conf"), atomically: true, encoding: .utf8)
    }

    /// `amqp://` for this node.
    var url: String { "amqp://guest:guest@127.0.0.1:\(self.port)/" }

    /// Starts the node and waits until it accepts AMQP connections (boot takes seconds).
    func start(timeout: Duration = .seconds(60)) async throws {
        try await offPool { try self.startBlocking(timeout: timeout) }
    }

    /// Kills the node at once (SIGKILL to its whole process group), as a crash would, and
    /// waits until its ports are closed.
    func kill() async throws {
        try await offPool { try self.killBlocking() }
    }

    /// Stops the node (if it runs) and removes its folder.
    func stop() async {
        _ = try? await offPool { try self.killBlocking() }
        try? FileManager.default.removeItem(at: self.directory)
    }

    /// `rabbitmqctl` against this node (HOME holds the node's Erlang cookie).
    func control(_ arguments: [String]) async throws -> String {
        try await offPool {
            try RabbitControl.runBlocking(arguments, node: self.name, executable: "\(Self.bin)/rabbitmqctl", environment: self.environment)
        }
    }

    /// Ready and unacknowledged messages of `queue` on this node (0 and 0 before it exists).
    func counts(_ queue: String) async throws -> (ready: Int, unacknowledged: Int) {
        let text = try await self.control(["list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"])
        return RabbitControl.parseCounts(text, queue: queue)
    }

    /// The last `limit` lines of the node's own log that mention any of `words` (for a
    /// failure's message: what the broker said about a queue and its recovery).
    func logLines(mentioning words: [String], limit: Int = 30) -> [String] {
        let file = self.file("logs").appendingPathComponent("\(self.name).log")
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return ["(no log at \(file.path))"] }
        let lines = text.split(separator: "\n").filter { line in words.contains { line.contains($0) } }
        return lines.suffix(limit).map(String.init)
    }

    // MARK: Blocking parts (threads of their own)

    private var environment: [String: String] {
        var environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "LANG": "C.UTF-8"]
        environment["HOME"] = self.file("home").path
        environment["RABBITMQ_NODENAME"] = self.name
        environment["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1"
        environment["RABBITMQ_NODE_PORT"] = "\(self.port)"
        environment["RABBITMQ_DIST_PORT"] = "\(self.distributionPort)"
        environment["RABBITMQ_MNESIA_BASE"] = self.file("mnesia").path
        environment["RABBITMQ_LOG_BASE"] = self.file("logs").path
        environment["RABBITMQ_CONFIG_FILE"] = self.file("rabbitmq.conf").path
        environment["RABBITMQ_ADVANCED_CONFIG_FILE"] = self.file("advanced.config").path
        environment["RABBITMQ_ENABLED_PLUGINS_FILE"] = self.file("enabled_plugins").path
        environment["RABBITMQ_CONF_ENV_FILE"] = self.file("rabbitmq-env.conf").path
        environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "-kernel inet_dist_use_interface {127,0,0,1}"
        environment["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        return environment
    }

    private func file(_ name: String) -> URL { self.directory.appendingPathComponent(name) }

    private func startBlocking(timeout: Duration) throws {
        let pidFile = self.file("pid")
        try? FileManager.default.removeItem(at: pidFile)
        _ = FileManager.default.createFile(atPath: self.file("node.log").path, contents: nil)
        let log = try FileHandle(forWritingTo: self.file("node.log"))
        defer { try? log.close() }
        log.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        // The shell records its pid (the new session's and process group's id), then becomes
        // the launcher.
        process.arguments = ["sh", "-c", #"echo $$ >"$0"; shift; exec "$@""#, pidFile.path, "--", "\(Self.bin)/rabbitmq-server"]
        process.environment = self.environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.group.load(ordering: .relaxed) == 0,
                let text = try? String(contentsOf: pidFile, encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                self.group.store(pid, ordering: .relaxed)
            }
            if self.group.load(ordering: .relaxed) != 0 && Self.answers(self.port) { return }
            usleep(100_000)
        }
        let tail = (try? String(contentsOf: self.file("node.log"), encoding: .utf8))?.suffix(2000) ?? ""
        _ = try? self.killBlocking()
        throw TestFailure("the private RabbitMQ node \(self.name) did not accept connections on port \(self.port) within \(timeout):\n\(tail)")
    }

    private func killBlocking() throws {
        let group = self.group.exchange(0, ordering: .relaxed)
        guard group > 0 else { return }
        _ = Glibc.kill(-group, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(15)
        while Self.answers(self.port) || Self.answers(self.distributionPort) {
            guard ContinuousClock.now < deadline else { throw TestFailure("the private RabbitMQ node \(self.name) kept its ports after SIGKILL") }
            usleep(50_000)
        }
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    private static func answers(_ port: Int) -> Bool {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Two ports below the kernel's ephemeral range that nothing listens on.
    private static func twoFreePorts() throws -> (Int, Int) {
        var found: [Int] = []
        for _ in 0..<200 where found.count < 2 {
            let port = Int.random(in: 20_000..<32_000)
            if !found.contains(port) && !Self.answers(port) { found.append(port) }
        }
        guard found.count == 2 else { throw TestFailure("found no free ports for a private RabbitMQ node") }
        return (found[0], found[1])
    }

    /// Runs `body` with a started node and stops the node afterwards, also when `body` throws.
    static func with<T>(
        advancedConfiguration: String = "[].",
        _ body: (PrivateRabbitNode) async throws -> T
    ) async throws -> T {
        let node = try PrivateRabbitNode(advancedConfiguration: advancedConfiguration)
        return try await withStopping(node, stop: { await $0.stop() }) { node in
            try await node.start()
            return try await body(node)
        }
    }
}

/// A log handler that keeps every entry, for tests that check what was logged.
struct RecordingLogHandler: LogHandler {
    /// One logged entry.
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        /// The entry's metadata (the logger's and the call's), as `key=value` text.
        var metadata: String = ""
    }

    final class Store: Sendable {
        private let entries = Mutex<[Entry]>([])
        func append(_ entry: Entry) { self.entries.withLock { $0.append(entry) } }
        var all: [Entry] { self.entries.withLock { $0 } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        let metadata = merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
        self.store.append(Entry(level: event.level, message: "\(event.message)", metadata: metadata))
    }

    /// A logger that records into a new store.
    static func logger(_ label: String) -> (Logger, Store) {
        let store = Store()
        return (Logger(label: label) { _ in RecordingLogHandler(store: store) }, store)
    }
}
