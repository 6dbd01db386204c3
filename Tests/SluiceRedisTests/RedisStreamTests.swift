//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
@_spi(Internal) import SluiceRedis
import Testing

@Suite("Redis stream source", .timeLimit(.minutes(2)))
struct RedisStreamTests {
    @Test func consumesEveryEntryOnceWithIdsAndDeliveryCounts() async throws {
        let configuration = try RedisTestEnvironment.configuration("stream", mode: .stream)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.add(configuration.key, payloads(2000))
        let seen = Recorder<String>()
        let counts = Recorder<Int>()
        let ids = Recorder<RedisEntryID>()
        let pipeline = Pipeline("stream", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: 300) { message in
                seen.append(message.text)
                counts.append(message.metadata.deliveryCount ?? -1)
                if let id = message.metadata.entryID { ids.append(id) }
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("2000 handled") { seen.count >= 2000 }
        }
        #expect(seen.count == 2000)
        #expect(Set(seen.all).count == 2000)
        #expect(Set(ids.all).count == 2000)
        #expect(Set(counts.all) == [1])
        let pending = try await client.command(["XPENDING", configuration.key, configuration.group])
        #expect(pending.array?.first?.integer == 0, "everything acknowledged")
    }

    @Test func claimsTheEntriesOfADeadConsumer() async throws {
        var base = try RedisTestEnvironment.configuration("claim", mode: .stream)
        base.claimMinIdle = .milliseconds(100)
        base.claimInterval = .milliseconds(50)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        _ = try await client.command(["XGROUP", "CREATE", configuration.key, configuration.group, "0", "MKSTREAM"])
        try await client.add(configuration.key, payloads(5, prefix: "stale"))
        // Another consumer read them and died.
        let read = try await client.command(["XREADGROUP", "GROUP", configuration.group, "dead-consumer", "COUNT", "5", "STREAMS", configuration.key, ">"])
        #expect(read.array?.count == 1)
        let seen = Recorder<String>()
        let counts = Recorder<Int>()
        let pipeline = Pipeline("claim", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                seen.append(message.text)
                counts.append(message.metadata.deliveryCount ?? -1)
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("claimed entries handled") { seen.count >= 5 }
        }
        #expect(Set(seen.all) == Set((0..<5).map { "stale\($0)" }))
        #expect(Set(counts.all) == [2], "claimed entries were delivered twice")
        let pending = try await client.command(["XPENDING", configuration.key, configuration.group])
        #expect(pending.array?.first?.integer == 0)
    }

    @Test func rereadsItsOwnPendingEntriesAtStart() async throws {
        var base = try RedisTestEnvironment.configuration("own", mode: .stream)
        base.consumer = "worker-7"
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        _ = try await client.command(["XGROUP", "CREATE", configuration.key, configuration.group, "0", "MKSTREAM"])
        try await client.add(configuration.key, payloads(4, prefix: "mine"))
        _ = try await client.command(["XREADGROUP", "GROUP", configuration.group, "worker-7", "COUNT", "4", "STREAMS", configuration.key, ">"])
        let seen = Recorder<String>()
        let pipeline = Pipeline("own", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in seen.append(message.text) }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("own pending handled") { seen.count >= 4 }
        }
        #expect(Set(seen.all) == Set((0..<4).map { "mine\($0)" }))
    }

    @Test func deadLettersAnEntryDeliveredMoreThanTheCap() async throws {
        var base = try RedisTestEnvironment.configuration("cap", mode: .stream)
        base.claimMinIdle = .milliseconds(50)
        base.claimInterval = .milliseconds(20)
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.add(configuration.key, [Array("poison".utf8), Array("fine".utf8)])
        let attempts = Recorder<Int>()
        let fine = Recorder<String>()
        let pipeline = Pipeline(
            "cap",
            source: RedisSource(configuration: configuration),
            configuration: PipelineConfiguration(failurePolicy: FailurePolicy(retry: nil, disposition: .deadLetter, maxDeliveries: 3))
        ) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                if message.text == "poison" {
                    attempts.append(message.metadata.deliveryCount ?? -1)
                    // Give it back each time: Redis delivers it again, counting.
                    message.fail(TestFailure("cannot handle"), disposition: .requeue)
                } else {
                    fine.append(message.text)
                }
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("dead-lettered") {
                (try await client.command(["XLEN", "\(configuration.key):dead"]).integer ?? 0) == 1
            }
        }
        #expect(attempts.all == [1, 2, 3], "handled up to the cap, then dead-lettered without running the handler")
        #expect(fine.all == ["fine"])
        let dead = try await client.command(["XRANGE", "\(configuration.key):dead", "-", "+"])
        let fields = dead.array?.first?.array?[1].array?.compactMap(\.text) ?? []
        #expect(fields.prefix(2) == ["payload", "poison"])
        let pending = try await client.command(["XPENDING", configuration.key, configuration.group])
        #expect(pending.array?.first?.integer == 0, "the dead-lettered entry was acknowledged")
    }
}

@Suite("Redis sink", .timeLimit(.minutes(1)))
struct RedisSinkTests {
    @Test func batcherWritesToAList() async throws {
        let input = try RedisTestEnvironment.configuration("sink-in", mode: .reliable)
        var target = input
        target.key = RedisTestEnvironment.uniqueKey("sink-out")
        target.mode = .list
        let output = target
        let client = RedisClient(configuration: input)
        defer { Task { await client.cleanUp(input.key); await client.cleanUp(output.key); await client.close() } }
        try await client.push(input.key, payloads(1234))
        let sink = try RedisSink(configuration: output)
        let pipeline = Pipeline("sink", source: RedisSource(configuration: input)) {
            Processors(concurrency: 2, maxDemand: 100) { message in message.payload += Array("!".utf8) }
            Batcher(size: 100, timeout: .milliseconds(20)) { batch in try await sink.send(batch) }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("all copied") { try await client.length(output.key) >= 1234 }
        }
        await sink.close()
        let copied = try await client.strings(output.key)
        #expect(Set(copied) == Set((0..<1234).map { "m\($0)!" }))
        #expect(try await client.length(input.key) == 0)
    }

    @Test func stageWritesToAStreamWithBackPressure() async throws {
        var base = try RedisTestEnvironment.configuration("sink-stream", mode: .stream)
        base.key = RedisTestEnvironment.uniqueKey("sink-stream")
        let configuration = base
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let sink = try RedisSink(configuration: configuration)
        let producer = try await StageHandle.start(SequenceProducer(payloads(500)))
        let consumer = try await StageHandle.start(
            RedisSinkStage(sink: sink),
            subscribeTo: [SubscribeTo(producer, options: SubscriptionOptions(maxDemand: 50))]
        )
        let reason = try await withTimeLimit(.seconds(20)) { await consumer.waitForTermination() }
        #expect(reason.isNormalOrShutdown)
        await sink.close()
        #expect(try await client.command(["XLEN", configuration.key]).integer == 500)
    }
}
