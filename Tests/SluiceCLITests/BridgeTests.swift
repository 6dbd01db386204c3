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

/// `sluice bridge` between two different brokers: nothing lost, and a sink that fails leaves
/// the source's messages unacknowledged.
@Suite("sluice bridge", .serialized, .timeLimit(.minutes(1)))
struct BridgeTests {
    @Test func rabbitMQToKafkaLosesNothing() async throws {
        let payloads = (0..<800).map { "order-\($0)" }
        let (source, name, client) = try await Brokers.rabbitQueue("bridge-kafka", holding: payloads)
        let (sink, _) = try await Brokers.kafkaTopic("bridge")
        let result = try await sluiceIO(["bridge", source, sink, "--count", "800", "--batch", "100"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("bridged 800 in "), "\(result.output)")
        #expect(try await client.readyCount(name) == 0, "every message was acknowledged")
        let back = try await sluiceIO(["tail", sink, "--count", "800", "--format", "json"])
        #expect(back.status == 0, "\(back.error)")
        let received = try jsonPayloads(back.output)
        #expect(received.count == 800)
        #expect(Set(received) == Set(payloads))
        try await client.delete(queue: name)
        await client.close()
    }

    @Test func kafkaToARedisStreamLosesNothing() async throws {
        let base = try redisURL()
        let key = Brokers.unique("bridge-stream")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        let (source, _) = try await Brokers.kafkaTopic("bridge-source")
        let payloads = (0..<1000).map { "event-\($0)" }
        let produced = try await sluiceIO(["produce", source], input: Data(payloads.joined(separator: "\n").utf8))
        #expect(produced.status == 0, "\(produced.error)")
        let result = try await sluiceIO(["bridge", source, "\(base)/0?key=\(key)&mode=stream", "--count", "1000"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("bridged 1000 in "), "\(result.output)")
        #expect(try await redisCount(base, key, command: "XLEN") == 1000)
        let back = try await sluiceIO(["tail", "\(base)/0?key=\(key)&mode=stream&group=check", "--count", "1000", "--format", "json"])
        #expect(back.status == 0, "\(back.error)")
        let received = try jsonPayloads(back.output)
        #expect(received.count == 1000)
        #expect(Set(received) == Set(payloads))
    }

    /// The sink refuses every batch (the key holds a string, not a list): one error line,
    /// status 1, and every source message is still in the queue.
    @Test func aFailingSinkLeavesTheSourceMessagesUnacknowledged() async throws {
        let base = try redisURL()
        let key = Brokers.unique("bridge-wrongtype")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        _ = try await redisCLI(base, ["SET", key, "not a list"])
        let (source, name, client) = try await Brokers.rabbitQueue("bridge-fail", holding: (0..<200).map { "kept-\($0)" })
        let result = try await sluiceIO(["bridge", source, "\(base)/0?key=\(key)&mode=list"])
        #expect(result.status == 1, "\(result.status) \(result.error)")
        #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
        #expect(result.error.contains("not acknowledged"), "\(result.error)")
        #expect(result.output.hasPrefix("bridged 0 in "), "\(result.output)")
        #expect(try await Brokers.readyCount(client, name, reaching: 200) == 200)
        #expect(try await redisCLI(base, ["GET", key]).trimmingCharacters(in: .whitespacesAndNewlines) == "not a list")
        try await client.delete(queue: name)
        await client.close()
    }

    /// A sink that cannot be reached fails before anything is read.
    @Test func anUnreachableSinkFailsBeforeReading() async throws {
        let (source, name, client) = try await Brokers.rabbitQueue("bridge-unreachable", holding: (0..<50).map { "kept-\($0)" })
        let result = try await sluiceIO(["bridge", source, "redis://:sekrit-pw@127.0.0.1:1/0?key=k"])
        #expect(result.status == 1)
        #expect(result.error.split(separator: "\n").count == 1, "\(result.error)")
        #expect(result.error.contains("cannot connect"), "\(result.error)")
        #expect(!result.error.contains("sekrit"))
        #expect(try await Brokers.readyCount(client, name, reaching: 50) == 50)
        try await client.delete(queue: name)
        await client.close()
    }
}
