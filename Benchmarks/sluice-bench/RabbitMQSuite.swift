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
        var rawPublish: [Double] = []
        var sluicePublish: [Double] = []
        for _ in 0..<self.repetitions {
            rawConsume.append(try await self.rawConsume(base))
            sluiceConsume.append(try await self.sluiceConsume(base))
            rawPublish.append(try await self.rawPublish(base))
            sluicePublish.append(try await self.sluicePublish(base))
        }
        let consume = (raw: Self.median(rawConsume), sluice: Self.median(sluiceConsume))
        let publish = (raw: Self.median(rawPublish), sluice: Self.median(sluicePublish))
        print(pad("raw consume (prefetch 1000, ack every 500)", 44) + pad(formatRate(consume.raw), 14))
        print(pad("sluice consume (RabbitMQSource → discard)", 44) + pad(formatRate(consume.sluice), 14) + String(format: "%.2f×", consume.sluice / consume.raw))
        print(pad("raw publish (1000 outstanding confirms)", 44) + pad(formatRate(publish.raw), 14))
        print(pad("sluice publish (RabbitMQSink, confirmed)", 44) + pad(formatRate(publish.sluice), 14) + String(format: "%.2f×", publish.sluice / publish.raw))
        print(
            "RESULT rabbitmq msgs_per_s=\(Int(consume.sluice)) "
                + String(format: "vs_raw=%.2f", consume.sluice / consume.raw)
                + " publish_confirmed_per_s=\(Int(publish.sluice)) "
                + String(format: "publish_vs_raw=%.2f", publish.sluice / publish.raw)
        )
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

    private func rawConsume(_ base: RabbitMQConfiguration) async throws -> Double {
        let (configuration, client) = try await self.preloaded(base)
        let seconds = try await client.rawConsume(configuration.queue, count: self.total, prefetch: self.prefetch, ackEvery: 500)
        try await self.finish(configuration, client)
        return Double(self.total) / seconds
    }

    private func sluiceConsume(_ base: RabbitMQConfiguration) async throws -> Double {
        let (configuration, client) = try await self.preloaded(base)
        let total = self.total
        let pipeline = Pipeline("bench", source: RabbitMQSource(configuration: configuration)) {
            Processors(concurrency: 2, maxDemand: self.prefetch / 2) { _ in }
        }
        let start = ContinuousClock.now
        var end = start
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            while pipeline.statistics.acknowledged < total {
                try await Task.sleep(for: .milliseconds(1))
            }
            end = ContinuousClock.now
            pipeline.drain()
            try await group.waitForAll()
        }
        try await self.finish(configuration, client)
        return Double(total) / (end - start).inSeconds
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

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
