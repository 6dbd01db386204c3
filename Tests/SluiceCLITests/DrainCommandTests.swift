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

/// The `sluice` executable built next to the test bundle.
func sluiceExecutable() -> URL {
    let bundle = Bundle.main.bundleURL.deletingLastPathComponent()
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    if !FileManager.default.fileExists(atPath: directory.appendingPathComponent("sluice").path) {
        directory = bundle
    }
    return directory.appendingPathComponent("sluice")
}

/// Runs the `sluice` executable built next to the test bundle.
func runSluice(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = sluiceExecutable()
    process.arguments = arguments
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    let (out, err) = readToEnd(output, error)
    process.waitUntilExit()
    return (process.terminationStatus, out, err)
}

/// Reads a child's standard output and standard error to their ends at the same time (error
/// on a thread of its own), so that neither pipe can fill up and stall the child while the
/// other is read; call it before waiting for the child.
func readToEnd(_ output: Pipe, _ error: Pipe) -> (output: String, error: String) {
    let errorText = Mutex("")
    let done = DispatchSemaphore(value: 0)
    let reader = Thread {
        let data = error.fileHandleForReading.readDataToEndOfFile()
        errorText.withLock { $0 = String(decoding: data, as: UTF8.self) }
        done.signal()
    }
    reader.start()
    let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    done.wait()
    return (out, errorText.withLock { $0 })
}

func redisURL() throws -> String {
    guard let url = ProcessInfo.processInfo.environment["SLUICE_REDIS_URL"] else {
        throw BrokersNotStarted()
    }
    return url
}

struct BrokersNotStarted: Error, CustomStringConvertible {
    var description: String {
        "SLUICE_REDIS_URL is not set: start the brokers with `scripts/brokers up` and `eval \"$(scripts/brokers env)\"` (or run scripts/test)"
    }
}

@Suite struct DrainCommandTests {
    @Test func drainsExactlyTheCountAndLeavesTheRest() async throws {
        let base = try redisURL()
        let key = "sluice-cli-\(UUID().uuidString)"
        let push = try await redisCLI(base, ["RPUSH", key] + (0..<300).map { "item-\($0)" })
        #expect(push.contains("300"))
        let result = try await sluice(["drain", "\(base)/0?key=\(key)&mode=reliable", "--count", "200", "--max-demand", "50"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("drained 200 in "))
        #expect(result.output.contains("msg/s)"))
        let left = try await redisCLI(base, ["LLEN", key])
        #expect(left.trimmingCharacters(in: .whitespacesAndNewlines) == "100")
        _ = try await redisCLI(base, ["DEL", key])
    }

    @Test func aBadURLPrintsOneLineAndFails() async throws {
        let result = try await sluice(["drain", "redis://127.0.0.1:16379/0?mode=wat", "--count", "1"])
        #expect(result.status != 0)
        #expect(result.error.split(separator: "\n").count == 1)
        #expect(result.error.contains("invalid"))
        let scheme = try await sluice(["drain", "ftp://somewhere", "--count", "1"])
        #expect(scheme.status != 0)
        #expect(scheme.error.split(separator: "\n").count == 1)
        #expect(scheme.error.contains("unsupported URL scheme"))
    }

    @Test func anUnreachableBrokerPrintsOneLineAndFails() async throws {
        let result = try await sluice(["drain", "redis://127.0.0.1:1/0?key=nothing", "--count", "1"])
        #expect(result.status != 0)
        #expect(result.error.split(separator: "\n").count == 1)
        #expect(result.error.contains("cannot connect"))
    }
}

/// Runs a Redis command with redis-cli against the URL's host and port.
func runRedis(_ url: String, _ command: [String]) throws -> String {
    let components = URLComponents(string: url)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
    process.arguments = ["-h", components?.host ?? "127.0.0.1", "-p", "\(components?.port ?? 6379)"] + command
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    // Read before waiting: a reply larger than the pipe holds would stall redis-cli otherwise.
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return text
}
