//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(1))) struct PipelineBasicsTests {
    @Test func processorsAcknowledgeEveryMessageExactlyOnce() async throws {
        let source = InMemorySource()
        let seen = Recorder<String>()
        let pipeline = Pipeline("basic", source: source) {
            Processors(concurrency: 3, maxDemand: 7) { message in seen.append(try message.string()) }
        }
        source.push(payloads(1000))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        #expect(seen.count == 1000)
        #expect(Set(seen.all).count == 1000)
        let counts = source.settlementCounts
        #expect(counts.count == 1000)
        #expect(counts.values.allSatisfy { $0 == 1 })
        #expect((0..<1000).allSatisfy { source.outcome(of: UInt64($0)) == .acknowledged })
        #expect(pipeline.statistics.acknowledged == 1000)  // the last run's counts
    }

    @Test func batchersReceiveFullBatchesAndAcknowledgeAfterTheBatch() async throws {
        let source = InMemorySource()
        let sizes = Recorder<Int>()
        let settledBeforeBatch = Recorder<Int>()
        let pipeline = Pipeline("batched", source: source) {
            Processors(concurrency: 2, maxDemand: 10) { _ in }
            Batcher(size: 25, timeout: .seconds(60)) { batch in
                sizes.append(batch.count)
                // Nothing of this batch may be settled before the batch handler finished.
                settledBeforeBatch.append(batch.filter { source.outcome(of: $0.metadata.id) != nil }.count)
            }
        }
        source.push(payloads(500))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        #expect(sizes.all.reduce(0, +) == 500)
        #expect(sizes.all.allSatisfy { $0 <= 25 })
        #expect(sizes.all.filter { $0 == 25 }.count >= 18)
        #expect(settledBeforeBatch.all.allSatisfy { $0 == 0 })
        #expect(source.settlementCounts.count == 500)
        #expect(source.settlementCounts.values.allSatisfy { $0 == 1 })
    }

    @Test func messagesAreRoutedToNamedBatchersAndUnknownNamesFail() async throws {
        let source = InMemorySource()
        let even = Recorder<String>()
        let odd = Recorder<String>()
        let pipeline = Pipeline(
            "routing",
            source: source,
            configuration: PipelineConfiguration(failurePolicy: .deadLetter)
        ) {
            Processors(concurrency: 2) { message in
                let text = try message.string()
                if text == "nowhere" {
                    message.batcher = "missing"
                } else {
                    message.batcher = Int(text)! % 2 == 0 ? "even" : "odd"
                }
            }
            Batcher("even", size: 10, timeout: .seconds(60)) { batch in for m in batch { even.append(try m.string()) } }
            Batcher("odd", size: 10, timeout: .seconds(60)) { batch in for m in batch { odd.append(try m.string()) } }
        }
        source.push((0..<100).map { Array("\($0)".utf8) })
        let lost = source.push("nowhere")
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        #expect(Set(even.all) == Set(stride(from: 0, to: 100, by: 2).map { "\($0)" }))
        #expect(Set(odd.all) == Set(stride(from: 1, to: 100, by: 2).map { "\($0)" }))
        #expect(source.outcome(of: lost) == .failed(.deadLetter))
        #expect(source.settlementCounts.count == 101)
    }

    @Test("with a single batcher, messages routed to it by name reach it and unknown names still fail")
    func aSingleBatcherTakesItsNameAndRejectsOthers() async throws {
        let source = InMemorySource()
        let batched = Recorder<String>()
        let pipeline = Pipeline("one-batcher", source: source, configuration: PipelineConfiguration(failurePolicy: .deadLetter)) {
            Processors(concurrency: 2) { message in
                switch try message.string() {
                case "named": message.batcher = "only"
                case "lost": message.batcher = "missing"
                default: break
                }
            }
            Batcher("only", size: 10, timeout: .milliseconds(20)) { batch in for m in batch { batched.append(try m.string()) } }
        }
        try await withRunningPipeline(pipeline) {
            let outcomes = await source.testBatch([Array("named".utf8), Array("plain".utf8), Array("lost".utf8)])
            #expect(outcomes == [.acknowledged, .acknowledged, .failed(.deadLetter)])
        }
        #expect(batched.all.sorted() == ["named", "plain"])
    }

    @Test func sameKeyIsHandledInOrderWhileKeysRunInParallel() async throws {
        let source = InMemorySource()
        let seen = Recorder<(key: Int, sequence: Int)>()
        let pipeline = Pipeline("ordered", source: source) {
            Processors(concurrency: 4, maxDemand: 5, partitionBy: { message in (try? message.string()).map { $0.split(separator: ":")[0] } ?? "" }) {
                message in
                let parts = try message.string().split(separator: ":")
                // Yield so different keys interleave across processors.
                await Task.yield()
                seen.append((Int(parts[0])!, Int(parts[1])!))
            }
        }
        var batch: [[UInt8]] = []
        for sequence in 0..<100 {
            for key in 0..<8 { batch.append(Array("\(key):\(sequence)".utf8)) }
        }
        source.push(batch)
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        let all = seen.all
        #expect(all.count == 800)
        for key in 0..<8 {
            let order = all.filter { $0.key == key }.map(\.sequence)
            #expect(order == Array(0..<100), "key \(key) out of order")
        }
    }

    /// `processor:` sends a message to processor number n modulo the concurrency, the same in
    /// every run: numbers 0 and 4 (1 and 5, …) share one of 4 processors, so they never run at
    /// once, while 0, 1, 2 and 3 have a processor each and do.
    @Test func aMessageGoesToTheProcessorItsNumberNames() async throws {
        let source = InMemorySource()
        let running = Mutex((perProcessor: [Int](repeating: 0, count: 4), all: 0, mostInOne: 0, mostAll: 0))
        let pipeline = Pipeline("numbered", source: source) {
            Processors(concurrency: 4, maxDemand: 2, processor: { message in Int((try? message.string()) ?? "") ?? 0 }) { message in
                let processor = Int(try message.string())! % 4
                running.withLock {
                    $0.perProcessor[processor] += 1
                    $0.all += 1
                    $0.mostInOne = max($0.mostInOne, $0.perProcessor[processor])
                    $0.mostAll = max($0.mostAll, $0.all)
                }
                try await Task.sleep(for: .milliseconds(2))
                running.withLock {
                    $0.perProcessor[processor] -= 1
                    $0.all -= 1
                }
            }
        }
        source.push((0..<200).map { Array("\($0 % 8)".utf8) })
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        let seen = running.withLock { $0 }
        #expect(seen.mostInOne == 1, "numbers sharing a processor ran at once")
        #expect(seen.mostAll > 1, "the four processors never ran at once")
    }

    @Test func aWindowLargerThanTheSourceAllowsIsRejectedWithTheNumbers() async throws {
        let source = InMemorySource(maximumInFlight: 50)
        let pipeline = Pipeline("window", source: source) {
            Processors(concurrency: 2, maxDemand: 10) { _ in }
            Batcher(size: 20, timeout: .seconds(1), concurrency: 2) { _ in }
        }
        #expect(pipeline.window == 60)
        let error = await #expect(throws: SluiceError.self) { try await pipeline.run() }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains("60") == true)
        #expect(error?.message.contains("50") == true)
    }

    @Test func invalidTopologiesAreRejected() async throws {
        let source = InMemorySource()
        let badBatch = Pipeline("bad", source: source) {
            Processors { _ in }
            Batcher(size: 0) { _ in }
        }
        let error = #expect(throws: SluiceError.self) { try badBatch.validate() }
        #expect(error?.message.contains("size") == true)
        let duplicate = Pipeline("dup", source: source) {
            Processors { _ in }
            Batcher("a") { _ in }
            Batcher("a") { _ in }
        }
        #expect(throws: SluiceError.self) { try duplicate.validate() }
        let badDemand = Pipeline("demand", source: source) { Processors(maxDemand: 0) { _ in } }
        let demandError = #expect(throws: SluiceError.self) { try badDemand.validate() }
        #expect(demandError?.message.contains("maxDemand") == true)
    }

    /// A pipeline without `Processors`, or with two, does not compile; `Processors` inside an
    /// `if` can be left out only when the program runs, and that is rejected when it starts.
    @Test(arguments: [false, true])
    func processorsLeftOutByAnIfAreRejectedWhenTheRunStarts(included: Bool) async throws {
        let source = InMemorySource()
        let pipeline = Pipeline("maybe", source: source) {
            if included {
                Processors { _ in }
            }
            Batcher(size: 1) { _ in }
        }
        if included {
            try pipeline.validate()
        } else {
            let error = #expect(throws: SluiceError.self) { try pipeline.validate() }
            #expect(error?.code == .invalidOption)
            #expect(error?.message.contains("exactly one Processors") == true)
            let runError = await #expect(throws: SluiceError.self) { try await pipeline.run() }
            #expect(runError?.code == .invalidOption)
        }
    }
}
