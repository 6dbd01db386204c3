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

/// Two consumers in one group against the real broker: splitting, taking over, revoking.
@Suite("Kafka rebalances", .timeLimit(.minutes(1)))
struct KafkaRebalanceTests {
    /// Runs a pipeline in the background until `stop` is called; returns its task.
    static func start<Source: PipelineSource>(_ pipeline: Pipeline<Source>) -> Task<Void, any Error> {
        Task { try await pipeline.run() }
    }

    /// Two members split four partitions; when one leaves, the other takes its partitions
    /// over from the committed offsets: nothing lost, nothing handled twice.
    @Test(arguments: ["range,roundrobin", "cooperative-sticky"])
    func aSurvivorTakesOverWithNothingLost(strategy: String) async throws {
        var configuration = try await KafkaTestEnvironment.configuration("takeover", partitions: 4)
        configuration.properties["partition.assignment.strategy"] = strategy
        try await KafkaTestEnvironment.produce(configuration, count: 3000)
        let first = Recorder<KafkaMetadata>()
        let second = Recorder<KafkaMetadata>()
        // Slow while both members share the work, so that the first leaves with most of it left.
        let slow = Atomic<Bool>(true)
        let counters = KafkaSourceCounters()
        func pipeline(_ name: String, _ recorder: Recorder<KafkaMetadata>) -> Pipeline<KafkaSource> {
            var source = KafkaSource(configuration: configuration)
            source.counters = counters
            return Pipeline(name, source: source, configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
                Processors(concurrency: 2, maxDemand: 20, partitionBy: \.metadata.partition) { message in
                    recorder.add(message.metadata)
                    if slow.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(2)) }
                }
            }
        }
        let a = pipeline("kafka-takeover-a", first)
        let b = pipeline("kafka-takeover-b", second)
        let runA = Self.start(a)
        let runB = Self.start(b)
        try await waitUntil("both members handle messages") { first.count > 50 && second.count > 50 }
        try await waitUntil("the members own different partitions") {
            let recentA = Set(first.all.suffix(40).map(\.partition))
            let recentB = Set(second.all.suffix(40).map(\.partition))
            return recentA.isDisjoint(with: recentB)
        }
        a.drain()
        try await runA.value
        slow.store(false, ordering: .relaxed)
        try await waitUntil("the survivor handled the rest") {
            Set((first.all + second.all).map { "\($0.partition)/\($0.offset)" }).count >= 3000
        }
        b.drain()
        try await runB.value
        let all = (first.all + second.all).map { "\($0.partition)/\($0.offset)" }
        #expect(Set(all).count == 3000, "nothing lost")
        // A message is handled twice only when a revoke deadline passed with it in flight
        // (a slow, loaded machine): its settlement was then dropped and counted.
        #expect(all.count - Set(all).count <= counters.staleSettlements, "\(all.count - Set(all).count) handled twice, \(counters.staleSettlements) stale")
        #expect(Set(second.all.map(\.partition)) == [0, 1, 2, 3], "the survivor took every partition")
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 4) == 3000)
    }

    /// A batch still open in a batcher when its partitions are revoked: with a batch timeout
    /// shorter than the revoke deadline the revoke waits for it and commits it; with a longer
    /// one the deadline passes, the batch's settlements are dropped (counted, not committed)
    /// and the new owner reads those messages again. Either way nothing is lost.
    @Test(arguments: [(Duration.milliseconds(200), false), (.seconds(8), true)])
    func aBatchOpenAtRevoke(batchTimeout: Duration, expectStale: Bool) async throws {
        var configuration = try await KafkaTestEnvironment.configuration("revoke-batch", partitions: 2)
        configuration.revokeTimeout = .seconds(2)
        try await KafkaTestEnvironment.produce(configuration, count: 40)
        let (sourceA, countersA) = KafkaTestEnvironment.countedSource(configuration)
        let batchedA = Recorder<String>()
        let handledB = Recorder<String>()
        let a = Pipeline("kafka-revoke-a", source: sourceA, configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 100) { _ in }
            Batcher(size: 1000, timeout: batchTimeout) { batch in
                for message in batch { batchedA.add(text(message)) }
            }
        }
        let runA = Self.start(a)
        try await waitUntil("A took every message into its open batch") { countersA.taken >= 40 }
        let b = Pipeline("kafka-revoke-b", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 100) { message in handledB.add(text(message)) }
        }
        let runB = Self.start(b)
        try await waitUntil("every message settled by A or handled by B") {
            Set(batchedA.all + handledB.all).count >= 40 && (expectStale ? countersA.staleSettlements > 0 : true)
        }
        try await Task.sleep(for: .milliseconds(300))
        a.drain()
        b.drain()
        try await runA.value
        try await runB.value
        #expect(Set(batchedA.all + handledB.all).count == 40, "nothing lost")
        if expectStale {
            #expect(countersA.staleSettlements > 0)
            #expect(!handledB.all.isEmpty, "B read the revoked messages again")
        } else {
            #expect(countersA.staleSettlements == 0)
            #expect(handledB.all.isEmpty, "B read nothing again: the revoke committed A's batch (\(handledB.count) re-read)")
        }
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 2) == 40)
    }

    /// A member whose partitions were paused at zero demand, and whose demand came back while
    /// a rebalance had taken them away, fetches the partitions it is assigned next. librdkafka
    /// keeps a partition's application pause across unassign and assign, so a consumer that
    /// forgot it had paused would never fetch them again (the stall once seen in CI).
    @Test func aMemberPausedAtZeroDemandFetchesAgainAfterARebalance() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("paused-rebalance", partitions: 2)
        try await KafkaTestEnvironment.produce(configuration, count: 200)
        let gate = Atomic<Bool>(false)
        let (sourceA, countersA) = KafkaTestEnvironment.countedSource(configuration)
        let handledA = Recorder<String>()
        let handledB = Recorder<String>()
        let a = Pipeline("kafka-paused-a", source: sourceA, configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                while !gate.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
                handledA.add(text(message))
            }
        }
        let runA = Self.start(a)
        try await waitUntil("A took its window of 10") { countersA.taken >= 10 }
        // Zero demand for much longer than the pause hysteresis: A's partitions are paused.
        try await Task.sleep(for: .milliseconds(600))
        #expect(countersA.taken == 10, "at zero demand A took \(countersA.taken), its window is 10")
        let b = Pipeline("kafka-paused-b", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { message in handledB.add(text(message)) }
        }
        let runB = Self.start(b)
        // Demand comes back while the revoke runs, before the new assignment.
        try await waitUntil("B's join revokes A's partitions") { countersA.revocations > 0 }
        gate.store(true, ordering: .releasing)
        try await waitUntil("every message handled by A or B") { Set(handledA.all + handledB.all).count >= 200 }
        a.drain()
        b.drain()
        try await runA.value
        try await runB.value
        #expect(Set(handledA.all + handledB.all).count == 200, "nothing lost")
        #expect(handledA.count > 10, "A fetched its new partition after the rebalance: \(handledA.count) handled")
    }
}
