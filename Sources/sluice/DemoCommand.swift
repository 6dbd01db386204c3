//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Sluice
import SluiceRedis
import Synchronization

/// `sluice demo [--source URL] [--count N]`: the ETL example of examples/pipeline with a live
/// status and a summary.
struct Demo: AsyncParsableCommand, SourceUser {
    static let configuration = CommandConfiguration(
        abstract: "Run the example ETL pipeline (JSON orders → processors → batches → a store) with a live status.",
        discussion: """
            Orders are decoded from JSON by 4 processors partitioned by customer (orders of one \
            customer stay in order), batched by region (50 a batch, 2 batch processors) and written \
            to a simulated store that takes 5 ms a batch and fails the first attempt of about every \
            fifth batch: those batches are retried with backoff (3 attempts, then dead-letter). A \
            message that is not a valid order is dead-lettered at once, without retries.

            Without --source the orders are generated in memory (--count of them, default 20000; \
            every hundredth is malformed), so no broker is needed. With --source they are read from \
            a broker URL, as for `sluice drain`: redis://host[:port][/db]?key=KEY[&mode=list|reliable|stream], \
            amqp://host[:port][/vhost]?queue=QUEUE, kafka://host:port/topic?group=G. Each message is \
            one order, a JSON object such as {"id": 42, "customer": 7, "region": "eu", "amount": 19.5}; \
            anything else is dead-lettered (Redis: to KEY:dead). --count bounds how many are taken \
            (without it the demo runs until interrupted). SIGINT or SIGTERM drains gracefully.

            The live status goes to stderr; stdout ends with the summary line \
            "processed P, failed F, retried R, dead-lettered D in S s (M msg/s)".

            Examples:
              sluice demo
              sluice demo --count 2000
              sluice demo --source 'redis://127.0.0.1:6379/0?key=orders' --count 1000
            """
    )

    @Option(help: "A broker URL to read the orders from (default: orders generated in memory).")
    var source: String?

    // `.unconditional`: `--count -5` is read as a (bad) value, not as an unknown option.
    @Option(parsing: .unconditional, help: "How many orders to generate or take (1 to 100000000; generated: default 20000).")
    var count: Int?

    @Option(help: "The live status, on stderr: auto (redrawn in place on a terminal, plain lines otherwise), terminal, lines or off.")
    var status: StatusOption = .auto

    /// Orders generated when there is no --source and no --count.
    static let defaultCount = 20_000

    func validate() throws {
        if let count = self.count, !(1...100_000_000).contains(count) {
            throw ValidationError("invalid --count \(count): it must be a whole number from 1 to 100000000")
        }
    }

    func run() async throws {
        try await reportingErrors {
            guard let url = self.source else {
                let count = self.count ?? Self.defaultCount
                print("sluice demo: \(count) orders generated in memory, \(DemoOrders.malformed(in: count)) of them malformed")
                fflush(nil)
                return try await self.run(DemoOrders(count: count), limit: nil)
            }
            print("sluice demo: orders from \(Redaction.redact(url))" + (self.count.map { ", at most \($0)" } ?? ""))
            fflush(nil)
            try await withSource(url, limit: self.count, self)
        }
    }

    func use<Source: PipelineSource>(_ source: Source) async throws {
        try await self.run(source, limit: self.count)
    }

    /// Runs the demo pipeline on `source`; with a `limit`, drains once that many were taken and
    /// gives back to the broker what it delivered beyond.
    private func run<Source: PipelineSource>(_ source: Source, limit: Int?) async throws {
        let taken = Atomic<Int>(0)
        let givenBack = Atomic<Int>(0)
        let failedOnce = Mutex<Set<Int>>([])
        let (reached, reachedContinuation) = AsyncStream.makeStream(of: Void.self)
        let stored = Mutex<[String: (orders: Int, amount: Double)]>([:])
        let pipeline = Pipeline(
            "demo",
            source: source,
            configuration: PipelineConfiguration(
                failurePolicy: .retry(attempts: 3, initialBackoff: .milliseconds(20), then: .deadLetter),
                shutdownTimeout: .seconds(30)
            )
        ) {
            Processors(concurrency: 4, maxDemand: 50, partitionBy: { (try? $0.decode(Order.self))?.customer ?? -1 }) { message in
                if let limit {
                    let number = taken.add(1, ordering: .relaxed).newValue
                    if number > limit {
                        givenBack.add(1, ordering: .relaxed)
                        return message.fail(BeyondCount(), disposition: .requeue)
                    }
                    if number == limit { reachedContinuation.finish() }
                }
                do {
                    message.batchKey = try message.decode(Order.self).region
                } catch {
                    // Retrying cannot fix a malformed order: dead-letter it at once.
                    message.fail(error, disposition: .deadLetter)
                }
            }
            Batcher("orders", size: 50, timeout: .milliseconds(100), concurrency: 2) { batch in
                let orders = try batch.map { try $0.decode(Order.self) }
                // The simulated store: a write takes 5 ms, and the first attempt of a batch whose
                // first order id is a multiple of 5 fails (the retry succeeds).
                try await Task.sleep(for: .milliseconds(5))
                let first = orders[0].id
                if first % 5 == 0, failedOnce.withLock({ $0.insert(first).inserted }) { throw StoreUnavailable() }
                stored.withLock { totals in
                    for order in orders { totals[order.region, default: (0, 0)].orders += 1; totals[order.region, default: (0, 0)].amount += order.amount }
                }
            }
        }
        let signals = DrainSignals { pipeline.drain() }
        defer { signals.cancel() }
        let sampler = PipelineStatusSampler(pipeline) { givenBack.load(ordering: .relaxed) }
        let status = LiveStatus(title: "sluice demo", mode: self.status.mode, lag: LagSampler(of: source)) { await sampler.sample() }
        let clock = ContinuousClock()
        let started = clock.now
        if limit == nil {
            try await runWithStatus(pipeline, status: status)
        } else {
            try await runWithStatus(pipeline, status: status, drainingWhen: reached, reachedContinuation)
        }
        let elapsed = StatusRenderer.seconds(clock.now - started)
        let statistics = pipeline.statistics
        let back = givenBack.load(ordering: .relaxed)
        for (region, total) in stored.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            print("  stored \(region): \(total.orders) orders, amount " + String(format: "%.1f", total.amount))
        }
        if back > 0 { print("  \(back) taken beyond --count were given back to the broker") }
        let settled = statistics.settled - back
        print(
            "processed \(statistics.acknowledged), failed \(statistics.failed - back), retried \(statistics.retried), "
                + "dead-lettered \(statistics.deadLettered)"
                + String(format: " in %.3f s (%.0f msg/s)", elapsed, elapsed > 0 ? Double(settled) / elapsed : 0)
        )
        if let signal = signals.caught { throw ExitCode(128 + signal) }
    }
}

/// The demo store's simulated failure (retried with backoff).
struct StoreUnavailable: Error, CustomStringConvertible {
    var description: String { "the store is unavailable (simulated); the batch is retried" }
}
