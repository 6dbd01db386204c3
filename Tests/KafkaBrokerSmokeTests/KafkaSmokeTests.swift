//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import CKafka
import Foundation
import Testing

@Suite("Kafka through librdkafka", .timeLimit(.minutes(1)))
struct KafkaSmokeTests {
    struct Outcome: Sendable {
        var records: [KafkaRecord]
        var pollErrors: [String]
        var committed: [Int64]
        var closedInTime: Bool
        var runtimeVersion: String
    }

    static let partitions: Int32 = 3

    /// Create a topic with three partitions, produce keyed messages, consume them all in a
    /// consumer group of its own, commit synchronously and read the commit back.
    @Test func createProduceConsumeCommit() async throws {
        let brokers = try BrokerEnvironment.require(BrokerEnvironment.kafkaBrokers)
        let onTansu = BrokerEnvironment.optional(BrokerEnvironment.tansu) != nil
        let topic = BrokerEnvironment.uniqueName("topic")
        let group = BrokerEnvironment.uniqueName("group")
        let values = (0..<30).map { "message-\($0)" }

        let outcome = try await onDedicatedThread(named: "kafka-smoke") { () throws -> Outcome in
            if onTansu {
                try RDKafkaHandle.requireRuntimeThatTalksToTansu()
            }
            let common = ["bootstrap.servers": brokers, "log.connection.close": "false"]
            let producer = try RDKafkaHandle.make(RD_KAFKA_PRODUCER, configuration: common)
            try producer.createTopic(topic, partitions: Self.partitions, timeoutMilliseconds: 10_000)
            for (index, value) in values.enumerated() {
                try producer.produce(topic: topic, key: "key-\(index)", value: value)
            }
            try producer.flush(timeoutMilliseconds: 10_000)

            let consumer = try RDKafkaHandle.make(
                RD_KAFKA_CONSUMER,
                configuration: common.merging([
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": "false",
                    // Tansu holds a JoinGroup for about half the session timeout: keep it short.
                    "session.timeout.ms": "6000",
                ]) { _, new in new }
            )
            try consumer.subscribe(to: topic)
            var records: [KafkaRecord] = []
            var pollErrors: [String] = []
            let deadline = Date.now.addingTimeInterval(30)
            while records.count < values.count, Date.now < deadline {
                switch consumer.poll(timeoutMilliseconds: 250) {
                case .record(let record): records.append(record)
                case .error(let text): pollErrors.append(text)
                case .nothing: break
                }
            }
            guard records.count == values.count else {
                throw BrokerSmokeError(
                    "consumed \(records.count) of \(values.count) messages in 30 s; errors: \(pollErrors)"
                )
            }
            try consumer.commit()
            let committed = try consumer.committedOffsets(
                topic: topic, partitions: Self.partitions, timeoutMilliseconds: 10_000
            )
            let closedInTime = consumer.closeConsumer(timeoutSeconds: 5)
            return Outcome(
                records: records, pollErrors: pollErrors, committed: committed,
                closedInTime: closedInTime, runtimeVersion: RDKafkaHandle.runtimeVersion
            )
        }

        let records = outcome.records
        #expect(records.map(\.value).sorted() == values.sorted())
        #expect(Set(records.map(\.partition)) == Set(0..<Self.partitions), "keyed messages reach every partition")
        for partition in 0..<Self.partitions {
            let offsets = records.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == Array(0..<Int64(offsets.count)), "partition \(partition) is read in order from 0")
            #expect(
                outcome.committed[Int(partition)] == Int64(offsets.count),
                "the committed offset of partition \(partition) is the next one to read"
            )
        }
        if !outcome.closedInTime {
            // Known with Tansu: leaving the group can hang. The close is bounded, not required.
            print("note: rd_kafka_consumer_close did not finish within 5 s (librdkafka \(outcome.runtimeVersion))")
        }
    }
}
