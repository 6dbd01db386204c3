//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
@_spi(Benchmarks) import Sluice
import SluiceTestKit

@inline(never)
@Sendable
func touch(_ message: inout Message<BasicMetadata>) async {}

/// An in-memory source through 2 processors into a batcher of 100, with acknowledgements.
struct PipelineSuite {
    let quick: Bool

    func run() async {
        let total = self.quick ? 1_000_000 : 4_000_000
        let repetitions = self.quick ? 3 : 5
        print("suite pipeline: in-memory source → 2 processors → batcher of 100, acks (messages/s, median of \(repetitions) runs)")
        print("messages carry 100 payload bytes each, 1000 payloads to a buffer (as a broker fetch), unless the row says otherwise")
        print(pad("configuration", 66) + "rate")
        var best = 0.0
        var bestAsync = 0.0
        var bestBare = 0.0
        var bestOwn = 0.0
        let configurations = [
            (maxDemand: 1000, asyncHandler: false, payloadSize: 100, ownBuffers: false, batchProcessors: 1),
            (maxDemand: 5000, asyncHandler: false, payloadSize: 100, ownBuffers: false, batchProcessors: 1),
            (maxDemand: 1000, asyncHandler: true, payloadSize: 100, ownBuffers: false, batchProcessors: 1),
            (maxDemand: 5000, asyncHandler: true, payloadSize: 100, ownBuffers: false, batchProcessors: 1),
            // Buffers freed on two threads at once (see the README on allocators).
            (maxDemand: 1000, asyncHandler: false, payloadSize: 100, ownBuffers: false, batchProcessors: 2),
            // Every payload in an allocation of its own, as `Payload([UInt8])` makes it.
            (maxDemand: 1000, asyncHandler: false, payloadSize: 100, ownBuffers: true, batchProcessors: 1),
            (maxDemand: 1000, asyncHandler: false, payloadSize: 0, ownBuffers: false, batchProcessors: 1),
        ]
        for configuration in configurations {
            var runs: [(rate: Double, cores: Double)] = []
            for _ in 0...repetitions {
                runs.append(
                    await self.runPipeline(
                        total: total,
                        maxDemand: configuration.maxDemand,
                        asyncHandler: configuration.asyncHandler,
                        payloadSize: configuration.payloadSize,
                        ownBuffers: configuration.ownBuffers,
                        batchProcessors: configuration.batchProcessors
                    )
                )
            }
            runs.removeFirst()  // warm-up
            let median = runs.sorted { $0.rate < $1.rate }[runs.count / 2]
            if configuration.payloadSize == 0 {
                bestBare = max(bestBare, median.rate)
            } else if configuration.ownBuffers {
                bestOwn = max(bestOwn, median.rate)
            } else if configuration.asyncHandler {
                bestAsync = max(bestAsync, median.rate)
            } else if configuration.batchProcessors == 1 {
                best = max(best, median.rate)
            }
            let label =
                "processors 2 × maxDemand \(configuration.maxDemand), \(configuration.asyncHandler ? "async" : "sync") handler"
                + (configuration.payloadSize == 0 ? ", no payload" : "")
                + (configuration.ownBuffers ? ", a buffer per payload" : "")
                + (configuration.batchProcessors > 1 ? ", \(configuration.batchProcessors) batch processors" : "")
            print(
                pad(label, 66) + pad(formatRate(median.rate), 12)
                    + String(format: "(%.2f cores busy, %.0f ns CPU per message)", median.cores, median.cores / median.rate * 1e9)
            )
        }
        let ackNanoseconds = await self.settlementCost()
        print(pad("ack tracking per message (settle path)", 66) + String(format: "%.1f ns", ackNanoseconds))
        print(
            "RESULT pipeline msgs_per_s=\(Int(best)) async_handler_msgs_per_s=\(Int(bestAsync)) "
                + "own_buffer_msgs_per_s=\(Int(bestOwn)) no_payload_msgs_per_s=\(Int(bestBare)) ack_ns_per_msg=\(String(format: "%.1f", ackNanoseconds))"
        )
    }

