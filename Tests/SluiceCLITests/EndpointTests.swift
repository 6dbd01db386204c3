//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import SluiceRabbitMQ
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs `sluice` off the pool with `input` on its standard input, reading its output while it
/// runs (so an output larger than a pipe holds cannot stall it).
func sluiceIO(_ arguments: [String], input: Data = Data()) async throws -> (status: Int32, output: String, error: String) {
    try await offPool {
        let process = Process()
        process.executableURL = sluiceExecutable()
        process.arguments = arguments
        let stdin = Pipe()
        let output = Pipe()
        let error = Pipe()
        process.standardInput = stdin
        process.standardOutput = output
        process.standardError = error
        try process.run()
        // Fed from a thread of its own: a large input fills the pipe before the output is read.
        let writer = Thread {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let (out, err) = readToEnd(output, error)
        process.waitUntilExit()
        return (process.terminationStatus, out, err)
    }
}

/// The shared brokers' addresses from `scripts/brokers env`; a missing one fails the test.
enum Brokers {
    static func variable(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw BrokersNotStarted() }
        return value
    }

    /// `amqp://guest:guest@127.0.0.1:16672/` or the like.
    static func rabbitMQ() throws -> String { try self.variable("SLUICE_RABBITMQ_URL") }

    /// `127.0.0.1:19092` or the like.
    static func kafka() throws -> String { try self.variable("SLUICE_KAFKA_BROKERS") }

    /// A name no other test uses.
    static func unique(_ purpose: String) -> String { "sluice-cli-\(purpose)-\(UUID().uuidString.lowercased().prefix(8))" }

    /// Creates a Kafka topic with the broker's own tool (off the pool).
    static func createTopic(_ topic: String, partitions: Int = 1) async throws {
        let tansu = try self.variable("SLUICE_TANSU")
        let brokers = try self.kafka()
        try await offPool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tansu)
            process.arguments = ["topic", "create", topic, "--partitions", "\(partitions)", "--broker", "tcp://\(brokers)"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw CLITestFailure("tansu topic create \(topic) failed") }
        }
    }

    /// A new RabbitMQ queue (not durable) holding `payloads`, its URL and a client for it.
    static func rabbitQueue(_ purpose: String, holding payloads: [String] = []) async throws -> (url: String, name: String, client: RabbitMQClient) {
        let base = try self.rabbitMQ()
        let queue = self.unique(purpose)
        var configuration = try RabbitMQConfiguration(url: base + "?queue=\(queue)")
        configuration.topology.declare = true
        configuration.topology.durable = false
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        if !payloads.isEmpty { try await client.publish(payloads.map { Array($0.utf8) }) }
        return ("\(base)?queue=\(queue)", queue, client)
    }

    /// The queue's ready count once it reached `expected` (polled for up to 10 s), else the last
    /// count read. After a command exits, the broker requeues what the command's channel held
    /// unacknowledged a moment later (when it sees the connection close), so a count read at
    /// once can miss those. Nothing consumes the queue meanwhile, so the count only grows.
    static func readyCount(_ client: RabbitMQClient, _ queue: String, reaching expected: Int) async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(10)
        var count = try await client.readyCount(queue)
        while count < expected && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            count = try await client.readyCount(queue)
        }
        return count
    }

    /// A Kafka URL of a new topic, read from the start by a new group.
    static func kafkaTopic(_ purpose: String) async throws -> (url: String, topic: String) {
        let topic = self.unique(purpose)
        try await self.createTopic(topic)
        return ("kafka://\(try self.kafka())/\(topic)?group=\(topic)-group&offset=earliest&session.timeout.ms=6000", topic)
    }
}

/// The payloads of `tail --format json` lines (each line decoded as JSON).
func jsonPayloads(_ output: String) throws -> [String] {
    try output.split(separator: "\n").map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        guard let payload = object?["payload"] as? String else { throw CLITestFailure("no payload in \(line)") }
        return payload
    }
}

/// `stdin:`, `stdout:` and `file:` endpoints, bad URLs and unreachable brokers.
@Suite("sluice endpoints", .timeLimit(.minutes(1)))
struct EndpointTests {
    @Test func stdinToStdoutCopiesEveryLine() async throws {
        let lines = (0..<5000).map { "line \($0) ✓" }
        let result = try await sluiceIO(["bridge", "stdin:", "stdout:"], input: Data((lines.joined(separator: "\n") + "\n").utf8))
        #expect(result.status == 0, "\(result.error)")
        let printed = result.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // The summary line is last, after the copied lines.
        #expect(Array(printed.prefix(lines.count)) == lines)
        #expect(printed.dropFirst(lines.count).first?.hasPrefix("bridged 5000 in ") == true, "\(result.output.suffix(200))")
    }

