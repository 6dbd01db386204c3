//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// A pipeline over the in-memory source: JSON orders are decoded by 4 processors (orders of the
// same customer stay in order), routed to a batcher by region, and "stored" in batches of 50.
// A malformed order fails and is dead-lettered; a flaky store is retried with backoff.
//
//   swift run ExamplePipeline [--orders 1000]
//
// Swap InMemorySource for RedisSource(url: "redis://127.0.0.1:16379/0?key=orders") and the
// same pipeline consumes a Redis list.

import Foundation
import Sluice
import SluiceTestKit
import Synchronization

struct Order: Codable, Sendable {
    var id: Int
    var customer: Int
    var region: String
    var amount: Double
}

let count = CommandLine.arguments.firstIndex(of: "--orders").flatMap { index in
    index + 1 < CommandLine.arguments.count ? Int(CommandLine.arguments[index + 1]) : nil
} ?? 1000

let source = InMemorySource()
let encoder = JSONEncoder()
let regions = ["eu", "us", "apac"]
var payloads: [[UInt8]] = (0..<count).map { id in
    let order = Order(id: id, customer: id % 37, region: regions[id % regions.count], amount: Double(id % 100))
    return Array(try! encoder.encode(order))
}
payloads.append(Array("{ not an order".utf8))
source.push(payloads)
source.finishWhenEmpty()

let stored = Mutex<[String: Double]>([:])
let failedOnce = Mutex<Set<Int>>([])

let pipeline = Pipeline(
    "orders",
    source: source,
    configuration: PipelineConfiguration(
        failurePolicy: .retry(attempts: 3, initialBackoff: .milliseconds(20), then: .deadLetter)
    )
) {
    Processors(concurrency: 4, maxDemand: 50, partitionBy: { (try? $0.decode(Order.self))?.customer ?? -1 }) { message in
        let order = try message.decode(Order.self)
        message.batchKey = order.region
    }
    Batcher(size: 50, timeout: .milliseconds(100), concurrency: 2) { batch in
        let orders = try batch.map { try $0.decode(Order.self) }
        // The store fails the first time it sees every fifth batch: that batch is retried
        // with backoff and then succeeds.
        let first = orders[0].id
        let failNow = first % 5 == 0 && failedOnce.withLock { $0.insert(first).inserted }
        if failNow { throw URLError(.timedOut) }
        stored.withLock { totals in
            for order in orders { totals[order.region, default: 0] += order.amount }
        }
    }
}

let started = ContinuousClock.now
try await pipeline.run()
let statistics = pipeline.statistics
print("handled \(statistics.received) messages in \(ContinuousClock.now - started)")
print("acknowledged \(statistics.acknowledged), dead-lettered \(statistics.deadLettered), retries \(statistics.retried)")
for (region, total) in stored.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
    print("  \(region): \(total)")
}
