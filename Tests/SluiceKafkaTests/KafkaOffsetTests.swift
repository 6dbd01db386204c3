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
import Synchronization
import Testing

/// Commits against the real broker: resuming after a restart, the contiguous rule, the
/// in-flight bound under a slow consumer, the first message on an idle topic.
@Suite("Kafka offsets and flow", .timeLimit(.minutes(1)))
struct KafkaOffsetTests {
    static func pipeline(
        _ name: String,
        _ source: KafkaSource,
        concurrency: Int = 1,
        maxDemand: Int = 50,
        handler: @escaping @Sendable (inout Message<KafkaMetadata>) async throws -> Void
    ) -> Pipeline<KafkaSource> {
        Pipeline(name, source: source, configuration: PipelineConfiguration(failurePolicy: .requeue, logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: concurrency, maxDemand: maxDemand, handler: handler)
        }
    }

    /// A consumer drained midway commits what it handled; the next one in the group starts
    /// there: nothing lost, nothing read twice.
    @Test func aRestartedConsumerResumesFromTheCommittedOffset() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("restart", partitions: 2)
        try await KafkaTestEnvironment.produce(configuration, count: 1000)
        let first = Recorder<String>()
        let run1 = Self.pipeline("kafka-restart-1", KafkaSource(configuration: configuration)) { message in
            first.add(text(message))
            try await Task.sleep(for: .milliseconds(1))
        }
        try await withPipeline(run1) {
            try await waitUntil("300 handled") { first.count >= 300 }
        }
        let handledFirst = first.count
        #expect(handledFirst < 1000, "the drain came too late")
        let committed = try await KafkaTestEnvironment.committedTotal(configuration, partitions: 2)
        #expect(committed == Int64(handledFirst), "every handled message is committed after a drain")
        let second = Recorder<String>()
        let run2 = Self.pipeline("kafka-restart-2", KafkaSource(configuration: configuration)) { message in second.add(text(message)) }
        try await withPipeline(run2) {
            try await waitUntil("the rest handled") { second.count >= 1000 - handledFirst }
            try await Task.sleep(for: .milliseconds(200))
        }
        let all = first.all + second.all
        #expect(Set(all).count == 1000, "nothing lost")
        #expect(all.count == 1000, "nothing read twice")
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 2) == 1000)
    }

    /// The reset policy applies only where the group has no committed offset: a consumer of
    /// a group that committed everything, restarted with `offset=latest`, reads exactly what
    /// was produced after the commit (latest would skip it).
    @Test func theResetPolicyAppliesOnlyWithoutACommittedOffset() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("reset", partitions: 1)
        try await KafkaTestEnvironment.produce(configuration, count: 20)
        let first = Recorder<String>()
        try await withPipeline(Self.pipeline("kafka-reset-1", KafkaSource(configuration: configuration)) { first.add(text($0)) }) {
            try await waitUntil("20 handled") { first.count >= 20 }
        }
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 20)
        // One at a time, so each is a record batch of its own: this broker's "latest" is the
        // last batch's base offset + 1 (BROKERS.md), which is then the partition's end.
        for index in 20..<25 { try await KafkaTestEnvironment.produce(configuration, count: 1, from: index) }
        var latest = configuration
        latest.offsetReset = .latest
        let second = Recorder<String>()
        try await withPipeline(Self.pipeline("kafka-reset-2", KafkaSource(configuration: latest)) { second.add(text($0)) }) {
            try await waitUntil("the 5 produced after the commit handled") { second.count >= 5 }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(second.all == (20..<25).map { "message-\($0)" })
        #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 25)
    }

    /// Settled 0, 1, 2, 4…9 with 3 still in a handler commits 3; once 3 settles, 10.
    @Test func outOfOrderSettlementCommitsOnlyTheContiguousPrefix() async throws {
        var settings = try await KafkaTestEnvironment.configuration("contiguous")
        settings.commitInterval = .milliseconds(20)
        let configuration = settings
        let values = (0..<10).map { Array("message-\($0)".utf8) }
        try await KafkaTestEnvironment.admin(configuration).produce(topic: configuration.topics[0], values: values, partition: 0)
        let gate = Atomic<Bool>(false)
        let handled = Recorder<Int64>()
        let pipeline = Self.pipeline("kafka-contiguous", KafkaSource(configuration: configuration), concurrency: 2, maxDemand: 1) { message in
            if message.metadata.offset == 3 {
                while !gate.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
            }
            handled.add(message.metadata.offset)
        }
        try await withPipeline(pipeline) {
            try await waitUntil("all but offset 3 handled") { handled.count >= 9 }
            try await waitUntil("offsets up to 3 committed") { try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) >= 3 }
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 3)
            gate.store(true, ordering: .releasing)
            try await waitUntil("everything committed") { try await KafkaTestEnvironment.committedTotal(configuration, partitions: 1) == 10 }
        }
        #expect(!handled.all.contains(3) || handled.all.last == 3)
    }

    /// With a slow consumer, what was taken and not settled never exceeds the window.
    @Test
    func aSlowConsumerHoldsNoMoreThanTheWindow() async throws {
        var configuration = try await KafkaTestEnvironment.configuration("slow", partitions: 4)
        configuration.maxInFlightBytes = 4096
        try await KafkaTestEnvironment.produce(configuration, count: 3000)
        let (source, counters) = KafkaTestEnvironment.countedSource(configuration)
        let handled = Atomic<Int>(0)
        let pipeline = Self.pipeline("kafka-slow", source, concurrency: 2, maxDemand: 20) { _ in
            try await Task.sleep(for: .milliseconds(1))
            handled.add(1, ordering: .relaxed)
        }
        let window = pipeline.window
        let highest = try await withPipeline(pipeline) { () -> Int in
            var highest = 0
            let deadline = ContinuousClock.now + .seconds(45)
            while handled.load(ordering: .relaxed) < 600 {
                highest = max(highest, counters.unsettled)
                guard ContinuousClock.now < deadline else {
                    throw TestFailure(
                        """
                        stalled: \(handled.load(ordering: .relaxed)) of 600 handled in 45 s; taken \(counters.taken), \
                        settled \(counters.settled), unsettled \(counters.unsettled), revokes \(counters.revocations)
                        """
                    )
                }
                try await Task.sleep(for: .milliseconds(2))
            }
            return highest
        }
        #expect(highest <= window, "\(highest) taken and unsettled, the window is \(window)")
        #expect(highest > 0)
        #expect(counters.reached < 3000, "the source read ahead of the slow consumer: \(counters.reached)")
    }

    /// With a byte budget smaller than the window's messages, what was taken and not settled
    /// stays within the budget plus one read (a read's size is known only once it arrived):
    /// 1 KiB messages, a 4 KiB budget, reads of at most 4 messages, a window of 80.
    @Test func aSlowConsumerHoldsNoMoreThanTheByteBudget() async throws {
        var configuration = try await KafkaTestEnvironment.configuration("byte-budget", partitions: 2)
        configuration.maxInFlightBytes = 4096
        configuration.batchSize = 4
        let size = 1024
        try await KafkaTestEnvironment.admin(configuration).produce(
            topic: configuration.topics[0],
            values: (0..<300).map { Array(repeating: UInt8(truncatingIfNeeded: $0), count: size) },
            keys: (0..<300).map { Array("key-\($0)".utf8) }
        )
        let (source, counters) = KafkaTestEnvironment.countedSource(configuration)
        let pipeline = Self.pipeline("kafka-byte-budget", source, concurrency: 4, maxDemand: 20) { _ in
            try await Task.sleep(for: .milliseconds(2))
        }
        let window = pipeline.window
        let (bytes, count) = try await withPipeline(pipeline) { () -> (Int, Int) in
            var bytes = 0
            var count = 0
            let deadline = ContinuousClock.now + .seconds(45)
            while counters.settled < 300 {
                bytes = max(bytes, counters.unsettledBytes)
                count = max(count, counters.unsettled)
                guard ContinuousClock.now < deadline else { throw TestFailure("stalled: \(counters.settled) of 300 settled in 45 s") }
                try await Task.sleep(for: .milliseconds(1))
            }
            return (bytes, count)
        }
        #expect(bytes > 0)
        #expect(bytes <= 4096 + 4 * size, "\(bytes) payload bytes taken and unsettled; the budget is 4096 plus one read of 4")
        #expect(count < window, "the byte budget, not the window (\(window)), bounds what is in flight: \(count)")
    }

    /// At zero demand nothing beyond the window is fetched: the window's messages are taken,
    /// the handlers hold them, the partitions are paused after the hysteresis, and 2000 more
    /// messages produced then are not fetched (counted by librdkafka itself: the `rxmsgs` of
    /// its statistics) until demand returns.
    @Test func atZeroDemandNothingBeyondTheWindowIsFetched() async throws {
        var settings = try await KafkaTestEnvironment.configuration("zero-demand", partitions: 2)
        settings.properties["statistics.interval.ms"] = "20"
        let configuration = settings
        let (source, counters) = KafkaTestEnvironment.countedSource(configuration)
        let gate = Atomic<Bool>(false)
        let pipeline = Self.pipeline("kafka-zero-demand", source, maxDemand: 10) { _ in
            while !gate.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
        }
        let window = pipeline.window
        try await KafkaTestEnvironment.produce(configuration, count: window)
        try await withPipeline(pipeline) {
            try await waitUntil("the window was taken") { counters.taken >= window }
            // Well past the pause hysteresis (100 ms) and a few statistics intervals.
            try await Task.sleep(for: .milliseconds(500))
            try await KafkaTestEnvironment.produce(configuration, count: 2000, from: window)
            try await Task.sleep(for: .milliseconds(1000))
            #expect(counters.taken == window, "at zero demand \(counters.taken) were taken, the window is \(window)")
            #expect(counters.fetched == window, "at zero demand librdkafka fetched \(counters.fetched), the window is \(window)")
            gate.store(true, ordering: .releasing)
            try await waitUntil("demand again: everything handled") { counters.settled >= window + 2000 }
        }
        #expect(counters.fetched >= window + 2000)
    }

    /// On an idle topic a produced message reaches the handler within 10 ms. The machine is
    /// shared and these tests run niced, so a sample can wait for a time slice: of 7 samples
    /// at least 3 must be within 10 ms (a consumer that polled at an interval of 20 ms or
    /// more, or waited for a pause to end, would miss nearly all of them).
    @Test func theFirstMessageOnAnIdleTopicArrivesAtOnce() async throws {
        let configuration = try await KafkaTestEnvironment.configuration("idle")
        let latencies = Recorder<Int64>()
        let arrived = Atomic<Int>(0)
        let pipeline = Self.pipeline("kafka-idle", KafkaSource(configuration: configuration)) { message in
            let now = Int64((Date.timeIntervalSinceReferenceDate + Date.timeIntervalBetween1970AndReferenceDate) * 1000)
            if text(message) != "warm-up", let stamp = message.metadata.timestampMilliseconds { latencies.add(now - stamp) }
            arrived.add(1, ordering: .relaxed)
        }
        // A producer that is connected already and sends at once (no linger), so the delay
        // measured is the consumer's, not a new producer's connection setup.
        var producing = configuration
        producing.properties["linger.ms"] = "0"
        let sink = try KafkaSink(configuration: producing, logger: KafkaTestEnvironment.logger)
        try await sink.connect()
        try await withPipeline(pipeline) {
            try await sink.send([KafkaRecord(value: Array("warm-up".utf8))])
            try await waitUntil("the consumer joined and took the warm-up message") { arrived.load(ordering: .relaxed) >= 1 }
            for round in 1...7 {
                try await Task.sleep(for: .milliseconds(300))
                try await sink.send([KafkaRecord(value: Array("idle-\(round)".utf8))])
                try await waitUntil("message \(round) arrived") { arrived.load(ordering: .relaxed) >= round + 1 }
            }
        }
        await sink.close()
        let sorted = latencies.all.sorted()
        #expect(sorted.count == 7)
        #expect(sorted.filter { $0 <= 10 }.count >= 3, "idle→handler latencies in ms: \(sorted)")
    }
}
