//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceRabbitMQ
import Synchronization

/// Consumes preloaded 100-byte messages from RabbitMQ through a Sluice pipeline that discards
/// them and with a raw librabbitmq loop (prefetch 1000, a multiple ack every 500), and
/// publishes with confirms through the sink and through a raw loop with 1000 outstanding, in
/// the same run.
struct RabbitMQSuite {
    let quick: Bool

    private var total: Int { self.quick ? 50_000 : 300_000 }
    private var repetitions: Int { self.quick ? 1 : 3 }
    private let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 100)
    private let prefetch = 1000

    func run() async {
        await runBrokerSuite("rabbitmq", variable: "SLUICE_RABBITMQ_URL") { try await self.measure(url: $0) }
    }

    private func measure(url: String) async throws {
        print("suite rabbitmq: \(self.total) messages of 100 bytes, median of \(self.repetitions) runs (raw and sluice runs alternate)")
        print("consume: RabbitMQSource prefetch \(self.prefetch) (the window of Processors(concurrency: 2, maxDemand: 500)) discarding;")
        print("         raw: one librabbitmq connection, prefetch \(self.prefetch), body copied, basic.ack multiple every 500")
        print("publish: RabbitMQSink, 2 senders of 500-message batches awaiting confirms; raw: 1000 outstanding confirms")
        print(pad("run", 44) + pad("msgs/s", 14) + "vs raw")
        let base = try RabbitMQConfiguration(url: url + (url.contains("?") ? "&" : "?") + "queue=bench")
        var rawConsume: [Double] = []
        var sluiceConsume: [Double] = []
        var rawCPU: [Double] = []
        var sluiceCPU: [Double] = []
        var rawPublish: [Double] = []
        var sluicePublish: [Double] = []
        for _ in 0..<self.repetitions {
            let raw = try await self.rawConsume(base)
            rawConsume.append(raw.rate)
            rawCPU.append(raw.cpu)
            let sluice = try await self.sluiceConsume(base)
            sluiceConsume.append(sluice.rate)
            sluiceCPU.append(sluice.cpu)
            rawPublish.append(try await self.rawPublish(base))
            sluicePublish.append(try await self.sluicePublish(base))
        }
        let consume = (raw: Self.median(rawConsume), sluice: Self.median(sluiceConsume))
        let publish = (raw: Self.median(rawPublish), sluice: Self.median(sluicePublish))
        print(pad("raw consume (prefetch 1000, ack every 500)", 44) + pad(formatRate(consume.raw), 14))
        print(pad("sluice consume (RabbitMQSource → discard)", 44) + pad(formatRate(consume.sluice), 14) + String(format: "%.2f×", consume.sluice / consume.raw))
        // The broker shares the CPU: what this process spends per message is taken from it.
        print(String(format: "consume CPU of this process per message (median): raw %.2f µs, sluice %.2f µs", Self.median(rawCPU), Self.median(sluiceCPU)))
        print(pad("raw publish (1000 outstanding confirms)", 44) + pad(formatRate(publish.raw), 14))
        print(pad("sluice publish (RabbitMQSink, confirmed)", 44) + pad(formatRate(publish.sluice), 14) + String(format: "%.2f×", publish.sluice / publish.raw))
        print(
            "RESULT rabbitmq msgs_per_s=\(Int(consume.sluice)) "
                + String(format: "vs_raw=%.2f", consume.sluice / consume.raw)
                + " publish_confirmed_per_s=\(Int(publish.sluice)) "
                + String(format: "publish_vs_raw=%.2f", publish.sluice / publish.raw)
        )
    }

    /// Sends `command` (`enable`, `disable`) to the `perf record --control fifo:PATH` named by
    /// `SLUICE_PERF_CONTROL`, if set, so that a profile holds only the Sluice consume runs:
    /// `perf record -D -1 --control fifo:ctl -g sluice-bench rabbitmq` with that variable.
    private static func profiler(_ command: String) {
        guard let path = ProcessInfo.processInfo.environment["SLUICE_PERF_CONTROL"], let fifo = FileHandle(forWritingAtPath: path) else { return }
        fifo.write(Data((command + "\n").utf8))
        try? fifo.close()
    }

    private static func median(_ values: [Double]) -> Double {
        values.sorted()[values.count / 2]
    }

    /// A fresh, declared queue and a client on it.
    private func fresh(_ base: RabbitMQConfiguration) async throws -> (RabbitMQConfiguration, RabbitMQClient) {
        var configuration = base
        configuration.queue = "sluice-bench-\(UUID().uuidString.prefix(8).lowercased())"
        configuration.topology.declare = true
        configuration.topology.durable = false
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        return (configuration, client)
    }

    /// A fresh queue holding `total` messages.
    private func preloaded(_ base: RabbitMQConfiguration) async throws -> (RabbitMQConfiguration, RabbitMQClient) {
        let (configuration, client) = try await self.fresh(base)
        var remaining = self.total
        while remaining > 0 {
            let count = min(remaining, 10_000)
            try await client.publish(Array(repeating: self.payload, count: count))
            remaining -= count
        }
        while try await client.readyCount(configuration.queue) < self.total {
            try await Task.sleep(for: .milliseconds(20))
        }
        return (configuration, client)
    }

    private func finish(_ configuration: RabbitMQConfiguration, _ client: RabbitMQClient) async throws {
        try await client.delete(queue: configuration.queue)
        await client.close()
    }

    /// The CPU time this process used so far (all threads), in microseconds.
    private static func processCPU() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
        return Double(time.tv_sec) * 1e6 + Double(time.tv_nsec) / 1e3
    }

    private func rawConsume(_ base: RabbitMQConfiguration) async throws -> (rate: Double, cpu: Double) {
        let (configuration, client) = try await self.preloaded(base)
        let cpu = Self.processCPU()
        let seconds = try await client.rawConsume(configuration.queue, count: self.total, prefetch: self.prefetch, ackEvery: 500)
        let used = Self.processCPU() - cpu
        try await self.finish(configuration, client)
        return (Double(self.total) / seconds, used / Double(self.total))
    }

    private func sluiceConsume(_ base: RabbitMQConfiguration) async throws -> (rate: Double, cpu: Double) {
        let (configuration, client) = try await self.preloaded(base)
        let total = self.total
        // The handlers say when the last message was handled, so that the run is not watched
        // by a timer: a poll every millisecond cost this process a timer wake-up per
        // millisecond (a tenth of its CPU in a profile) that the raw loop does not pay.
        let handled = HandledCount()
        let (allHandled, signal) = AsyncStream<Void>.makeStream()
        let pipeline = Pipeline("bench", source: RabbitMQSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: self.prefetch / 2) { _ in
                if handled.increment() == total { signal.yield() }
            }
        }
        let cpu = Self.processCPU()
        var used = 0.0
        let start = ContinuousClock.now
        var end = start
        Self.profiler("enable")
        defer { Self.profiler("disable") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            for await _ in allHandled { break }
            // Then until the pipeline settled the last batch (the raw loop's time ends with its
            // last acknowledgement too).
            while pipeline.statistics.acknowledged < total {
                try await Task.sleep(for: .milliseconds(1))
            }
            end = ContinuousClock.now
            used = Self.processCPU() - cpu
            Self.profiler("disable")
            pipeline.drain()
            try await group.waitForAll()
        }
        try await self.finish(configuration, client)
        return (Double(total) / (end - start).inSeconds, used / Double(total))
    }

    private func rawPublish(_ base: RabbitMQConfiguration) async throws -> Double {
        let (configuration, client) = try await self.fresh(base)
        let seconds = try await client.rawPublish(configuration.queue, count: self.total, payload: self.payload, outstanding: 1000)
        try await self.finish(configuration, client)
        return Double(self.total) / seconds
    }

    private func sluicePublish(_ base: RabbitMQConfiguration) async throws -> Double {
        let (configuration, client) = try await self.fresh(base)
        let sink = try RabbitMQSink(configuration: configuration)
        try await sink.connect()
        let batch = Array(repeating: Payload(self.payload), count: 500)
        let batches = self.total / 500
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sender in 0..<2 {
                group.addTask {
                    var index = sender
                    while index < batches {
                        let outcomes = try await sink.publish(batch)
                        guard outcomes.allSatisfy({ $0 == nil }) else { throw BenchFailure("a message was not confirmed") }
                        index += 2
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = (ContinuousClock.now - start).inSeconds
        await sink.close()
        try await self.finish(configuration, client)
        return Double(batches * 500) / seconds
    }
}

/// How many messages the benchmark's handlers saw.
final class HandledCount: Sendable {
    private let count = Atomic<Int>(0)

    /// Counts one more; returns the new count.
    func increment() -> Int { self.count.add(1, ordering: .relaxed).newValue }
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
