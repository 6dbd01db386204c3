//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
@_spi(Internal) import SluiceKafka
import Testing

/// `sluice drain kafka://…`, run as the built executable, against the real broker.
@Suite("sluice drain kafka://", .timeLimit(.minutes(1)))
struct KafkaDrainCommandTests {
    /// Runs the `sluice` executable built next to the test bundle (with this process's
    /// environment, so it loads the librdkafka that `scripts/brokers env` put on the path).
    static func runSluice(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: directory.appendingPathComponent("sluice").path) {
            directory = Bundle.main.bundleURL.deletingLastPathComponent()
        }
        let process = Process()
        process.executableURL = directory.appendingPathComponent("sluice")
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    @Test func drainsExactlyTheCountAndCommitsIt() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("cli")
        try await KafkaTestEnvironment.produce(configuration, count: 300)
        let url = "kafka://\(configuration.bootstrapServers[0])/\(configuration.topics[0])?group=\(configuration.group)&offset=earliest&session.timeout.ms=6000"
        let result = try await KafkaAdmin.onThread { try Self.runSluice(["drain", url, "--count", "200", "--max-demand", "50", "--concurrency", "1"]) }
        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.last?.hasPrefix("drained 200 in ") == true, "\(result.output)")
        #expect(lines.last?.hasSuffix("msg/s)") == true)
        // One partition, one processor: the 200 drained are exactly the first 200 offsets.
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 200)
    }

    @Test func aBadKafkaURLPrintsOneLineAndFails() async throws {
        let result = try await KafkaAdmin.onThread { try Self.runSluice(["drain", "kafka://127.0.0.1:19092/orders?offset=middle", "--count", "1"]) }
        #expect(result.status != 0)
        #expect(result.error.split(separator: "\n").count == 1)
        #expect(result.error.contains("invalid Kafka URL"))
    }
}
