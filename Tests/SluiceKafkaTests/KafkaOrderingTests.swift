//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import Synchronization
import Testing

/// The three orderings against the real broker, each with more than one processor.
@Suite("Kafka ordering", .timeLimit(.minutes(1)))
struct KafkaOrderingTests {
    /// What handlers saw: per group (a partition or a key), the offsets in the order handled,
    /// how many of the group were in a handler at once at most, and the same over everything.
    final class Watch: Sendable {
        private struct State {
            var order: [String: [Int64]] = [:]
            var running: [String: Int] = [:]
            var mostInGroup = 0
            var runningAll = 0
            var mostAll = 0
            var handled = 0
        }

        private let state = Mutex(State())

        func begin(_ group: String, _ offset: Int64) {
            self.state.withLock { state in
                state.order[group, default: []].append(offset)
                state.running[group, default: 0] += 1
                state.mostInGroup = max(state.mostInGroup, state.running[group]!)
                state.runningAll += 1
                state.mostAll = max(state.mostAll, state.runningAll)
            }
        }

        func end(_ group: String) {
            self.state.withLock { state in
                state.running[group]! -= 1
                state.runningAll -= 1
                state.handled += 1
            }
        }

        var handled: Int { self.state.withLock { $0.handled } }
        var mostInGroup: Int { self.state.withLock { $0.mostInGroup } }
        var mostAll: Int { self.state.withLock { $0.mostAll } }
        /// How many messages each group had, by group.
        var perGroup: [String: Int] { self.state.withLock { $0.order.mapValues(\.count) } }
        /// Whether every group's offsets were handled in increasing order.
        var inOrder: Bool { self.state.withLock { $0.order.values.allSatisfy { zip($0, $0.dropFirst()).allSatisfy { $0 < $1 } } } }
    }

    /// Consumes `count` messages with `ordering` and 4 processors whose handlers take a few
    /// milliseconds; `group` names what a message is ordered by.
    static func consume(
        _ configuration: KafkaConfiguration,
        count: Int,
        ordering: KafkaOrdering,
        group: @escaping @Sendable (Message<KafkaMetadata>) -> String
    ) async throws -> Watch {
        let watch = Watch()
        let pipeline = Pipeline("kafka-ordering-\(ordering)", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(ordering: ordering, concurrency: 4, maxDemand: 5) { message in
                let name = group(message)
                watch.begin(name, message.metadata.offset)
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...4)))
                watch.end(name)
            }
        }
        try await withPipeline(pipeline) {
            try await waitUntil("\(count) handled") { watch.handled >= count }
        }
        return watch
    }

    /// Per partition (the default for Kafka): with 4 processors over 4 partitions each
    /// partition's messages are handled one at a time, in offset order.
    @Test func perPartitionKeepsEachPartitionSerialAndInOrder() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("order-partition", partitions: 4)
        // Each partition gets 100, named explicitly: a producer that saw the new topic's
        // metadata before all 4 partitions existed would otherwise hash every key to one (seen
        // once on a fresh broker in CI), and then nothing could run in parallel.
        let sink = try KafkaSink(configuration: configuration, logger: KafkaTestEnvironment.logger)
        try await sink.send((0..<400).map { KafkaRecord(value: Array("message-\($0)".utf8), key: Array("key-\($0)".utf8), partition: Int32($0 % 4)) })
        await sink.close()
        let watch = try await Self.consume(configuration, count: 400, ordering: .perPartition) { "\($0.metadata.partition)" }
        #expect(watch.mostInGroup == 1, "a partition had \(watch.mostInGroup) messages in handlers at once")
        #expect(watch.inOrder)
        #expect(watch.mostAll > 1, "the partitions ran in parallel (handled per partition: \(watch.perGroup))")
    }

    /// Per key: one partition, 8 keys, 4 processors: each key's messages one at a time and in
    /// offset order, while different keys of the one partition run in parallel.
    @Test func perKeyKeepsEachKeySerialWithMoreConcurrencyThanPartitions() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("order-key", partitions: 1)
        let values = (0..<400).map { Array("message-\($0)".utf8) }
        let keys = (0..<400).map { Array("key-\($0 % 8)".utf8) }
        try await KafkaTestEnvironment.admin(configuration).produce(topic: configuration.topics[0], values: values, keys: keys)
        let watch = try await Self.consume(configuration, count: 400, ordering: .perKey) { message in
            message.metadata.key.map { String(decoding: $0, as: UTF8.self) } ?? "none"
        }
        #expect(watch.mostInGroup == 1, "a key had \(watch.mostInGroup) messages in handlers at once")
        #expect(watch.inOrder)
        #expect(watch.mostAll > 1, "keys of one partition ran in parallel")
    }

    /// None: one partition, 4 processors, and all 4 handle its messages at once.
    @Test func noneUsesEveryProcessor() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("order-none", partitions: 1)
        try await KafkaTestEnvironment.produce(configuration, count: 400)
        let watch = try await Self.consume(configuration, count: 400, ordering: .none) { "\($0.metadata.partition)" }
        #expect(watch.mostAll == 4, "at most \(watch.mostAll) of 4 processors were busy at once")
        #expect(watch.mostInGroup == 4)
    }
}
