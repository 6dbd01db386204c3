//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import Testing

/// A Kafka source against the real broker: consuming, committing, resuming.
@Suite("Kafka source", .timeLimit(.minutes(1)))
struct KafkaSourceTests {
    /// Every message of four partitions is handled once, with its metadata, and the group's
    /// committed offsets cover exactly what was handled.
    @Test func consumesEveryMessageAndCommitsIt() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("end-to-end", partitions: 4)
        try await KafkaTestEnvironment.produce(configuration, count: 2000)
        let seen = Recorder<KafkaMetadata>()
        let texts = Recorder<String>()
        let pipeline = Pipeline("kafka-e2e", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 2, maxDemand: 100, partitionBy: \.metadata.partition) { message in
                seen.add(message.metadata)
                texts.add(text(message))
            }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("2000 messages were handled") { texts.count >= 2000 }
        }
        #expect(Set(texts.all).count == 2000)
        #expect(texts.count == 2000)
        let metadata = seen.all
        #expect(Set(metadata.map(\.partition)) == [0, 1, 2, 3])
        #expect(metadata.allSatisfy { $0.topic == configuration.topics[0] && $0.key != nil && $0.timestampMilliseconds != nil })
        // Per partition, offsets reached the processors in order.
        for partition in Int32(0)..<4 {
            let offsets = metadata.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == offsets.sorted())
            #expect(offsets.first == 0)
        }
        let committed = try await KafkaTestEnvironment.admin(configuration).committed(group: configuration.group, topic: configuration.topics[0], partitions: 4)
        for partition in 0..<4 {
            let handled = metadata.filter { $0.partition == Int32(partition) }.count
            #expect(committed[partition] == Int64(handled), "partition \(partition)")
        }
    }

    /// A message's headers (with and without value), key, offset and timestamp reach its
    /// metadata as produced.
    @Test func headersKeyOffsetAndTimestampReachTheMetadata() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("metadata")
        let headers = [KafkaHeader(name: "trace", text: "abc"), KafkaHeader(name: "empty", value: nil)]
        let before = Int64(Date().timeIntervalSince1970 * 1000) - 1000
        try await KafkaTestEnvironment.admin(configuration).produce(
            topic: configuration.topics[0],
            values: (0..<3).map { Array("m\($0)".utf8) },
            keys: (0..<3).map { Array("k\($0)".utf8) },
            headers: headers
        )
        let seen = Recorder<KafkaMetadata>()
        let pipeline = Pipeline("kafka-metadata", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { seen.add($0.metadata) }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("3 messages were handled") { seen.count >= 3 }
        }
        let metadata = seen.all
        #expect(metadata.map(\.offset) == [0, 1, 2])
        #expect(metadata.map { $0.key.map { Array($0) } } == (0..<3).map { Array("k\($0)".utf8) })
        #expect(metadata.allSatisfy { $0.headers == headers }, "\(metadata.map(\.headers))")
        #expect(metadata.allSatisfy { $0.topic == configuration.topics[0] && $0.partition == 0 })
        #expect(metadata.allSatisfy { ($0.timestampMilliseconds ?? 0) >= before }, "\(metadata.map(\.timestampMilliseconds))")
    }

    /// Records with and without headers, keyed and not, mixed in one partition: each reaches
    /// its metadata with exactly its own headers, and librdkafka parses the headers only of the
    /// records that have some (the others are proven headerless by their layout as the broker
    /// sent it).
    @Test func onlyRecordsWithHeadersAreParsedByLibrdkafka() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("header-shortcut")
        let admin = KafkaTestEnvironment.admin(configuration)
        let topic = configuration.topics[0]
        let headers = [KafkaHeader(name: "trace", text: "abc"), KafkaHeader(name: "empty", value: nil)]
        // Offsets 0-9 keyed without headers, 10-19 keyless without, 20-24 keyed with, 25-29
        // keyless with.
        try await admin.produce(topic: topic, values: (0..<10).map { Array("plain-\($0)".utf8) }, keys: (0..<10).map { Array("k\($0)".utf8) })
        try await admin.produce(topic: topic, values: (10..<20).map { Array("plain-\($0)".utf8) })
        try await admin.produce(topic: topic, values: (20..<25).map { Array("headed-\($0)".utf8) }, keys: (20..<25).map { Array("k\($0)".utf8) }, headers: headers)
        try await admin.produce(topic: topic, values: (25..<30).map { Array("headed-\($0)".utf8) }, headers: headers)
        let seen = Recorder<(Int64, String, [KafkaHeader])>()
        let (source, counters) = KafkaTestEnvironment.countedSource(configuration)
        let pipeline = Pipeline("kafka-header-shortcut", source: source, configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { message in seen.add((message.metadata.offset, text(message), message.metadata.headers)) }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("30 messages were handled") { seen.count >= 30 }
        }
        let records = seen.all.sorted { $0.0 < $1.0 }
        #expect(records.map(\.0) == Array(0..<30))
        for (offset, value, got) in records {
            #expect(got == (offset < 20 ? [] : headers), "offset \(offset) (\(value)): \(got)")
            #expect(value == (offset < 20 ? "plain-\(offset)" : "headed-\(offset)"))
        }
        #expect(counters.headerParses == 10, "librdkafka parsed the headers of \(counters.headerParses) records; 10 have headers")
    }

    /// One busy partition does not starve another of processors (broadway_kafka's known
    /// problem): with 3000 messages waiting on partition 0 and 20 on partition 1, and slow
    /// handlers, partition 1's messages are all handled while partition 0 is not half done.
    @Test func aBusyPartitionDoesNotStarveAnother() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("starve", partitions: 2)
        let admin = KafkaTestEnvironment.admin(configuration)
        try await admin.produce(topic: configuration.topics[0], values: (0..<3000).map { Array("busy-\($0)".utf8) }, partition: 0)
        try await admin.produce(topic: configuration.topics[0], values: (0..<20).map { Array("quiet-\($0)".utf8) }, partition: 1)
        let busy = Recorder<Int64>()
        let quiet = Recorder<Int64>()
        let busyWhenQuietDone = Recorder<Int>()
        let pipeline = Pipeline("kafka-starve", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(ordering: .none, concurrency: 2, maxDemand: 50) { message in
                try await Task.sleep(for: .milliseconds(1))
                if message.metadata.partition == 0 {
                    busy.add(message.metadata.offset)
                } else {
                    quiet.add(message.metadata.offset)
                    if quiet.count == 20 { busyWhenQuietDone.add(busy.count) }
                }
            }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("partition 1's 20 messages were handled") { quiet.count >= 20 }
        }
        let busyCount = try #require(busyWhenQuietDone.all.first)
        #expect(busyCount < 1500, "partition 0 had \(busyCount) of 3000 handled before partition 1's 20 were")
    }
}
