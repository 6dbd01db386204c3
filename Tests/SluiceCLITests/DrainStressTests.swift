//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A started `sluice` (its process is used from one test at a time).
struct StartedSluice: @unchecked Sendable {
    let process: Process
    let output: Pipe
    let error: Pipe
}

/// Runs blocking work (waiting for a process, sleeping) on a thread of its own, so that the
/// tests never hold one of the cooperative pool's few threads while they wait.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// ``runRedis(_:_:)`` off the pool.
func redisCLI(_ url: String, _ command: [String]) async throws -> String {
    try await offPool { try runRedis(url, command) }
}

/// ``runSluice(_:)`` off the pool.
func sluice(_ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
    try await offPool { try runSluice(arguments) }
}

/// Waits off the pool for a started `sluice` and returns what it printed.
func finished(_ started: StartedSluice) async throws -> (status: Int32, output: String, error: String) {
    try await offPool { finish(started) }
}

/// Waits off the pool until a started `sluice` exited.
func exited(_ started: StartedSluice) async throws {
    try await offPool { started.process.waitUntilExit() }
}

/// Sleeps without holding a pool thread.
func pause(milliseconds: Int) async throws {
    try await Task.sleep(for: .milliseconds(milliseconds))
}

/// The `sluice` executable, started and left running (for signals and timing).
func startSluice(_ arguments: [String], environment: [String: String] = [:]) throws -> StartedSluice {
    let process = Process()
    process.executableURL = sluiceExecutable()
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    return StartedSluice(process: process, output: output, error: error)
}

/// Waits for a started `sluice` and returns what it printed.
func finish(_ started: StartedSluice) -> (status: Int32, output: String, error: String) {
    let (out, err) = readToEnd(started.output, started.error)
    started.process.waitUntilExit()
    return (started.process.terminationStatus, out, err)
}

/// A `redis-server` of the test's own on a random loopback port (never the shared one),
/// stopped by its process id.
final class PrivateRedis: @unchecked Sendable {
    let port = Int.random(in: 30_000...32_000)
    private let process = Process()

    /// Starts one and waits (off the pool) until it answers.
    static func start(bind: String = "127.0.0.1", extra: [String] = []) async throws -> PrivateRedis {
        try await offPool { try PrivateRedis(bind: bind, extra: extra) }
    }

    private init(bind: String, extra: [String]) throws {
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        self.process.arguments = ["--port", "\(self.port)", "--bind", bind, "--save", "", "--appendonly", "no"] + extra
        self.process.standardOutput = FileHandle.nullDevice
        self.process.standardError = FileHandle.nullDevice
        try self.process.run()
        let host = bind.contains(":") ? bind : "127.0.0.1"
        let password = extra.firstIndex(of: "--requirepass").map { extra[$0 + 1] }
        for _ in 0..<200 {
            if (try? self.cli(host: host, password: password, ["PING"]))?.contains("PONG") == true { return }
            usleep(20_000)
        }
        throw CLITestFailure("redis-server on \(self.port) did not answer")
    }

    /// ``cli(host:password:_:)`` off the pool.
    func command(host: String = "127.0.0.1", password: String? = nil, _ command: [String]) async throws -> String {
        try await offPool { try self.cli(host: host, password: password, command) }
    }

    func cli(host: String = "127.0.0.1", password: String? = nil, _ command: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = ["-h", host, "-p", "\(self.port)"] + (password.map { ["-a", $0, "--no-auth-warning"] } ?? []) + command
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    func stop() {
        kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }
}

struct CLITestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `sluice drain` under stress (issue 13): the count caps what it takes, signals drain
/// gracefully, hostile input gets one-line typed errors, passwords never appear, and a
/// drain of one item ends right after it.
@Suite("sluice drain under stress", .serialized, .timeLimit(.minutes(2)))
struct DrainStressTests {
    private func key(_ purpose: String) -> String { "sluice-cli-\(purpose)-\(UUID().uuidString.prefix(8))" }