    /// Three runs of the pipeline, for profilers: the processors' maxDemand comes from
    /// `SLUICE_MAX_DEMAND` (default 1000), the payload size from
    /// `SLUICE_PAYLOAD` (default 100 bytes), `SLUICE_OWN_BUFFERS=1` gives every payload an
    /// allocation of its own, `SLUICE_ASYNC=1` picks the async handler, and
    /// `SLUICE_BATCH_PROCESSORS` the batcher's concurrency (default 1).
    func profile() async {
        let environment = ProcessInfo.processInfo.environment
        let payloadSize = environment["SLUICE_PAYLOAD"].flatMap { Int($0) } ?? 100
        let asyncHandler = environment["SLUICE_ASYNC"] == "1"
        let ownBuffers = environment["SLUICE_OWN_BUFFERS"] == "1"
        let maxDemand = environment["SLUICE_MAX_DEMAND"].flatMap { Int($0) } ?? 1000
        let batchProcessors = environment["SLUICE_BATCH_PROCESSORS"].flatMap { Int($0) } ?? 1
        for _ in 0..<3 {
            let run = await self.runPipeline(
                total: 2_000_000,
                maxDemand: maxDemand,
                asyncHandler: asyncHandler,
                payloadSize: payloadSize,
                ownBuffers: ownBuffers,
                batchProcessors: batchProcessors
            )
            print(formatRate(run.rate), String(format: "%.2f cores", run.cores))
        }
    }

    /// Runs the pipeline over `total` preloaded messages; returns messages per second (the
    /// preloading is not timed) and the cores kept busy.
    private func runPipeline(
        total: Int,
        maxDemand: Int,
        asyncHandler: Bool,
        payloadSize: Int,
        ownBuffers: Bool,
        batchProcessors: Int
    ) async -> (rate: Double, cores: Double) {
        let source = InMemorySource(recordsOutcomes: false)
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: payloadSize)
        if payloadSize == 0 {
            source.push(payloads: Array(repeating: Payload(), count: total))  // allocates nothing
        } else if ownBuffers {
            source.push(payloads: (0..<total).map { _ in Payload(payload.map { $0 }) })
        } else {
            // Copied into one buffer per 1000 messages, as a broker adapter copies a fetch.
            source.push(Array(repeating: payload, count: total))
        }
        source.finishWhenEmpty()
        profilerControl(enable: true)
        defer { profilerControl(enable: false) }
        let cpuStarted = processCPUTime()
        let started = ContinuousClock.now
        let pipeline = Pipeline("bench", source: source) {
            if asyncHandler {
                // An async handler that does not suspend: what the async call itself costs.
                Processors(concurrency: 2, maxDemand: maxDemand) { message in await touch(&message) }
            } else {
                Processors(concurrency: 2, maxDemand: maxDemand) { _ in }
            }
            Batcher(size: 100, timeout: .seconds(1), concurrency: batchProcessors) { _ in }
        }
        do {
            try await pipeline.run()
        } catch {
            fatalError("pipeline failed: \(error)")
        }
        let elapsed = ContinuousClock.now - started
        let cpu = processCPUTime() - cpuStarted
        precondition(source.settledCount == total, "settled \(source.settledCount) of \(total)")
        return (Double(total) / (Double(elapsed / .nanoseconds(1)) / 1e9), cpu / elapsed)
    }

    /// The cost per message of acknowledging a 100-message batch through the pipeline's
    /// settlement path (building the settlement, counting, handing it to the acknowledger).
    private func settlementCost() async -> Double {
        let batch = (0..<100).map { Message(payload: [], metadata: BasicMetadata(id: UInt64($0))) }
        let source = InMemorySource(recordsOutcomes: false)
        let quiet = Logger(label: "sluice-bench.probe", factory: { _ in SwiftLogNoOpLogHandler() })
        guard let probe = try? await SettlementProbe(source: source, logger: quiet) else { fatalError("probe failed") }
        let rounds = 200_000
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for _ in 0..<rounds {
                probe.settle(batch)
            }
        }
        precondition(source.settledCount == rounds * 100)
        return Double(elapsed / .nanoseconds(1)) / Double(rounds * 100)
    }
}
