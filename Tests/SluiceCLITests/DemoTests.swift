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

/// The numbers of the demo's summary line
/// (`processed P, failed F, retried R, dead-lettered D in S s (M msg/s)`).
struct DemoSummary: Equatable {
    var processed: Int
    var failed: Int
    var retried: Int
    var deadLettered: Int

    /// Reads the last line of `output`; `nil` if it is not a summary.
    init?(_ output: String) {
        guard let line = output.split(whereSeparator: \.isNewline).last else { return nil }
        let words = line.replacingOccurrences(of: ",", with: "").split(separator: " ")
        guard words.count >= 9, words[0] == "processed", words[2] == "failed", words[4] == "retried",
            words[6] == "dead-lettered", words[8] == "in",
            let processed = Int(words[1]), let failed = Int(words[3]), let retried = Int(words[5]), let dead = Int(words[7])
        else { return nil }
        (self.processed, self.failed, self.retried, self.deadLettered) = (processed, failed, retried, dead)
    }
}

/// Runs `sluice` with stdout and stderr on a new pseudo-terminal (util-linux `script`), off
/// the pool; returns its exit status and everything it wrote.
func runSluiceOnATerminal(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offPool {
        let quoted = ([sluiceExecutable().path] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        // -q: no banner; -e: the command's exit status; the typescript file is not wanted.
        process.arguments = ["-q", "-e", "-c", quoted.joined(separator: " "), "/dev/null"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TERM": "xterm"]) { $1 }
        process.standardInput = FileHandle.nullDevice
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let bytes = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: bytes, as: UTF8.self))
    }
}

@Suite("sluice demo", .timeLimit(.minutes(1)))
struct DemoTests {
    @Test("on a terminal the status is redrawn in place and the summary adds up")
    func onATerminal() async throws {
        let result = try await runSluiceOnATerminal(["demo", "--count", "2000"])
        #expect(result.status == 0, "\(result.output)")
        let escape = "\u{1B}"
        #expect(result.output.contains("\(escape)[4A\r\(escape)[J"), "the frame is redrawn in place: \(result.output.debugDescription)")
        #expect(result.output.contains("sluice demo  "))
        #expect(result.output.contains("done"))
        let summary = try #require(DemoSummary(result.output), "\(result.output)")
        #expect(summary.processed + summary.failed == 2000)
        #expect(summary.deadLettered == 20, "every hundredth order is malformed")
        #expect(summary.failed == summary.deadLettered)
        #expect(summary.retried >= 1, "the flaky store makes batches retry")
    }