    /// Draining 1000 of ids 0–9999 with demand far above the count takes exactly 1000 and
    /// leaves 1000…9999 in their order: nothing was taken beyond the count and given back.
    @Test(arguments: ["list", "reliable"])
    func theCountCapsDemandAndTheRestKeepsItsOrder(mode: String) async throws {
        let base = try redisURL()
        let key = self.key("cap")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        for start in stride(from: 0, to: 10_000, by: 2000) {
            _ = try await redisCLI(base, ["RPUSH", key] + (start..<start + 2000).map { "\($0)" })
        }
        let result = try await sluice(["drain", "\(base)/0?key=\(key)&mode=\(mode)&batch=5000", "--count", "1000", "--max-demand", "5000", "--concurrency", "4"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("drained 1000 in "))
        let left = try await redisCLI(base, ["LRANGE", key, "0", "-1"]).split(separator: "\n").map(String.init)
        #expect(left == (1000..<10_000).map { "\($0)" })
        let extra = try await redisCLI(base, ["KEYS", "\(key):*"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(extra.isEmpty, "no processing list or positions left: \(extra)")
    }

    /// A stream drain takes exactly the count, leaves nothing pending and removes its
    /// (random) consumer from the group.
    @Test func aStreamDrainLeavesNothingPendingAndNoConsumer() async throws {
        let base = try redisURL()
        let key = self.key("stream")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        _ = try await redisCLI(base, ["EVAL", "for i = 1, 300 do redis.call('XADD', KEYS[1], '*', 'payload', i) end return 1", "1", key])
        let result = try await sluice(["drain", "\(base)/0?key=\(key)&mode=stream", "--count", "100", "--max-demand", "1000"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("drained 100 in "))
        let group = try await redisCLI(base, ["XINFO", "GROUPS", key])
        #expect(group.contains("sluice"))
        let consumers = try await redisCLI(base, ["XINFO", "CONSUMERS", key, "sluice"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(consumers.isEmpty, "the drain's consumer is gone: \(consumers)")
        let pending = try await redisCLI(base, ["XPENDING", key, "sluice"]).split(separator: "\n").first.map(String.init)
        #expect(pending == "0")
        // The next drain reads on from the 101st entry.
        let next = try await sluice(["drain", "\(base)/0?key=\(key)&mode=stream", "--count", "200"])
        #expect(next.status == 0 && next.output.hasPrefix("drained 200 in "), "\(next.error)")
    }

    /// SIGINT and SIGTERM drain gracefully: the summary line, exit status 130 or 143, and in
    /// list mode nothing popped is lost, in reliable mode nothing is left in the processing list.
    @Test(arguments: [("list", SIGINT), ("reliable", SIGTERM), ("list", SIGTERM), ("reliable", SIGINT)])
    func aSignalDrainsGracefully(mode: String, signal: Int32) async throws {
        let base = try redisURL()
        let key = self.key("signal")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        _ = try await redisCLI(base, ["RPUSH", key] + (0..<3000).map { "\($0)" })
        let started = try startSluice(["drain", "\(base)/0?key=\(key)&mode=\(mode)", "--count", "1000000", "--max-demand", "100"])
        var emptied = false
        for _ in 0..<200 where !emptied {
            try await pause(milliseconds: 50)
            emptied = try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines) == "0"
        }
        #expect(emptied)
        _ = try await redisCLI(base, ["RPUSH", key] + (3000..<3010).map { "\($0)" })
        try await pause(milliseconds: 200)
        kill(started.process.processIdentifier, signal)
        let result = try await finished(started)
        #expect(result.status == 128 + signal, "\(result.error)")
        let drained = result.output.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        let left = Int(try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(result.output.hasPrefix("drained "), "\(result.output)")
        #expect(drained.map { $0 + left } == 3010, "drained \(drained ?? -1) and \(left) left of 3010")
        let extra = try await redisCLI(base, ["KEYS", "\(key):*"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(extra.isEmpty, "no processing list left: \(extra)")
    }

    /// Bad numbers are one-line errors that say the value is invalid and the range; `--count
    /// -5` is read as a value, not an unknown option. Values the parser cannot read as a number
    /// (`1e3`, 10^20, `abc`) are one line too, with the option's range, not the usage block.
    @Test func badNumbersAreOneLineErrors() async throws {
        for arguments in [["--count", "-5"], ["--count", "0"], ["--count", "1", "--concurrency", "-1"], ["--count", "1", "--concurrency", "0"], ["--count", "1", "--max-demand", "0"], ["--count", "1", "--concurrency", "1025"], ["--count", "1", "--max-demand", "1000001"]] {
            let result = try await sluice(["drain", "redis://127.0.0.1:1/0?key=k"] + arguments)
            #expect(result.status == 64)
            #expect(result.error.hasPrefix("Error: invalid --"), "\(arguments): \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(arguments): \(result.error)")
        }
        let unreadable = [
            ["--count", "abc"], ["--count", "99999999999999999999"], ["--count", "1e3"], ["--count", "-9223372036854775809"],
            ["--count", "1", "--concurrency", "100000000000000000000"], ["--count", "1", "--max-demand", "100000000000000000000"],
            ["--count", "1", "--max-demand", "1.5"],
        ]
        for arguments in unreadable {
            let result = try await sluice(["drain", "redis://127.0.0.1:1/0?key=k"] + arguments)
            #expect(result.status == 64)
            #expect(result.error.hasPrefix("Error: The value '"), "\(arguments): \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1, "\(arguments): \(result.error)")
            #expect(result.error.contains("1 or more") || result.error.contains("1 to 10"), "the range is named: \(result.error)")
        }
        for parameter in ["block_ms=9223372036854775807", "ttl_ms=1000000000000000", "claim_idle_ms=99999999999999", "reap_ms=0", "batch=-1", "max_in_flight=0"] {
            let result = try await sluice(["drain", "redis://127.0.0.1:1/0?key=k&\(parameter)", "--count", "1"])
            #expect(result.status == 1, "\(parameter): \(result.error)")
            #expect(result.error.split(separator: "\n").count == 1)
            #expect(result.error.contains("must be a whole number from"), "\(parameter): \(result.error)")
        }
        let long = try await sluice(["drain", "redis://127.0.0.1:1/0?key=" + String(repeating: "k", count: 5000) + "&mode=wat", "--count", "1"])
        #expect(long.error.split(separator: "\n").count == 1)
        #expect(long.error.count < 600, "the URL is shown at most 200 characters long: \(long.error.count)")
    }

    /// A password never appears in any output, whatever the URL's shape and whichever error
    /// path prints it.
    @Test func aPasswordNeverAppears() async throws {
        let base = try redisURL()
        let authority = base.replacingOccurrences(of: "redis://", with: "")
        let secret = "hunter2-\(UUID().uuidString.prefix(6))"
        let cases: [[String]] = [
            ["drain", "redis://:\(secret)@\(authority)/0?key=k&mode=wat", "--count", "1"],
            ["drain", "redis://u:\(secret)@\(authority)/0?key=k&bogus=1", "--count", "1"],
            ["drain", "redis://\(authority)/0?key=k&password=\(secret)&password=\(secret)", "--count", "1"],
            ["drain", "unix:///tmp/none.sock?key=k&password=x&password=\(secret)", "--count", "1"],
            ["drain", "redis://\(authority)/0?key=k&dead=password=\(secret)&batch=0", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--count", "1", "extra"],
            ["drain", "--count", "1", "redis://:\(secret)@\(authority)/0?key=k", "redis://:\(secret)@other/"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--count", "-5"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--count", "abc"],
            ["drain", "redis:/:\(secret)@\(authority)/0?key=k", "--count", "1"],
            ["drain", "redis:\(secret)@\(authority)/0?key=k", "--count", "1"],
            ["drain", "redis:u:\(secret)@\(authority)/0?key=k", "--count", "1"],
            ["drain", "redis:///:\(secret)@\(authority)/0?key=k", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k&command_timeout_ms=0", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k&password_env=SLUICE_NOT_SET", "--count", "1"],
            ["drain", "redis://:\(secret)@nonexistent.invalid/0?key=k", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--count", "1", "--password-file", "/nonexistent/password-file"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--bogus"],
            ["drain", "redis://:\(secret)@127.0.0.1:1/0?key=k", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority)/0?key=k", "--count", "1"],
            ["drain", "redis://:p%40\(secret)@\(authority)/0?key=k&mode=x", "--count", "1"],
            ["drain", "redis://:\(secret)@[::1:1/0?key=k", "--count", "1"],
            ["drain", "redis://:\(secret)@\(authority):99999999999/0?key=k", "--count", "1"],
            ["drain", "redis://:\(secret)@/0?key=k", "--count", "1"],
            ["drain", "redis://:a/\(secret)@\(authority)/0?key=k", "--count", "1"],
        ]
        for arguments in cases {
            let result = try await sluice(arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(!(result.output + result.error).contains(secret), "the password was printed for \(arguments.dropFirst()): \(result.error)")
            #expect(!(result.output + result.error).contains(String(secret.prefix(7))), "part of the password was printed: \(result.error)")
        }
    }

    /// The password can come from a file or an environment variable, so it need not be in
    /// the URL (or `ps`); a wrong one fails without printing it.
    @Test func thePasswordCanComeFromAFileOrTheEnvironment() async throws {
        let secret = "s3cret-\(UUID().uuidString.prefix(6))"
        let redis = try await PrivateRedis.start(extra: ["--requirepass", secret])
        defer { redis.stop() }
        _ = try await redis.command(password: secret, ["RPUSH", "k", "a", "b", "c", "d"])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-pw-\(UUID().uuidString)")
        try Data("\(secret)\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let url = "redis://127.0.0.1:\(redis.port)/0?key=k"
        let fromFile = try await sluice(["drain", url, "--count", "2", "--password-file", file.path])
        #expect(fromFile.status == 0 && fromFile.output.hasPrefix("drained 2 in "), "\(fromFile.error)")
        let fromEnvironment = try await finished(try startSluice(["drain", url + "&password_env=SLUICE_TEST_PASSWORD", "--count", "2"], environment: ["SLUICE_TEST_PASSWORD": secret]))
        #expect(fromEnvironment.status == 0 && fromEnvironment.output.hasPrefix("drained 2 in "), "\(fromEnvironment.error)")
        let unset = try await sluice(["drain", url + "&password_env=SLUICE_TEST_UNSET_PASSWORD", "--count", "1"])
        #expect(unset.status == 1 && unset.error.contains("not set"), "\(unset.error)")
        let wrong = try await finished(try startSluice(["drain", url + "&password_env=SLUICE_TEST_PASSWORD", "--count", "1"], environment: ["SLUICE_TEST_PASSWORD": "wrong-\(secret)"]))
        #expect(wrong.status == 1 && wrong.error.contains("refused the credentials"), "\(wrong.error)")
        #expect(!(wrong.output + wrong.error).contains(secret))
    }

    /// An IPv6 literal connects.
    @Test func anIPv6LiteralConnects() async throws {
        let redis = try await PrivateRedis.start(bind: "::1")
        defer { redis.stop() }
        _ = try await redis.command(host: "::1", ["RPUSH", "k", "a", "b", "c"])
        let result = try await sluice(["drain", "redis://[::1]:\(redis.port)/0?key=k&mode=list", "--count", "3"])
        #expect(result.status == 0 && result.output.hasPrefix("drained 3 in "), "\(result.error)")
    }

    /// A server that accepts the connection and never answers: "timed out after N s".
    @Test func aSilentServerTimesOut() async throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0)
        #expect(listen(listener, 16) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let started = ContinuousClock.now
        let result = try await sluice(["drain", "redis://127.0.0.1:\(port)/0?key=k&command_timeout_ms=500", "--count", "1"])
        #expect(result.status == 1)
        // With a password, the AUTH times out: the same line, without the password.
        let secret = "silent-\(UUID().uuidString.prefix(8))"
        let authenticating = try await sluice(["drain", "redis://u:\(secret)@127.0.0.1:\(port)/0?key=k&command_timeout_ms=500", "--count", "1"])
        #expect(authenticating.status == 1)
        #expect(authenticating.error.contains("timed out after 0.5 s") || authenticating.error.contains("timed out after 0.6 s"), "\(authenticating.error)")
        #expect(!(authenticating.output + authenticating.error).contains(secret), "\(authenticating.error)")
        // 0.5 s, plus the block timeout on the read connection (which also sends blocking reads).
        #expect(result.error.contains("timed out after 0.5 s") || result.error.contains("timed out after 0.6 s"), "\(result.error)")
        #expect(!result.error.contains("Resource temporarily unavailable"))
        #expect(result.error.split(separator: "\n").count == 1)
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}

/// A reliable drain killed with `kill -9` leaves at most its window in its processing list
/// (what would be delivered again): with no `max_in_flight` in the URL, the pipeline's window,
/// `--concurrency` × `--max-demand` (2 × 200 here). A drain restarted under the same consumer
/// name gives those back first and finishes the list: nothing is lost.
@Suite("sluice drain killed", .timeLimit(.minutes(1)))
struct DrainKilledTests {
    @Test func aKilledReliableDrainLeavesAtMostTheWindow() async throws {
        let base = try redisURL()
        let key = "sluice-cli-kill-\(UUID().uuidString.prefix(8))"
        defer { _ = try? runRedis(base, ["EVAL", "return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])", "5", key, "\(key):processing:killme", "\(key):positions:killme", "\(key):alive:killme", "\(key):consumers"]) }
        let total = 100_000
        _ = try await redisCLI(base, ["EVAL", "for i = 1, tonumber(ARGV[1]) do redis.call('RPUSH', KEYS[1], i) end return 1", "1", key, "\(total)"])
        let url = "\(base)/0?key=\(key)&mode=reliable&consumer=killme"
        let window = 2 * 200
        let started = try startSluice(["drain", url, "--count", "1000000", "--max-demand", "200"])
        var most = 0
        var left = total
        while left > total * 9 / 10 {
            try await pause(milliseconds: 20)
            left = Int(try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? total
            most = max(most, Int(try await redisCLI(base, ["LLEN", "\(key):processing:killme"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0)
        }
        kill(started.process.processIdentifier, SIGKILL)
        _ = try await finished(started)
        let stranded = Int(try await redisCLI(base, ["LLEN", "\(key):processing:killme"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(stranded >= 0 && stranded <= window, "\(stranded) items to deliver again against a window of \(window)")
        #expect(most <= window, "the processing list held \(most) while running, against a window of \(window)")
        left = Int(try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(left > 0, "killed before it finished")
        let again = try await sluice(["drain", url, "--count", "\(left + stranded)"])
        #expect(again.status == 0, "\(again.error)")
        #expect(try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(try await redisCLI(base, ["LLEN", "\(key):processing:killme"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }
}
