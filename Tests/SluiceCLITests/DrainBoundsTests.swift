//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What `sluice drain` costs: resident memory over millions of items, and how soon it exits
/// once it has its count. Both are measured on the process itself, with nothing in between
/// that adds its own latency (no redis-cli process for the push, no Foundation polling for the
/// exit).
@Suite("sluice drain bounds", .serialized, .timeLimit(.minutes(3)))
struct DrainBoundsTests {
    private func key(_ purpose: String) -> String { "sluice-cli-\(purpose)-\(UUID().uuidString.prefix(8))" }

    /// Issue 13: a reliable drain of 3 000 000 items of 100 bytes stays under 100 MiB resident
    /// (the processing list and what the process holds are bounded by the window, not by the
    /// list). The peak (`VmHWM`) is sampled until the process ends.
    @Test func aReliableDrainOfThreeMillionItemsStaysUnder100MiB() async throws {
        let base = try redisURL()
        let key = self.key("rss")
        let total = 3_000_000
        defer { _ = try? runRedis(base, ["DEL", key, "\(key):processing:rss", "\(key):positions:rss", "\(key):alive:rss", "\(key):consumers"]) }
        let length = try await redisCLI(base, ["EVAL", hundredByteItems, "1", key, "\(total)"])
        #expect(length.trimmingCharacters(in: .whitespacesAndNewlines) == "\(total)")

        let started = try startSluice(["drain", "\(base)/0?key=\(key)&mode=reliable&consumer=rss", "--count", "\(total)"])
        let pid = started.process.processIdentifier
        let (result, peakKiB) = try await offPool { () -> ((status: Int32, output: String, error: String), Int) in
            let peak = Mutex(0)
            let sampler = Thread {
                while let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
                    let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
                    if let kib = line?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
                        peak.withLock { $0 = max($0, kib) }
                    }
                    usleep(50_000)
                }
            }
            sampler.start()
            let result = finish(started)
            return (result, peak.withLock { $0 })
        }
        #expect(result.status == 0 && result.output.hasPrefix("drained \(total) in "), "\(result.error)")
        #expect(peakKiB > 0, "no VmHWM sample of the drain")
        #expect(peakKiB < 100 * 1024, "the drain peaked at \(peakKiB / 1024) MiB resident")
        #expect(try await redisCLI(base, ["LLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(try await redisCLI(base, ["LLEN", "\(key):processing:rss"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    /// Issue 13: `drain --count 1` on an empty list or stream exits within 30 ms after the
    /// item arrives (it sends no blocking read after it has its count). The push goes over a
    /// socket of the test's own, and the exit is when the drain's standard output closes.
    /// The best of five rounds counts, to keep a loaded machine's scheduling out of it.
    @Test(arguments: ["list", "reliable", "stream"])
    func drainOfOneExitsWithin30msOfTheItem(mode: String) async throws {
        let base = try redisURL()
        let components = try #require(URLComponents(string: base))
        let port = UInt16(components.port ?? 6379)
        var rounds: [Duration] = []
        for _ in 0..<5 {
            let key = self.key("one")
            defer { _ = try? runRedis(base, ["DEL", key]) }
            let started = try startSluice(["drain", "\(base)/0?key=\(key)&mode=\(mode)&block_ms=2000", "--count", "1"])
            let closed = Mutex<ContinuousClock.Instant?>(nil)
            let output = Mutex(Data())
            let reader = Thread {
                let data = started.output.fileHandleForReading.readDataToEndOfFile()
                closed.withLock { $0 = .now }
                output.withLock { $0 = data }
            }
            reader.start()
            try await pause(milliseconds: 400)
            let command = mode == "stream" ? ["XADD", key, "*", "payload", "x"] : ["RPUSH", key, "x"]
            let pushed = try await offPool { try rawRedisCommand(port: port, command) }
            try await exited(started)
            while closed.withLock({ $0 }) == nil { try await pause(milliseconds: 1) }
            rounds.append(closed.withLock { $0! } - pushed)
            let text = String(decoding: output.withLock { $0 }, as: UTF8.self)
            #expect(started.process.terminationStatus == 0 && text.hasPrefix("drained 1 in "), "\(text)")
        }
        #expect(rounds.min()! < .milliseconds(30), "the drain exited \(rounds) after the push's reply")
    }
}

/// A script that pushes ARGV[1] items of 100 bytes to the list KEYS[1] and returns its
/// length: 1 000 items per `RPUSH` inside Redis, so 3 000 000 take about a second.
let hundredByteItems = """
    local p = string.rep('x', 100)
    for i = 1, tonumber(ARGV[1]), 1000 do
      local t = {}
      for j = 1, 1000 do t[j] = p end
      redis.call('RPUSH', KEYS[1], unpack(t))
    end
    return redis.call('LLEN', KEYS[1])
    """

/// Sends one command to Redis on 127.0.0.1:`port` over a socket of its own (no client process
/// in the measure) and returns when the reply's first line arrived.
func rawRedisCommand(port: UInt16, _ command: [String]) throws -> ContinuousClock.Instant {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw RawRedisFailed(what: "socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw RawRedisFailed(what: "connect") }
    var request = "*\(command.count)\r\n"
    for argument in command { request += "$\(argument.utf8.count)\r\n\(argument)\r\n" }
    let bytes = Array(request.utf8)
    guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
        throw RawRedisFailed(what: "write")
    }
    var reply: [UInt8] = []
    var byte: UInt8 = 0
    while reply.last != UInt8(ascii: "\n") {
        guard read(fd, &byte, 1) == 1 else { throw RawRedisFailed(what: "read") }
        reply.append(byte)
    }
    let answered = ContinuousClock.now
    guard reply.first != UInt8(ascii: "-") else { throw RawRedisFailed(what: String(decoding: reply, as: UTF8.self)) }
    return answered
}

/// ``rawRedisCommand(port:_:)`` failed.
struct RawRedisFailed: Error, CustomStringConvertible {
    let what: String
    var description: String { "raw Redis command failed: \(self.what)" }
}
