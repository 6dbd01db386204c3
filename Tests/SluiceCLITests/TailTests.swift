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

/// The length of a Redis list (or stream, with `XLEN`).
func redisCount(_ base: String, _ key: String, command: String = "LLEN") async throws -> Int {
    Int(try await redisCLI(base, [command, key]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
}

/// `sluice tail` against Redis, RabbitMQ and Kafka: text and JSON lines with metadata,
/// acknowledged only after printing, and the signals.
@Suite("sluice tail", .serialized, .timeLimit(.minutes(1)))
struct TailTests {
    @Test func printsRedisListItemsAsTextAndAcknowledgesThem() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-text")
        defer { _ = try? runRedis(base, ["DEL", key, "\(key):processing:tailer"]) }
        _ = try await redisCLI(base, ["RPUSH", key] + (0..<50).map { "item \($0)" })
        let result = try await sluiceIO(["tail", "\(base)/0?key=\(key)&mode=reliable&consumer=tailer", "--count", "50"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.split(separator: "\n").map(String.init) == (0..<50).map { "key=\(key)\titem \($0)" })
        #expect(try await redisCount(base, key) == 0)
        #expect(try await redisCount(base, "\(key):processing:tailer") == 0, "every item was acknowledged")
    }

    @Test func printsRedisStreamEntriesAsJSONWithTheirIDs() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-json")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        _ = try await redisCLI(base, ["EVAL", "for i = 1, 20 do redis.call('XADD', KEYS[1], '*', 'payload', 'entry \"' .. i .. '\"') end return 1", "1", key])
        let result = try await sluiceIO(["tail", "\(base)/0?key=\(key)&mode=stream", "--count", "20", "--format", "json"])
        #expect(result.status == 0, "\(result.error)")
        #expect(try jsonPayloads(result.output) == (1...20).map { "entry \"\($0)\"" })
        let line = try #require(result.output.split(separator: "\n").first, "tail printed nothing: \(result.error)")
        let first = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let metadata = first?["metadata"] as? [String: Any]
        #expect(metadata?["key"] as? String == key)
        #expect((metadata?["id"] as? String)?.contains("-") == true)
        #expect(metadata?["deliveries"] as? Int == 1)
        let pending = try await redisCLI(base, ["XPENDING", key, "sluice"]).split(separator: "\n").first.map(String.init)
        #expect(pending == "0", "every entry was acknowledged")
    }

    @Test func aPayloadThatIsNotUTF8IsPrintedAsBase64() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-binary")
        defer { _ = try? runRedis(base, ["DEL", key]) }
        _ = try await redisCLI(base, ["EVAL", "redis.call('RPUSH', KEYS[1], '\\255\\254ok') return 1", "1", key])
        let json = try await sluiceIO(["tail", "\(base)/0?key=\(key)&mode=list", "--count", "1", "--format", "json"])
        #expect(json.status == 0, "\(json.error)")
        #expect(json.output.contains("\"payload_base64\":\"\(Data([0xFF, 0xFE, 0x6F, 0x6B]).base64EncodedString())\""), "\(json.output)")
    }

    @Test func printsRabbitMQMessagesWithTheirMetadata() async throws {
        let base = try Brokers.rabbitMQ()
        let (url, queue, client) = try await Brokers.rabbitQueue("tail", holding: (0..<30).map { "rabbit-\($0)" })
        let result = try await sluiceIO(["tail", url, "--count", "30", "--format", "json"])
        #expect(result.status == 0, "\(result.error)")
        #expect(try jsonPayloads(result.output) == (0..<30).map { "rabbit-\($0)" })
        #expect(result.output.contains("\"routing_key\":\"\(queue)\""))
        #expect(result.output.contains("\"redelivered\":false"))
        #expect(try await client.readyCount(queue) == 0)
        try await client.delete(queue: queue)
        await client.close()
        let text = try await sluiceIO(["tail", "\(base)?queue=sluice-cli-no-such-queue", "--count", "1"])
        #expect(text.status == 1 && text.error.split(separator: "\n").count == 1, "\(text.error)")
    }

    @Test func printsKafkaRecordsWithPartitionAndOffset() async throws {
        let (url, topic) = try await Brokers.kafkaTopic("tail")
        let produced = try await sluiceIO(["produce", url], input: Data((0..<25).map { "kafka-\($0)\n" }.joined().utf8))
        #expect(produced.status == 0, "\(produced.error)")
        let result = try await sluiceIO(["tail", url, "--count", "25", "--format", "json"])
        #expect(result.status == 0, "\(result.error)")
        #expect(try jsonPayloads(result.output) == (0..<25).map { "kafka-\($0)" })
        #expect(result.output.contains("{\"metadata\":{\"topic\":\"\(topic)\",\"partition\":0,\"offset\":0,"), "\(result.output.prefix(300))")
        let text = try await sluiceIO(["tail", url.replacingOccurrences(of: "group=", with: "group=text-"), "--count", "2"])
        #expect(text.output.hasPrefix("topic=\(topic) partition=0 offset=0 timestamp_ms="), "\(text.output)")
        #expect(text.output.hasSuffix("\tkafka-1\n"), "\(text.output)")
    }

    /// While standard output is not read, tail acknowledges only what it could write (the
    /// pipe holds 64 KiB, 16 of the 4000-byte items); after SIGINT it drains: what it printed
    /// and what is left in Redis add up to every item.
    @Test func acknowledgesOnlyAfterPrintingAndDrainsOnSIGINT() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-ack")
        defer { _ = try? runRedis(base, ["DEL", key, "\(key):processing:acker"]) }
        _ = try await redisCLI(base, ["EVAL", "for i = 1, 300 do redis.call('RPUSH', KEYS[1], string.rep('a', 3999)) end return 1", "1", key])
        let started = try startSluice(["tail", "\(base)/0?key=\(key)&mode=reliable&consumer=acker&batch=10"])
        func left() async throws -> Int {
            try await redisCount(base, key) + redisCount(base, "\(key):processing:acker")
        }
        var taken = false
        for _ in 0..<100 where !taken {
            try await pause(milliseconds: 50)
            taken = try await redisCount(base, "\(key):processing:acker") > 0
        }
        #expect(taken)
        try await pause(milliseconds: 700)
        let acknowledged = 300 - (try await left())
        #expect(acknowledged <= 16, "\(acknowledged) acknowledged with at most 16 lines written")
        let output = started.output.fileHandleForReading
        let reading = Task { try await offPool { output.readDataToEndOfFile() } }
        try await pause(milliseconds: 500)
        kill(started.process.processIdentifier, SIGINT)
        let printed = String(decoding: try await reading.value, as: UTF8.self).split(separator: "\n").count
        try await exited(started)
        #expect(started.process.terminationStatus == 130)
        #expect(printed + (try await left()) == 300, "printed \(printed)")
    }

    /// With stdout not a terminal, a run over a second shows the live status on stderr (plain
    /// lines), and the messages alone on stdout.
    @Test func showsTheLiveStatusOnStderrWhenStdoutIsNotATerminal() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-status")
        defer { _ = try? runRedis(base, ["DEL", key, "\(key):processing:status"]) }
        _ = try await redisCLI(base, ["RPUSH", key, "one", "two"])
        let started = try startSluice(["tail", "\(base)/0?key=\(key)&mode=reliable&consumer=status"])
        let output = started.output.fileHandleForReading
        let reading = Task { try await offPool { output.readDataToEndOfFile() } }
        try await pause(milliseconds: 2500)
        kill(started.process.processIdentifier, SIGTERM)
        let printed = String(decoding: try await reading.value, as: UTF8.self)
        try await exited(started)
        #expect(started.process.terminationStatus == 143)
        #expect(printed == "key=\(key)\tone\nkey=\(key)\ttwo\n")
        let error = String(decoding: started.error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(error.contains("sluice tail"), "\(error)")
        #expect(error.contains("processed 2"), "\(error)")
        #expect(!error.contains("\u{1B}["), "plain lines, not redrawn: \(error)")
    }

    /// The first SIGINT drains (waiting here for a write nobody reads); a second one stops at
    /// once with status 130.
    @Test func aSecondSIGINTStopsAtOnce() async throws {
        let base = try redisURL()
        let key = Brokers.unique("tail-sigint")
        defer { _ = try? runRedis(base, ["DEL", key, "\(key):processing:stuck"]) }
        _ = try await redisCLI(base, ["EVAL", "for i = 1, 100 do redis.call('RPUSH', KEYS[1], string.rep('b', 3999)) end return 1", "1", key])
        let started = try startSluice(["tail", "\(base)/0?key=\(key)&mode=reliable&consumer=stuck"])
        try await pause(milliseconds: 1000)
        kill(started.process.processIdentifier, SIGINT)
        try await pause(milliseconds: 700)
        #expect(started.process.isRunning, "the first SIGINT drains, and the drain waits for the blocked write")
        let second = ContinuousClock.now
        kill(started.process.processIdentifier, SIGINT)
        try await exited(started)
        #expect(ContinuousClock.now - second < .seconds(2))
        #expect(started.process.terminationStatus == 130)
        let error = String(decoding: started.error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(error.contains("second SIGINT"), "\(error)")
        // Nothing acknowledged was lost: whatever was not printed is still in Redis.
        #expect(try await redisCount(base, key) + redisCount(base, "\(key):processing:stuck") >= 100 - 16)
    }
}