    @Test func aFileIsReadAsLinesAndAppendedTo() async throws {
        let source = FileManager.default.temporaryDirectory.appendingPathComponent(Brokers.unique("in")).path
        let sink = FileManager.default.temporaryDirectory.appendingPathComponent(Brokers.unique("out")).path
        defer {
            try? FileManager.default.removeItem(atPath: source)
            try? FileManager.default.removeItem(atPath: sink)
        }
        // Longer than one 1 MiB chunk, CRLF endings, and a last line without a newline.
        let lines = (0..<60_000).map { "record-\($0)-" + String(repeating: "z", count: $0 % 40) }
        try Data((lines.joined(separator: "\r\n")).utf8).write(to: URL(fileURLWithPath: source))
        try Data("before\n".utf8).write(to: URL(fileURLWithPath: sink))
        let result = try await sluiceIO(["bridge", "file:\(source)", "file:\(sink)"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("bridged 60000 in "), "\(result.output)")
        let written = try String(contentsOfFile: sink, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(written == ["before"] + lines)
        let tail = try await sluiceIO(["tail", "file:\(source)", "--count", "3"])
        #expect(tail.status == 0, "\(tail.error)")
        #expect(tail.output == "line=1\trecord-0-\nline=2\trecord-1-z\nline=3\trecord-2-zz\n")
    }

    @Test func drainReadsStdin() async throws {
        let result = try await sluiceIO(["drain", "stdin:", "--count", "100"], input: Data((0..<150).map { "\($0)\n" }.joined().utf8))
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("drained 100 in "), "\(result.output)")
        let short = try await sluiceIO(["drain", "stdin:", "--count", "100"], input: Data("a\nb\n".utf8))
        #expect(short.status != 0)
        #expect(short.output.hasPrefix("drained 2 in "), "\(short.output)")
    }

    @Test func badURLsPrintOneLineAndFail() async throws {
        let cases: [([String], String)] = [
            (["tail", "ftp://somewhere"], "unsupported URL scheme \"ftp\""),
            (["produce", "gopher://x"], "unsupported URL scheme"),
            (["bridge", "stdout:", "stdout:"], "stdout: is a sink only"),
            (["bridge", "stdin:", "stdin:"], "stdin: is a source only"),
            (["tail", "stdin:extra"], "expected stdin:"),
            (["tail", "file:"], "expected file:PATH"),
            (["tail", "file:/nonexistent/sluice-\(UUID().uuidString)"], "cannot open"),
            (["bridge", "stdin:", "file:/nonexistent/dir/x"], "cannot open"),
            (["tail", "redis://127.0.0.1:16379/0?mode=wat"], "invalid"),
            (["tail", "amqp://guest:hunter2@127.0.0.1:16672/?prefetch=1"], "missing queue"),
            (["produce", "kafka://127.0.0.1:19092"], "invalid Kafka URL"),
        ]
        for (arguments, expected) in cases {
            let result = try await sluiceIO(arguments, input: Data())
            #expect(result.status == 1, "\(arguments): \(result.status) \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(arguments): \(result.error)")
            #expect(result.error.contains(expected), "\(arguments): \(result.error)")
            #expect(!result.error.contains("hunter2"))
        }
    }

    /// An unreachable broker, as source or as sink: one line, non-zero, and no secret.
    @Test func anUnreachableBrokerPrintsOneLineWithoutSecrets() async throws {
        let secret = "hunter2-\(UUID().uuidString.prefix(6))"
        let cases: [[String]] = [
            ["tail", "redis://:\(secret)@127.0.0.1:1/0?key=k", "--count", "1"],
            ["tail", "amqp://guest:\(secret)@127.0.0.1:1/?queue=q&connect_timeout_ms=500", "--count", "1"],
            ["produce", "amqp://guest:\(secret)@127.0.0.1:1/?queue=q", "--count", "1", "--size", "1"],
            ["produce", "redis://:\(secret)@127.0.0.1:1/0?key=k", "--count", "1", "--size", "1"],
            ["produce", "kafka://u:\(secret)@127.0.0.1:1/t?sasl=plain&connect_timeout_ms=1000", "--count", "1", "--size", "1"],
            ["produce", "kafka://127.0.0.1:1/t?sasl.oauthbearer.client.secret=\(secret)&connect_timeout_ms=1000", "--count", "1", "--size", "1"],
            ["bridge", "stdin:", "redis://u:\(secret)@127.0.0.1:1/0?key=k"],
        ]
        for arguments in cases {
            let result = try await sluiceIO(arguments, input: Data("x\n".utf8))
            #expect(result.status == 1, "\(arguments.prefix(2)): \(result.status) \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(arguments.prefix(2)): \(result.error)")
            #expect(!(result.output + result.error).contains(String(secret.prefix(7))), "a secret was printed: \(result.error)")
        }
    }

    /// A Kafka secret property is redacted in the argument parser's messages (which repeat
    /// what was typed) and in the demo's opening line, like passwords are.
    @Test func kafkaSecretsNeverShowInUsageErrorsOrTheDemo() async throws {
        let secret = "hunter2-\(UUID().uuidString.prefix(6))"
        let url = "kafka://127.0.0.1:1/t?group=g&sasl.oauthbearer.client.secret=\(secret)&connect_timeout_ms=1000"
        for arguments in [["drain", "redis://127.0.0.1:1/0?key=k", url, "--count", "1"], ["demo", "--source", url, "--count", "1"]] {
            let result = try await sluiceIO(arguments)
            #expect(result.status != 0, "\(arguments.prefix(1)): \(result.error)")
            #expect(!(result.output + result.error).contains(String(secret.prefix(7))), "a secret was printed: \(result.output) \(result.error)")
        }
    }

    @Test func everySubcommandsHelpShowsAnExample() async throws {
        for command in ["drain", "tail", "produce", "bridge", "wordcount"] {
            let result = try await sluiceIO([command, "--help"])
            #expect(result.status == 0)
            #expect(result.output.contains("sluice \(command) "), "\(command) --help has no example: \(result.output)")
            // An example is runnable as shown: no redacted password in it.
            let examples = result.output.split(separator: "\n").filter { $0.hasPrefix("  sluice ") }
            #expect(!examples.isEmpty && examples.allSatisfy { !$0.contains("***") }, "\(command): \(examples)")
        }
    }
}
