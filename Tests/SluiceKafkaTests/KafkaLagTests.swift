//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
@_spi(Internal) import SluiceKafka
import Synchronization
import Testing

/// How many messages the handler of ``KafkaLagTests`` may let through (it holds the others).
private final class Allowance: Sendable {
    let allowed = Atomic<Int>(0)
    let handled = Atomic<Int>(0)
}

@Suite("Kafka source lag", .timeLimit(.minutes(1)))
struct KafkaLagTests {
    @Test("the lag is the end offset minus the group's commit: N before anything was committed, N − k after k were settled, then 0")
    func lagFollowsTheCommits() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("lag", partitions: 1)
        let topic = configuration.topics[0]
        let admin = KafkaTestEnvironment.admin(configuration)
        // The test broker (Tansu) answers ListOffsets "latest" with the last *batch's* base
        // offset + 1, not the partition's end: each message goes in a produce request of its
        // own (a producer per message, confirmed before the next), so every batch holds one
        // message and the end offset the lag is measured from is right.
        for index in 0..<12 {
            try await admin.produce(topic: topic, values: [Array("message-\(index)".utf8)], partition: 0)
        }
        let source = KafkaSource(configuration: configuration)
        await #expect(throws: KafkaError.self, "not running yet") { _ = try await source.lag() }
        let allowance = Allowance()
        let pipeline = Pipeline("lag", source: source) {
            // maxDemand 1: a processor settles what it was handed together, so one message at a time.
            Processors(concurrency: 1, maxDemand: 1) { (message: inout Message<KafkaMetadata>) async throws in
                while allowance.handled.load(ordering: .relaxed) >= allowance.allowed.load(ordering: .relaxed) {
                    try await Task.sleep(for: .milliseconds(5))
                }
                allowance.handled.add(1, ordering: .relaxed)
            }
        }
        try await withPipeline(pipeline) {
            // Nothing committed yet: the group starts at the earliest offset, so all 12 count.
            try await waitUntil(seconds: 30, "the consumer was assigned and counts all 12") { (try? await source.lag()) == 12 }
            allowance.allowed.store(5, ordering: .relaxed)
            try await waitUntil(seconds: 20, "the 5 settled were committed") { try await source.lag() == 7 }
            let committed = try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1)
            #expect(committed == 5, "the broker's own commit")
            allowance.allowed.store(12, ordering: .relaxed)
            try await waitUntil(seconds: 20, "everything was committed") { try await source.lag() == 0 }
            #expect(allowance.handled.load(ordering: .relaxed) == 12)
        }
        await #expect(throws: KafkaError.self, "ended") { _ = try await source.lag() }
    }
}
