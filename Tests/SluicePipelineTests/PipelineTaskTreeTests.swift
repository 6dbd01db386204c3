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

/// A value only tasks in the run's task tree see (a detached task does not inherit it).
enum RunTag {
    @TaskLocal static var value: String?
}

/// A source whose stage fails: when it starts, or at the first demand.
struct CrashingSource: PipelineSource {
    enum When: Sendable { case didStart, demand }

    struct Stage: Producer, Sendable {
        typealias Output = Message<BasicMetadata>
        typealias Info = Control
        let when: When

        mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) async throws {
            if self.when == .didStart { throw Boom(id: 1) }
        }

        mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) async throws {
            throw Boom(id: 2)
        }

        mutating func handleInfo(_ info: Control, context: inout StageContext<Output>) {
            context.stop(.normal)
        }
    }

    enum Control: SourceInfo { case drain }

    struct Acker: Acknowledger {
        func settle(_ settlement: Settlement<BasicMetadata>) {}
    }

    let when: When

    func makeParts(context: SourceContext) async throws -> SourceParts<Stage, Acker> {
        SourceParts(stage: Stage(when: self.when), acknowledger: Acker())
    }
}

@Suite(.timeLimit(.minutes(1))) struct PipelineTaskTreeTests {
    /// Two processors, a batcher and two batch processors: six stages with the source.
    private static let stageCount = 6

    @Test func stagesRunInTheRunsTaskTree() async throws {
        let source = InMemorySource()
        let processorTags = Recorder<String?>()
        let batchTags = Recorder<String?>()
        let pipeline = Pipeline("tree", source: source) {
            Processors(concurrency: 2, maxDemand: 5) { _ in processorTags.append(RunTag.value) }
            Batcher(size: 10, timeout: .milliseconds(50), concurrency: 2) { _ in batchTags.append(RunTag.value) }
        }
        source.push(payloads(40))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) {
            try await RunTag.$value.withValue("run") { try await pipeline.run() }
        }
        #expect(processorTags.count == 40)
        #expect(processorTags.all.allSatisfy { $0 == "run" }, "a processor's task inherits the run's task-local values")
        #expect(!batchTags.all.isEmpty)
        #expect(batchTags.all.allSatisfy { $0 == "run" }, "a batch processor's task inherits the run's task-local values")
    }

    @Test func noStageOutlivesARunThatEnded() async throws {
        let source = InMemorySource()
        let pipeline = Pipeline("tree-end", source: source) {
            Processors(concurrency: 2, maxDemand: 5) { _ in }
            Batcher(size: 10, timeout: .milliseconds(50), concurrency: 2) { _ in }
        }
        source.push(payloads(100))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        let stages = pipeline.stages
        #expect(stages.count == Self.stageCount)
        for stage in stages {
            let reason = try #require(stage.stopReason, "\(stage.name) still runs after run() returned")
            #expect(reason.error == nil, "\(stage.name) ended with \(reason)")
        }
        #expect(source.settledCount == 100)
    }

    @Test func cancellingTheRunEndsEveryStagePromptly() async throws {
        let source = InMemorySource()
        let started = Gate()
        let sawCancellation = Recorder<Bool>()
        let pipeline = Pipeline("tree-cancel", source: source) {
            Processors(concurrency: 2, maxDemand: 1) { _ in
                started.open()
                try? await Task.sleep(for: .seconds(3600))
                sawCancellation.append(Task.isCancelled)
            }
            Batcher(size: 10, timeout: .seconds(60), concurrency: 2) { _ in }
        }
        source.push(payloads(10))
        let run = Task { try await pipeline.run() }
        await started.wait()
        let stages = pipeline.stages
        #expect(stages.count == Self.stageCount)
        #expect(stages.allSatisfy { $0.stopReason == nil }, "every stage runs before the cancellation")
        let elapsed = try await ContinuousClock().measure {
            run.cancel()
            try await withTimeLimit(.seconds(20)) { _ = await run.result }
        }
        #expect(elapsed < .seconds(5))
        for stage in stages {
            #expect(stage.stopReason != nil, "\(stage.name) still runs after the cancelled run returned")
        }
        #expect(sawCancellation.count >= 1)
        #expect(sawCancellation.all.allSatisfy { $0 }, "the handler's task saw the run's cancellation")
        #expect(source.settlementCounts.isEmpty)
    }

    @Test func aStageFailureEndsEveryStageAndIsThrown() async throws {
        let pipeline = Pipeline("tree-crash", source: CrashingSource(when: .demand)) {
            Processors(concurrency: 2, maxDemand: 5) { _ in }
            Batcher(size: 10, timeout: .seconds(60), concurrency: 2) { _ in }
        }
        let error = await #expect(throws: Boom.self) {
            try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        }
        #expect(error == Boom(id: 2))
        let stages = pipeline.stages
        #expect(stages.count == Self.stageCount)
        for stage in stages {
            #expect(stage.stopReason != nil, "\(stage.name) still runs after the failed run returned")
        }
        #expect(stages.first?.stopReason?.error is Boom)
    }

    @Test func aStageThatFailsToStartFailsTheRun() async throws {
        let pipeline = Pipeline("tree-start", source: CrashingSource(when: .didStart)) {
            Processors(concurrency: 2, maxDemand: 5) { _ in }
        }
        let error = await #expect(throws: Boom.self) {
            try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        }
        #expect(error == Boom(id: 1))
        #expect(pipeline.stages.isEmpty, "no stage started, so none is published")
    }
}
