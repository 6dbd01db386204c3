//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice

// The per-event work lives in plain synchronous functions shared by both sides, so the
// comparison measures the plumbing, not how well a loop optimizes inside an async function.

@inline(never)
func countUp(from start: Int, _ count: Int) -> [Int] {
    // Filled in place: `Array(range)` goes through a generic copy that costs more than the
    // plumbing measured here.
    [Int](unsafeUninitializedCapacity: count) { buffer, initialized in
        for offset in 0..<count { buffer[offset] = start &+ offset }
        initialized = count
    }
}

@inline(never)
func doubled(_ events: [Int]) -> [Int] {
    events.map { $0 &* 2 }
}

@inline(never)
func sumOf(_ events: [Int]) -> Int {
    events.reduce(0, &+)
}

/// A counts up, B doubles, C sums and stops after `total` events.
private struct Counter: Producer {
    var next = 0
    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
        context.emit(countUp(from: self.next, demand))
        self.next += demand
    }
}

private struct Doubler: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int
    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        context.emit(doubled(events))
    }
}

private struct Summer: Consumer {
    typealias Input = Int
    let total: Int
    var seen = 0
    var sum = 0
    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
        self.sum &+= sumOf(events)
        self.seen += events.count
        if self.seen >= self.total { context.stop(.normal) }
    }
}

struct EngineSuite {
    let quick: Bool

    func run() async {
        let demands = [1, 10, 100, 1000, 10_000]
        print("suite engine: A counts, B doubles, C sums (events/s, median of \(self.repetitions) runs)")
        print(pad("topology", 28) + pad("sluice", 14) + pad("asyncstream", 14) + "ratio")
        var at1000 = 0.0
        var ratio1000 = 0.0
        var at1 = 0.0
        for demand in demands {
            let total = self.total(for: demand)
            let sluice = await medianRate(repetitions: self.repetitions) { await self.sluiceABC(maxDemand: demand, total: total) }
            let stream = await medianRate(repetitions: self.repetitions) { await self.streamABC(batch: demand, total: total) }
            print(pad("A→B→C maxDemand \(demand)", 28) + pad(formatRate(sluice), 14) + pad(formatRate(stream), 14)
                + String(format: "%.2f×", sluice / stream))
            if demand == 1000 {
                at1000 = sluice
                ratio1000 = sluice / stream
            }
            if demand == 1 { at1 = sluice }
        }
        let total = self.total(for: 1000) * 2
        let fanOut = await medianRate(repetitions: self.repetitions) { await self.sluiceFanOut(consumers: 4, total: total) }
        let fanOutStream = await medianRate(repetitions: self.repetitions) { await self.streamFanOut(consumers: 4, total: total) }
        print(pad("A→4×C maxDemand 1000", 28) + pad(formatRate(fanOut), 14) + pad(formatRate(fanOutStream), 14)
            + String(format: "%.2f×", fanOut / fanOutStream))
        print(
            "RESULT engine events_per_s=\(Int(at1000)) vs_asyncstream=\(String(format: "%.2f", ratio1000))"
                + " max_demand_1_per_s=\(Int(at1)) fan_out_4_per_s=\(Int(fanOut))"
        )
    }

    private var repetitions: Int { self.quick ? 3 : 5 }

    private func total(for demand: Int) -> Int {
        let base = demand <= 1 ? 200_000 : demand <= 10 ? 2_000_000 : 20_000_000
        return self.quick ? base / 4 : base
    }

    func sluiceABC(maxDemand: Int, total: Int) async -> Int {
        do {
            let options = SubscriptionOptions<Int>(maxDemand: maxDemand, minDemand: maxDemand / 2)
            let a = try await StageHandle.start(Counter())
            let b = try await StageHandle.start(Doubler(), subscribeTo: [.init(a, options: options)])
            let c = try await StageHandle.start(Summer(total: total), subscribeTo: [.init(b, options: options)])
            _ = await c.waitForTermination()
            await a.stop()
            await b.stop()
            return total
        } catch {
            fatalError("benchmark failed: \(error)")
        }
    }

    func sluiceFanOut(consumers: Int, total: Int) async -> Int {
        do {
            let options = SubscriptionOptions<Int>(maxDemand: 1000)
            let a = try await StageHandle.start(Counter())
            var cs: [StageHandle<Summer>] = []
            for _ in 0..<consumers {
                cs.append(try await StageHandle.start(Summer(total: total / consumers), subscribeTo: [.init(a, options: options)]))
            }
            for c in cs { _ = await c.waitForTermination() }
            await a.stop()
            return total
        } catch {
            fatalError("benchmark failed: \(error)")
        }
    }

    /// The same work as a plain AsyncStream pipeline, moving batches of `batch` events.
    func streamABC(batch: Int, total: Int) async -> Int {
        let (ab, abContinuation) = AsyncStream.makeStream(of: [Int].self)
        let (bc, bcContinuation) = AsyncStream.makeStream(of: [Int].self)
        return await withTaskGroup(of: Int.self) { group in
            group.addTask {
                var next = 0
                while next < total {
                    let n = min(batch, total - next)
                    abContinuation.yield(countUp(from: next, n))
                    next += n
                }
                abContinuation.finish()
                return 0
            }
            group.addTask {
                for await events in ab { bcContinuation.yield(doubled(events)) }
                bcContinuation.finish()
                return 0
            }
            group.addTask {
                var sum = 0
                var seen = 0
                for await events in bc {
                    sum &+= sumOf(events)
                    seen += events.count
                }
                return seen + (sum == 42 ? 1 : 0) * 0
            }
            var moved = 0
            for await result in group { moved += result }
            return moved
        }
    }

    func streamFanOut(consumers: Int, total: Int) async -> Int {
        var streams: [AsyncStream<[Int]>] = []
        var continuations: [AsyncStream<[Int]>.Continuation] = []
        for _ in 0..<consumers {
            let (stream, continuation) = AsyncStream.makeStream(of: [Int].self)
            streams.append(stream)
            continuations.append(continuation)
        }
        let outputs = continuations
        return await withTaskGroup(of: Int.self) { group in
            group.addTask {
                var next = 0
                var index = 0
                while next < total {
                    let n = min(1000, total - next)
                    outputs[index % outputs.count].yield(countUp(from: next, n))
                    next += n
                    index += 1
                }
                for output in outputs { output.finish() }
                return 0
            }
            for stream in streams {
                group.addTask {
                    var sum = 0
                    var seen = 0
                    for await events in stream {
                        sum &+= sumOf(events)
                        seen += events.count
                    }
                    return seen + (sum == 42 ? 1 : 0) * 0
                }
            }
            var moved = 0
            for await result in group { moved += result }
            return moved
        }
    }
}