    @Test("without a terminal: plain status lines on stderr, the summary last on stdout")
    func withoutATerminal() async throws {
        let result = try await sluice(["demo", "--count", "3000"])
        #expect(result.status == 0, "\(result.error)")
        #expect(!result.error.contains("\u{1B}"), "\(result.error.debugDescription)")
        let lines = result.error.split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("sluice demo  ") }, "\(result.error)")
        #expect(lines.last?.contains("done: processed 2,970, failed 30, ") == true, "\(result.error)")
        #expect(result.output.hasPrefix("sluice demo: 3000 orders generated in memory, 30 of them malformed\n"), "\(result.output)")
        let summary = try #require(DemoSummary(result.output), "\(result.output)")
        #expect(summary.processed == 2970 && summary.failed == 30 && summary.deadLettered == 30, "\(result.output)")
        #expect(result.output.contains("  stored eu: 990 orders"), "\(result.output)")

        let quiet = try await sluice(["demo", "--count", "100", "--status", "off"])
        #expect(quiet.status == 0 && quiet.error.isEmpty, "\(quiet.error)")
        #expect(DemoSummary(quiet.output) != nil)
    }

    @Test("reads orders from a Redis list: bounded by --count, malformed ones dead-lettered, the rest left")
    func onARedisList() async throws {
        let base = try redisURL()
        let key = "sluice-demo-\(UUID().uuidString)"
        let orders = (0..<300).map { "{\"id\":\($0),\"customer\":\($0 % 7),\"region\":\"\($0 % 2 == 0 ? "eu" : "us")\",\"amount\":2.5}" }
        let malformed = ["not json", "{\"id\":1}", "[]", "{\"id\":\"x\",\"customer\":1,\"region\":\"eu\",\"amount\":1}", ""]
        // The malformed ones spread among the first 305; 50 more valid orders stay behind.
        var items = orders
        for (index, bad) in malformed.enumerated() { items.insert(bad, at: index * 60) }
        items += (300..<350).map { "{\"id\":\($0),\"customer\":1,\"region\":\"eu\",\"amount\":1}" }
        _ = try await redisCLI(base, ["RPUSH", key] + items)
        let result = try await sluice(["demo", "--source", "\(base)/0?key=\(key)&mode=reliable", "--count", "305", "--status", "lines"])
        #expect(result.status == 0, "\(result.error)")
        let summary = try #require(DemoSummary(result.output), "\(result.output)")
        #expect(summary.processed == 300 && summary.failed == 5 && summary.deadLettered == 5, "\(result.output)")
        #expect(result.output.contains("  stored eu: 150 orders, amount 375.0"), "\(result.output)")
        let left = try await redisCLI(base, ["LLEN", key])
        #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "50")
        let dead = try await redisCLI(base, ["LLEN", "\(key):dead"])
        #expect(dead.trimmingCharacters(in: .whitespacesAndNewlines) == "5")
        _ = try await redisCLI(base, ["DEL", key, "\(key):dead"])
    }

    @Test("reads orders from a RabbitMQ queue: what it delivered beyond --count goes back to the queue")
    func onARabbitMQQueue() async throws {
        var items = (0..<200).map { "{\"id\":\($0),\"customer\":\($0 % 5),\"region\":\"us\",\"amount\":1}" }
        for index in [0, 50, 100] { items.insert("{\"malformed\": true}", at: index) }
        let (url, queue, client) = try await Brokers.rabbitQueue("demo", holding: items)
        let result = try await sluice(["demo", "--source", url, "--count", "150", "--status", "off"])
        #expect(result.status == 0, "\(result.error)")
        let summary = try #require(DemoSummary(result.output), "\(result.output)")
        // Which 150 of the 203 are handled depends on the processors' pace (they run in
        // parallel), how many is exact; the rest is back in the queue.
        #expect(summary.processed + summary.failed == 150, "\(result.output)")
        #expect(summary.failed == summary.deadLettered && summary.failed <= 3, "\(result.output)")
        #expect(try await Brokers.readyCount(client, queue, reaching: 53) == 53)
        try await client.delete(queue: queue)
        await client.close()
    }

    @Test("SIGINT drains gracefully: the summary of what was handled, exit status 130")
    func interruptDrains() async throws {
        let started = try startSluice(["demo", "--count", "1000000", "--status", "lines"])
        try await pause(milliseconds: 1500)
        kill(started.process.processIdentifier, SIGINT)
        let result = try await finished(started)
        #expect(result.status == 130, "\(result.error)")
        let summary = try #require(DemoSummary(result.output), "\(result.output)")
        #expect(summary.processed > 0 && summary.processed + summary.failed < 1_000_000, "\(result.output)")
        #expect(summary.failed == summary.deadLettered)
    }

    @Test("bad input: one line on stderr, a non-zero status, never a password")
    func badInput() async throws {
        let secret = "s3cretPassw0rd"
        let cases: [(arguments: [String], says: String)] = [
            (["demo", "--source", "redis://127.0.0.1:16379/0?mode=wat"], "invalid"),
            (["demo", "--source", "redis://user:\(secret)@127.0.0.1:16379/0?mode=wat"], "invalid"),
            (["demo", "--source", "ftp://somewhere"], "unsupported URL scheme"),
            (["demo", "--source", "redis://:\(secret)@127.0.0.1:1/0?key=orders"], "cannot connect"),
            (["demo", "--source", "amqp://guest:\(secret)@127.0.0.1:1/?queue=orders"], "127.0.0.1:1"),
        ]
        for (arguments, says) in cases {
            let result = try await sluice(arguments)
            #expect(result.status == 1, "\(arguments): \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(arguments): \(result.error)")
            #expect(result.error.contains(says), "\(arguments): \(result.error)")
            #expect(!(result.output + result.error).contains(secret), "\(arguments): the password was printed")
        }
        for count in ["0", "-5", "100000001"] {
            let result = try await sluice(["demo", "--count", count])
            #expect(result.status != 0)
            #expect(result.error.hasPrefix("Error: invalid --count \(count): it must be a whole number from 1 to 100000000"), "\(result.error)")
        }
    }

    @Test("--help shows working examples")
    func helpShowsExamples() async throws {
        let result = try await sluice(["demo", "--help"])
        #expect(result.status == 0)
        #expect(result.output.contains("sluice demo --count 2000"), "\(result.output)")
        #expect(result.output.contains("--source"))
    }
}
