//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Sluice
@_spi(Internal) import SluiceKafka
import Testing

/// The sink and the dead-letter route against the real broker.
@Suite("Kafka sink and dead letters", .timeLimit(.minutes(1)))
struct KafkaSinkTests {
    /// Keys, headers and an explicit partition arrive as sent; a send returns only once the
    /// broker confirmed every record.
    @Test func producesKeysHeadersAndPartitions() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("sink", partitions: 2)
        let sink = try KafkaSink(configuration: configuration, logger: KafkaTestEnvironment.logger)
        let records = (0..<20).map { index in
            KafkaRecord(value: Array("value-\(index)".utf8), key: Array("key-\(index)".utf8), headers: [KafkaHeader(name: "n", text: "\(index)")], partition: 1)
        }
        try await sink.send(records)
        await sink.close()
        let read = try await KafkaTestEnvironment.admin(configuration).read(topic: configuration.topics[0], partitions: 2, count: 20)
        #expect(read.count == 20)
        #expect(read.allSatisfy { $0.partition == 1 })
        #expect(Set(read.map { String(decoding: $0.value, as: UTF8.self) }) == Set((0..<20).map { "value-\($0)" }))
        #expect(read.allSatisfy { record in
            let number = String(decoding: record.value, as: UTF8.self).dropFirst("value-".count)
            return record.key == Array("key-\(number)".utf8) && record.headers == [KafkaHeader(name: "n", text: String(number))]
        })
    }

    /// A full local queue makes the sink wait for delivery reports, not fail.
    @Test func aFullQueueWaitsInsteadOfFailing() async throws {
        var configuration = try await KafkaTestEnvironment.configuration("sink-full")
        configuration.properties["queue.buffering.max.messages"] = "10"
        let sink = try KafkaSink(configuration: configuration, logger: KafkaTestEnvironment.logger)
        let results = try await sink.deliver((0..<500).map { KafkaRecord(value: Array("v\($0)".utf8)) })
        await sink.close()
        #expect(results.count == 500)
        #expect(results.allSatisfy { $0 == nil }, "\(results.compactMap { $0 }.first.map { "\($0)" } ?? "")")
        let read = try await KafkaTestEnvironment.admin(configuration).read(topic: configuration.topics[0], partitions: 1, count: 500)
        #expect(read.count == 500)
    }

    /// The sink as a service: it connects when the group runs and closes on graceful shutdown;
    /// a send after that is refused with a typed error.
    @Test func runsAsAServiceAndClosesOnGracefulShutdown() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("sink-service")
        let sink = try KafkaSink(configuration: configuration, logger: KafkaTestEnvironment.logger)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await sink.run() }
                try await sink.send([KafkaRecord(value: Array("one".utf8))])
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        await #expect { try await sink.send([KafkaRecord(value: Array("late".utf8))]) } throws: { ($0 as? KafkaError)?.code == .shutDown }
    }

    /// A record the broker refuses fails its message; the pipeline's failure policy
    /// dead-letters it: the source writes it to the dead-letter topic with headers naming its
    /// origin and the error, and commits past it only once that write was confirmed.
    @Test func aRefusedDeliveryFailsTheMessageIntoTheDeadLetterTopic() async throws {
        var settings = try await KafkaTestEnvironment.configuration("dead-letter")
        let dead = settings.topics[0] + ".dead"
        try await KafkaTestEnvironment.admin(settings).createTopic(dead, partitions: 1)
        settings.commitInterval = .milliseconds(20)
        let configuration = settings
        try await KafkaTestEnvironment.produce(configuration, count: 10)
        let target = try await KafkaTestEnvironment.configuration("dead-letter-target")
        let sink = try KafkaSink(configuration: target, logger: KafkaTestEnvironment.logger)
        let pipeline = Pipeline(
            "kafka-dead-letter",
            source: KafkaSource(configuration: configuration),
            configuration: PipelineConfiguration(failurePolicy: .deadLetter, logger: KafkaTestEnvironment.logger)
        ) {
            Processors(concurrency: 1, maxDemand: 10) { _ in }
            Batcher(size: 5, timeout: .milliseconds(50)) { batch in
                // Partition 7 does not exist: the broker refuses every record.
                try await sink.send(&batch, partition: 7)
            }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("every message committed past") { try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 10 }
        }
        await sink.close()
        let letters = try await KafkaTestEnvironment.admin(configuration).read(topic: dead, partitions: 1, count: 10)
        #expect(letters.count == 10)
        #expect(Set(letters.map { String(decoding: $0.value, as: UTF8.self) }) == Set((0..<10).map { "message-\($0)" }))
        for letter in letters {
            let headers = Dictionary(letter.headers.map { ($0.name, String(decoding: $0.value ?? [], as: UTF8.self)) }) { first, _ in first }
            #expect(headers["sluice.original.topic"] == configuration.topics[0])
            #expect(headers["sluice.original.partition"] == "0")
            #expect(headers["sluice.original.offset"].flatMap(Int.init) != nil)
            #expect(headers["sluice.original.key"]?.hasPrefix("key-") == true)
            #expect(headers["sluice.error"]?.contains("deliveryFailed") == true, "\(headers["sluice.error"] ?? "none")")
        }
    }
}
