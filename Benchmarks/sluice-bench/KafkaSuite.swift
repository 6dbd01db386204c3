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

/// Kafka against the broker of `scripts/brokers`: preloaded 100-byte messages over 4
/// partitions consumed and committed through a Sluice pipeline that discards them and through
/// a raw librdkafka loop; the same count produced through ``KafkaSink`` and through raw
/// `producev`; and the latency from producing a message to an idle topic to its handler.
struct KafkaSuite {
    let quick: Bool

    private var total: Int { self.quick ? 200_000 : 1_000_000 }
    private var repetitions: Int { self.quick ? 1 : 5 }
    private let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 100)
    private let logger = Logger(label: "sluice.bench.kafka")

    func run() async {
        await runBrokerSuite("kafka", variable: "SLUICE_KAFKA_BROKERS") { try await self.measure(brokers: $0) }
    }

    private func configuration(_ brokers: String, _ purpose: String) -> KafkaConfiguration {
        var configuration = KafkaConfiguration(
            bootstrapServers: [brokers],
            topics: ["sluice-bench-\(purpose)-\(UUID().uuidString.prefix(8).lowercased())"],
            group: "sluice-bench-\(purpose)-\(UUID().uuidString.prefix(8).lowercased())"
        )
        configuration.offsetReset = .earliest
        return configuration
    }

    /// `SLUICE_KAFKA_ONLY=consume` runs only the consume comparison (for profiling and
    /// before/after runs), `produce` only the produce comparison, `slow` only the
    /// slow-consumer memory run; unset, everything.
    private var only: String? { ProcessInfo.processInfo.environment["SLUICE_KAFKA_ONLY"] }

    /// How many raw/Sluice pairs a comparison alternates: `SLUICE_KAFKA_RUNS` (1 to 50), else
    /// 5 (1 with `--quick`).
    private var runs: Int {
        guard let text = ProcessInfo.processInfo.environment["SLUICE_KAFKA_RUNS"] else { return self.repetitions }
        guard let runs = Int(text), (1...50).contains(runs) else {
            print("SLUICE_KAFKA_RUNS=\(text) is not a number of runs from 1 to 50")
            exit(2)
        }
        return runs
    }

    private func measure(brokers: String) async throws {
        if let only = self.only {
            guard ["consume", "produce", "slow"].contains(only) else {
                print("SLUICE_KAFKA_ONLY=\(only) is none of consume, produce and slow")
                exit(2)
            }
            if only == "produce" {
                let produce = try await self.produceComparison(brokers, preload: nil)
                for (index, pair) in produce.pairs.enumerated() {
                    print(String(format: "produce run %d: raw %d/s sink %d/s (%.2f×)", index + 1, Int(pair.raw), Int(pair.sink), pair.sink / pair.raw))
                }
                print(
                    "RESULT kafka-produce "
                        + String(format: "produce_per_s=%d raw_per_s=%d produce_vs_raw=%.2f runs=%d", Int(produce.sink), Int(produce.raw), produce.sink / produce.raw, produce.pairs.count)
                )
                return
            }
            let data = self.configuration(brokers, "data")
            let admin = KafkaAdmin(configuration: data, logger: self.logger)
            try await admin.createTopic(data.topics[0], partitions: 4)
            _ = try await KafkaRawBaseline.produce(data, value: self.payload, count: self.total, logger: self.logger)
            if only == "consume" {
                let (consume, consumeRaw) = try await self.consumeComparison(brokers, data)
                print("RESULT kafka-consume " + String(format: "msgs_per_s=%d raw_per_s=%d vs_raw=%.2f", Int(consume), Int(consumeRaw), consume / consumeRaw))
            } else {
                let slow = try await self.slowConsumer(data)
                print(String(format: "RESULT kafka-slow seconds=%.1f rss_growth_mb=%.1f rss_growth_from_start_mb=%.1f", slow.seconds, slow.growth, slow.fromStart))
            }
            try? await admin.deleteTopic(data.topics[0])
            return
        }
        print("suite kafka: \(self.total) messages of 100 bytes over 4 partitions, median of \(self.runs) runs (raw and sluice alternate)")
        print("consume: KafkaSource batchSize 1000 → Processors(concurrency: 2, maxDemand: 4000) discarding, async commits;")
        print("         raw: consume_batch_queue(1000) + rd_kafka_commit(async) per batch; both timed from the first message to the last")
        print("produce: KafkaSink, 4 concurrent sends of 5000 keyed records each until done; raw: producev + poll, then flush")
        let data = self.configuration(brokers, "data")
        let admin = KafkaAdmin(configuration: data, logger: self.logger)
        try await admin.createTopic(data.topics[0], partitions: 4)
        // The first raw produce preloads the topic the consumers read.
        let producing = try await self.produceComparison(brokers, preload: data)
        let (consume, consumeRaw) = try await self.consumeComparison(brokers, data)
        let slow = try await self.slowConsumer(data)
        try? await admin.deleteTopic(data.topics[0])
        let latency = try await self.firstMessageLatency(brokers)
        let produce = producing.sink
        let produceRaw = producing.raw
        print(pad("", 48) + pad("msgs/s", 14) + "vs raw")
        print(pad("raw consume_batch_queue(1000) + async commit", 48) + pad(formatRate(consumeRaw), 14))
        print(pad("sluice KafkaSource → discarding processors", 48) + pad(formatRate(consume), 14) + String(format: "%.2f×", consume / consumeRaw))
        print(pad("raw producev + poll + flush", 48) + pad(formatRate(produceRaw), 14))
        print(pad("sluice KafkaSink (delivery-confirmed sends)", 48) + pad(formatRate(produce), 14) + String(format: "%.2f×", produce / produceRaw))
        print(String(format: "idle topic → handler: median %.1f ms of %d", latency.median, latency.count))
        print(
            String(
                format: "slow consumer (batches of 1000, 25 ms each): %d messages in %.1f s, resident memory growth while it works through them %.1f MB (target < 50), %.1f MB from before it started",
                self.total, slow.seconds, slow.growth, slow.fromStart
            )
        )
        print(
            "RESULT kafka msgs_per_s=\(Int(consume)) "
                + String(
                    format: "vs_raw=%.2f produce_per_s=%d produce_vs_raw=%.2f first_message_ms=%.1f slow_rss_growth_mb=%.1f slow_rss_from_start_mb=%.1f",
                    consume / consumeRaw, Int(produce), produce / produceRaw, latency.median, slow.growth, slow.fromStart
                )
        )
    }

    /// Raw `producev` and the sink each produce the count to a topic of their own, alternating
    /// (the first raw run fills `preload`, if given); the median rates and every run's pair.
    /// Every topic but `preload` is deleted after its run.
    private func produceComparison(_ brokers: String, preload: KafkaConfiguration?) async throws -> (sink: Double, raw: Double, pairs: [(raw: Double, sink: Double)]) {
        var pairs: [(raw: Double, sink: Double)] = []
        for run in 0..<self.runs {
            let target = run == 0 ? preload ?? self.configuration(brokers, "raw-produce") : self.configuration(brokers, "raw-produce")
            let admin = KafkaAdmin(configuration: target, logger: self.logger)
            let owned = target.topics[0] != preload?.topics[0]
            if owned { try await admin.createTopic(target.topics[0], partitions: 4) }
            let raw = Double(self.total) / (try await KafkaRawBaseline.produce(target, value: self.payload, count: self.total, logger: self.logger))
            if owned { try? await admin.deleteTopic(target.topics[0]) }
            let sinkTarget = self.configuration(brokers, "sink-produce")
            try await admin.createTopic(sinkTarget.topics[0], partitions: 4)
            let sink = Double(self.total) / (try await self.sinkProduce(sinkTarget))
            try? await admin.deleteTopic(sinkTarget.topics[0])
            pairs.append((raw, sink))
        }
        return (Self.median(pairs.map(\.sink)), Self.median(pairs.map(\.raw)), pairs)
    }

    /// Raw and Sluice consumption of the preloaded topic, alternating; the median rates.
    private func consumeComparison(_ brokers: String, _ data: KafkaConfiguration) async throws -> (sluice: Double, raw: Double) {
        var rawConsume: [Double] = []
        var sluiceConsume: [Double] = []
        for _ in 0..<self.runs {
            let raw = self.configuration(brokers, "raw-consume").group
            rawConsume.append(Double(self.total) / (try await KafkaRawBaseline.consume(data, group: raw, count: self.total, logger: self.logger)))
            var sluice = data
            sluice.group = self.configuration(brokers, "sluice-consume").group
            sluiceConsume.append(Double(self.total) / (try await self.sluiceConsume(sluice)))
        }
        return (Self.median(sluiceConsume), Self.median(rawConsume))
    }

    /// A slow consumer works through the preloaded topic: processors pass every message to a
    /// batcher that sleeps 25 ms per batch of 1000. Returns the seconds it took, the growth of
    /// resident memory (VmRSS) from the first tenth of the messages settled to the peak after
    /// it (while it works through them), and from before the pipeline started to the peak
    /// (which includes the client's start and librdkafka's first fetches).
    private func slowConsumer(_ data: KafkaConfiguration) async throws -> (seconds: Double, growth: Double, fromStart: Double) {
        var configuration = self.withExtraProperties(data)
        configuration.group = "sluice-bench-slow-\(UUID().uuidString.prefix(8).lowercased())"
        // librdkafka reports what its partition queues hold (its prefetch).
        configuration.properties["statistics.interval.ms"] = configuration.properties["statistics.interval.ms"] ?? "200"
        let total = self.total
        let counters = KafkaSourceCounters(tracksOffsets: false)
        var source = KafkaSource(configuration: configuration)
        source.counters = counters
        let pipeline = Pipeline("bench-kafka-slow", source: source, configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: 1000) { _ in }
            Batcher(size: 1000, timeout: .milliseconds(100)) { _ in try await Task.sleep(for: .milliseconds(25)) }
        }
        let before = Self.residentMegabytes()
        var peak = before
        var underway: Double?
        var peakUnderway = 0.0
        var samples: [(Int, Double)] = []
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            var next = total / 10
            while true {
                let acknowledged = pipeline.statistics.acknowledged
                let resident = Self.residentMegabytes()
                peak = max(peak, resident)
                if underway != nil { peakUnderway = max(peakUnderway, resident) }
                if acknowledged >= next {
                    if underway == nil {
                        underway = resident
                        peakUnderway = resident
                    }
                    samples.append((acknowledged, resident))
                    next += total / 10
                }
                if acknowledged >= total { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        let seconds = (ContinuousClock.now - start).inSeconds
        print("slow consumer resident MB: before \(String(format: "%.1f", before)), " + samples.map { String(format: "%d: %.1f", $0.0, $0.1) }.joined(separator: ", "))
        print(String(format: "slow consumer: librdkafka's partition queues held at most %.1f MB of payload", Double(counters.peakQueuedBytes) / 1_048_576))
        return (seconds, peakUnderway - (underway ?? before), peak - before)
    }

    /// `configuration` with the librdkafka properties of `SLUICE_KAFKA_PROPERTIES`
    /// (`name=value,name=value`; for trying settings on the Sluice consumers without a rebuild).
    private func withExtraProperties(_ configuration: KafkaConfiguration) -> KafkaConfiguration {
        var configuration = configuration
        for pair in (ProcessInfo.processInfo.environment["SLUICE_KAFKA_PROPERTIES"] ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else {
                print("SLUICE_KAFKA_PROPERTIES: \(pair) is not name=value")
                exit(2)
            }
            configuration.properties[parts[0]] = parts[1]
        }
        return configuration
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }

    /// Produces `total` keyed records through a sink, four sends in flight; the seconds taken.
    private func sinkProduce(_ configuration: KafkaConfiguration) async throws -> Double {
        let sink = try KafkaSink(configuration: configuration, logger: self.logger)
        try await sink.connect()
        let value = Payload(self.payload)
        let chunk = 5000
        let next = KafkaBenchCounter()
        let total = self.total
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    while true {
                        let first = next.take(chunk)
                        guard first < total else { return }
                        let indices = first..<min(total, first + chunk)
                        // The send's keys in one buffer, viewed by each record (as a fetch's
                        // payloads are), not an array per key: raw producev's keys cost nothing.
                        var bytes: [UInt8] = []
                        bytes.reserveCapacity(indices.count * 8)
                        for index in indices { withUnsafeBytes(of: UInt64(index)) { bytes.append(contentsOf: $0) } }
                        let keys = Payload(bytes)
                        try await sink.send((0..<indices.count).map { KafkaRecord(value: value, key: keys.extracting($0 * 8..<$0 * 8 + 8)) })
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = (ContinuousClock.now - start).inSeconds
        await sink.close()
        return seconds
    }

    /// Consumes the preloaded topic through a discarding pipeline: seconds from the first
    /// handled message until every one was acknowledged.
    private func sluiceConsume(_ configuration: KafkaConfiguration) async throws -> Double {
        let configuration = self.withExtraProperties(configuration)
        let total = self.total
        let firstHandled = Atomic<Bool>(false)
        let clock = ContinuousClock()
        let started = Mutex<ContinuousClock.Instant?>(nil)
        let pipeline = Pipeline("bench-kafka", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: 4000) { _ in
                if !firstHandled.load(ordering: .relaxed), !firstHandled.exchange(true, ordering: .relaxed) {
                    started.withLock { $0 = clock.now }
                }
            }
        }
        var end = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            while pipeline.statistics.acknowledged < total {
                try await Task.sleep(for: .milliseconds(1))
            }
            end = clock.now
            pipeline.drain()
            try await group.waitForAll()
        }
        let start = started.withLock { $0 } ?? end
        return (end - start).inSeconds
    }

    /// Produces single messages to an idle topic a pipeline consumes; the median of the
    /// delays from producing (the record's timestamp) to the handler, in milliseconds.
    private func firstMessageLatency(_ brokers: String) async throws -> (median: Double, count: Int) {
        var configuration = self.configuration(brokers, "idle")
        configuration.properties["linger.ms"] = "0"
        try await KafkaAdmin(configuration: configuration, logger: self.logger).createTopic(configuration.topics[0], partitions: 1)
        var consumer = configuration
        consumer.properties = [:]
        let delays = Mutex<[Double]>([])
        let pipeline = Pipeline("bench-kafka-idle", source: KafkaSource(configuration: consumer), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                let now = Date().timeIntervalSince1970 * 1000
                if let stamp = message.metadata.timestampMilliseconds { delays.withLock { $0.append(now - Double(stamp)) } }
            }
        }
        let sink = try KafkaSink(configuration: configuration, logger: self.logger)
        try await sink.connect()
        let samples = 9
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await sink.send([KafkaRecord(value: Array("warm-up".utf8))])
            while delays.withLock({ $0.count }) < 1 { try await Task.sleep(for: .milliseconds(5)) }
            for round in 1...samples {
                try await Task.sleep(for: .milliseconds(250))
                try await sink.send([KafkaRecord(value: Array("idle".utf8))])
                while delays.withLock({ $0.count }) < round + 1 { try await Task.sleep(for: .milliseconds(1)) }
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        await sink.close()
        let measured = Array(delays.withLock { $0 }.dropFirst())
        return (Self.median(measured), measured.count)
    }

    /// The process's resident memory in MB (Linux `/proc/self/status`, `VmRSS`).
    private static func residentMegabytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        else { return 0 }
        return kilobytes / 1024
    }
}

/// Hands out consecutive ranges of record indices to the concurrent sends.
final class KafkaBenchCounter: Sendable {
    private let next = Atomic<Int>(0)

    /// The first index of the next `count` indices.
    func take(_ count: Int) -> Int { self.next.add(count, ordering: .relaxed).oldValue }
}
