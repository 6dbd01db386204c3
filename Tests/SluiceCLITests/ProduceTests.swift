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

/// `sluice produce`: standard input's lines (or generated payloads) into each broker, read
/// back and compared; the numeric options' ranges.
@Suite("sluice produce", .timeLimit(.minutes(1)))
struct ProduceTests {
    @Test func linesGoIntoARedisListInOrder() async throws {
        let base = try redisURL()
        let key = Brokers.unique("produce")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        let lines = (0..<3000).map { "line-\($0) with spaces" }
        let result = try await sluiceIO(["produce", "\(base)/0?key=\(key)", "--batch", "100"], input: Data(lines.joined(separator: "\n").utf8))
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("produced 3000 in "), "\(result.output)")
        #expect(result.output.hasSuffix("msg/s)\n"))
        #expect(try await redisCLI(base, ["LRANGE", key, "0", "-1"]).split(separator: "\n").map(String.init) == lines)
    }

    @Test func linesGoIntoKafkaAndComeBack() async throws {
        let (url, _) = try await Brokers.kafkaTopic("produce")
        let lines = (0..<500).map { "kafka line \($0)" }
        let result = try await sluiceIO(["produce", url], input: Data((lines.joined(separator: "\n") + "\n").utf8))
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("produced 500 in "), "\(result.output)")
        let back = try await sluiceIO(["tail", url, "--count", "500", "--format", "json"])
        #expect(back.status == 0, "\(back.error)")
        #expect(try jsonPayloads(back.output) == lines)
    }

    /// With `declare=true` the sink declares the queue it publishes to, as a source would.
    @Test func aRabbitMQSinkWithDeclareCreatesItsQueue() async throws {
        let base = try Brokers.rabbitMQ()
        let queue = Brokers.unique("produce-declare")
        let url = "\(base)?queue=\(queue)&durable=false"
        let refused = try await sluiceIO(["produce", url], input: Data("one\n".utf8))
        #expect(refused.status == 1 && refused.error.contains("unroutable"), "without declare: \(refused.error)")
        let result = try await sluiceIO(["produce", url + "&declare=true"], input: Data("one\ntwo\nthree\n".utf8))
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("produced 3 in "), "\(result.output)")
        var configuration = try RabbitMQConfiguration(url: url)
        configuration.topology.declare = false
        let client = RabbitMQClient(configuration: configuration)
        #expect(try await client.readyCount(queue) == 3)
        try await client.delete(queue: queue)
        await client.close()
    }

    @Test func linesGoIntoRabbitMQAndComeBack() async throws {
        let (url, queue, client) = try await Brokers.rabbitQueue("produce")
        let lines = (0..<400).map { "rabbit line \($0)" }
        let result = try await sluiceIO(["produce", url], input: Data(lines.joined(separator: "\n").utf8))
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("produced 400 in "), "\(result.output)")
        #expect(try await Brokers.readyCount(client, queue, reaching: 400) == 400)
        let back = try await sluiceIO(["drain", url, "--count", "400"])
        #expect(back.status == 0, "\(back.error)")
        #expect(try await client.readyCount(queue) == 0)
        try await client.delete(queue: queue)
        await client.close()
    }

    @Test func generatedPayloadsHaveTheCountAndSize() async throws {
        let base = try redisURL()
        let key = Brokers.unique("generated")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        let result = try await sluiceIO(["produce", "\(base)/0?key=\(key)", "--count", "2500", "--size", "64"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("produced 2500 in "), "\(result.output)")
        let items = try await redisCLI(base, ["LRANGE", key, "0", "-1"]).split(separator: "\n").map(String.init)
        #expect(items.count == 2500)
        #expect(items.allSatisfy { $0.utf8.count == 64 })
        #expect(items.first == "1" + String(repeating: "x", count: 63))
        #expect(items.last == "2500" + String(repeating: "x", count: 60))
    }

    @Test func numericOptionsOutOfRangeAreOneLineErrors() async throws {
        let cases: [([String], String)] = [
            (["--count", "0"], "invalid --count 0"),
            (["--count", "-5"], "invalid --count -5"),
            (["--count", "2000000000"], "invalid --count"),
            (["--count", "1", "--size", "0"], "invalid --size 0"),
            (["--count", "1", "--size", "1048577"], "invalid --size"),
            (["--batch", "0"], "invalid --batch 0"),
            (["--batch", "100001"], "invalid --batch"),
            (["--size", "10"], "--size needs --count"),
        ]
        for (arguments, expected) in cases {
            let result = try await sluiceIO(["produce", "redis://127.0.0.1:1/0?key=k"] + arguments, input: Data())
            #expect(result.status != 0, "\(arguments)")
            #expect(result.error.hasPrefix("Error: "), "\(arguments): \(result.error)")
            #expect(result.error.contains(expected), "\(arguments): \(result.error)")
        }
        for (command, arguments) in [("tail", ["--count", "0"]), ("bridge", ["stdout:", "--count", "0"]), ("bridge", ["stdout:", "--batch", "-1"]), ("tail", ["--format", "xml"])] {
            let result = try await sluiceIO([command, "stdin:"] + arguments, input: Data())
            #expect(result.status != 0, "\(command) \(arguments)")
            #expect(result.error.hasPrefix("Error: "), "\(command) \(arguments): \(result.error)")
        }
    }
}
