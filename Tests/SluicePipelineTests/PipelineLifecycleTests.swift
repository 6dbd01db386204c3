//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import MetricsTestKit
import ServiceLifecycle
import ServiceLifecycleTestKit
import Sluice
import SluiceTestKit
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A gate a handler can wait on until the test opens it.
/// A gate handlers wait on; a cancelled wait returns at once, so a stuck test fails at its
/// time limit instead of hanging.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, nextID: UInt64, waiters: [UInt64: CheckedContinuation<Void, Never>])>((false, 0, [:]))

    func wait() async {
        let id = self.state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let open = self.state.withLock { state -> Bool in
                    if state.open || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if open { continuation.resume() }
            }
        } onCancel: {
            self.state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    func open() {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Runs `pipeline` (with a 5 s shutdown deadline on `clock`) until `started` opens, triggers a
/// graceful shutdown, passes the deadline, runs `afterDeadline`, and waits for the run to end
/// (then calls `ran`).
private func runPastTheShutdownDeadline<Source: PipelineSource>(
    _ pipeline: Pipeline<Source>,
    clock: ManualClock,
    once started: Gate,
    ran: @escaping @Sendable () -> Void = {},
    afterDeadline: @escaping @Sendable () async throws -> Void = {}
) async throws {
    try await withTimeLimit(.seconds(20)) {
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await pipeline.run()
                    ran()
                }
                await started.wait()
                trigger.triggerGracefulShutdown()
                await clock.waitForSleepers(1)  // the deadline
                clock.advance(by: .seconds(5))
                try await afterDeadline()
                try await group.waitForAll()
            }
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct PipelineLifecycleTests {
    @Test func gracefulShutdownFinishesInFlightWorkFlushesBatchesAndLosesNothing() async throws {
        let source = InMemorySource()
        let started = Gate()
        let release = Gate()
        let handled = Recorder<String>()
        let batched = Recorder<String>()
        let pipeline = Pipeline("drain", source: source) {
            Processors(concurrency: 2, maxDemand: 4) { message in
                started.open()
                await release.wait()
                handled.append(try message.string())
            }
            Batcher(size: 1000, timeout: .seconds(3600)) { batch in
                for message in batch { batched.append(try message.string()) }
            }
        }
        let ids = source.push(payloads(200))
        try await withTimeLimit(.seconds(20)) {
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await pipeline.run() }
                    await started.wait()
                    trigger.triggerGracefulShutdown()
                    // The pipeline drains from a task of its own: release the handlers only once
                    // the source stage ended, or a slow machine lets them finish and ask for
                    // (and get) every message before the drain began.
                    let source = try #require(pipeline.stages.first)
                    _ = await source.waitForTermination()
                    release.open()
                    try await group.waitForAll()
                }
            }
        }
        // Whatever was taken from the source was finished, batched (the partial batch was
        // flushed although its timeout is an hour away) and acknowledged exactly once; the
        // rest is still in the source for the next run.
        let settled = source.settlementCounts
        #expect(settled.values.allSatisfy { $0 == 1 })
        #expect(settled.count == source.emittedCount)
        #expect(settled.count + source.queuedCount == ids.count)
        #expect(settled.count < ids.count, "drain should stop taking new messages")
        #expect(Set(handled.all) == Set(batched.all))
        #expect(handled.count == settled.count)
        #expect(ids.allSatisfy { source.outcome(of: $0) == .acknowledged || source.outcome(of: $0) == nil })
    }

    @Test func afterTheShutdownDeadlineInFlightMessagesStayUnacknowledged() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let started = Gate()
        let pipeline = Pipeline(
            "deadline",
            source: source,
            configuration: PipelineConfiguration(shutdownTimeout: .seconds(5), clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1, maxDemand: 2) { _ in
                started.open()
                // A handler that never finishes on its own (until cancelled).
                try await Task.sleep(for: .seconds(3600))
            }
        }
        source.push(payloads(10))
        try await runPastTheShutdownDeadline(pipeline, clock: clock, once: started)
        #expect(source.emittedCount == 2)
        #expect(source.settlementCounts.isEmpty, "nothing in flight may be acknowledged after the deadline")
    }

    /// A handler that ignores cancellation holds the run past the deadline until it returns
    /// (nothing can end a task from outside), and what it finished then is not acknowledged.
    @Test func aHandlerThatIgnoresCancellationHoldsTheRunAndIsNotAcknowledged() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let started = Gate()
        let release = Recorder<Bool>()
        let order = Recorder<String>()
        let pipeline = Pipeline(
            "stuck",
            source: source,
            configuration: PipelineConfiguration(shutdownTimeout: .seconds(5), clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1, maxDemand: 1) { _ in
                started.open()
                // Deaf to cancellation, like a blocking call (briefly holds a pool thread).
                while release.count == 0 { usleep(1000) }
                order.append("handler returned")
            }
        }
        source.push(payloads(3))
        try await runPastTheShutdownDeadline(pipeline, clock: clock, once: started, ran: { order.append("run returned") }) {
            try await Task.sleep(for: .milliseconds(300))
            #expect(order.all.isEmpty, "run() returned while a handler was still running")
            release.append(true)
        }
        #expect(order.all == ["handler returned", "run returned"])
        #expect(source.emittedCount == 1)
        #expect(source.settlementCounts.isEmpty, "a message finished after the deadline may not be acknowledged")
    }

    @Test func cancellingTheRunIsPromptAndAcknowledgesNothingInFlight() async throws {
        let source = InMemorySource()
        let started = Gate()
        let pipeline = Pipeline("cancel", source: source) {
            Processors(concurrency: 1, maxDemand: 1) { _ in
                started.open()
                try await Task.sleep(for: .seconds(3600))
            }
        }
        source.push(payloads(3))
        let elapsed = try await runAndCancel(pipeline, once: started)
        #expect(elapsed < .seconds(5))
        #expect(source.settlementCounts.isEmpty)
    }

    @Test func cancellingStopsASynchronousHandlersBatchBeforeItsNextMessage() async throws {
        let source = InMemorySource()
        let started = Gate()
        let handled = Recorder<String>()
        let pipeline = Pipeline("cancel-sync", source: source) {
            Processors(concurrency: 1, maxDemand: 10) { message in
                handled.append(try message.string())
                started.open()
                // Holds the first message until the cancellation reached this stage's task (a
                // synchronous handler cannot be interrupted), at most 10 s.
                let deadline = ContinuousClock.now + .seconds(10)
                while !Task.isCancelled, ContinuousClock.now < deadline {}
            }
        }
        source.push(payloads(5))
        _ = try await runAndCancel(pipeline, once: started)
        // The batch of five arrived together. The handler stopped holding m0 as soon as the task
        // was marked cancelled, which the runtime does just before it runs the processor's
        // cancellation handler, so at most one more message may start in between; the rest of
        // the batch is left, and nothing is acknowledged.
        #expect(handled.all.first == "m0")
        #expect(handled.count <= 2)
        #expect(source.settlementCounts.isEmpty)
    }

    /// Runs `pipeline`, cancels the run once `gate` opened, and returns how long the run took.
    private func runAndCancel<Source: PipelineSource>(_ pipeline: Pipeline<Source>, once gate: Gate) async throws -> Duration {
        try await ContinuousClock().measure {
            try await withTimeLimit(.seconds(20)) {
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await pipeline.run() }
                    await gate.wait()
                    group.cancelAll()
                    try? await group.waitForAll()
                }
            }
        }
    }

    @Test func aPartialBatchLeavesWhenItsTimeoutPasses() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let batches = Recorder<Int>()
        let pipeline = Pipeline(
            "timeout",
            source: source,
            configuration: PipelineConfiguration(clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1) { _ in }
            Batcher(size: 10, timeout: .milliseconds(200)) { batch in batches.append(batch.count) }
        }
        try await withRunningPipeline(pipeline) {
            let ids = source.push(payloads(3))
            await clock.waitForSleepers(1)
            clock.advance(by: .milliseconds(199))
            #expect(source.outcome(of: ids[0]) == nil)
            clock.advance(by: .milliseconds(1))
            for id in ids { #expect(await source.waitForOutcome(of: id) == .acknowledged) }
            #expect(batches.all == [3])
        }
    }

    @Test func batchKeysKeepSeparateBatches() async throws {
        let source = InMemorySource()
        let batches = Recorder<[String]>()
        let pipeline = Pipeline("keys", source: source) {
            Processors(concurrency: 1) { message in message.batchKey = String(try message.string().prefix(1)) }
            Batcher(size: 2, timeout: .seconds(3600)) { batch in batches.append(try batch.map { try $0.string() }) }
        }
        source.push(["a1", "b1", "a2", "b2"].map { Array($0.utf8) })
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        #expect(Set(batches.all) == [["a1", "a2"], ["b1", "b2"]])
    }

    @Test func theRateLimitWithholdsDemandAndCanChangeAtRuntime() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let handled = Recorder<String>()
        let pipeline = Pipeline(
            "rate",
            source: source,
            configuration: PipelineConfiguration(rateLimit: RateLimit(messages: 5, per: .seconds(1)), clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1, maxDemand: 10) { message in handled.append(try message.string()) }
        }
        try await withRunningPipeline(pipeline) {
            let ids = source.push(payloads(30))
            // Only 5 tokens in the first second: the processor asks for no more, so the rest
            // stays in the source.
            _ = await source.waitForOutcome(of: ids[4])
            await clock.waitForSleepers(1)
            #expect(handled.count == 5)
            #expect(source.emittedCount == 5)
            clock.advance(by: .seconds(1))
            _ = await source.waitForOutcome(of: ids[9])
            await clock.waitForSleepers(1)
            #expect(handled.count == 10)
            // Lifting the limit releases everything at once.
            try pipeline.setRateLimit(nil)
            for id in ids { _ = await source.waitForOutcome(of: id) }
            #expect(handled.count == 30)
        }
        #expect(throws: SluiceError.self) { try pipeline.setRateLimit(RateLimit(messages: 0, per: .seconds(1))) }
    }

    /// Batch timeouts and rate-limit refills are timers of the run: none outlives it (a
    /// refill used to sleep in a task of its own until it was due, after the run ended).
    @Test func noTimerOutlivesTheRun() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let pipeline = Pipeline(
            "timers",
            source: source,
            configuration: PipelineConfiguration(rateLimit: RateLimit(messages: 2, per: .seconds(3600)), clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1, maxDemand: 10) { _ in }
            Batcher(size: 100, timeout: .seconds(3600)) { _ in }
        }
        try await withRunningPipeline(pipeline) {
            source.push(payloads(5))
            // The limiter lets 2 through; its refill and the partial batch's timeout wait on
            // the clock (one sleeper: the run's timer loop sleeps until the earliest).
            while source.emittedCount < 2 { try await Task.sleep(for: .milliseconds(1)) }
            await clock.waitForSleepers(1)
            #expect(source.emittedCount == 2)
        }
        // The drain flushed the partial batch; nothing sleeps on the clock any more.
        #expect(clock.sleeperCount == 0)
        #expect(pipeline.statistics.acknowledged == 2)
    }

    @Test func countersAndMetricsFollowEveryMessage() async throws {
        let metrics = TestMetrics()
        let source = InMemorySource()
        let pipeline = Pipeline(
            "metrics",
            source: source,
            configuration: PipelineConfiguration(failurePolicy: .drop, metricsFactory: metrics)
        ) {
            Processors(concurrency: 2) { message in
                if try message.string().hasSuffix("7") { throw Boom() }
            }
            Batcher(size: 10, timeout: .milliseconds(10)) { _ in }
        }
        source.push(payloads(100))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        let dimensions = [("pipeline", "metrics")]
        #expect(try metrics.expectCounter(SluiceMetricLabel.received, dimensions).totalValue == 100)
        #expect(try metrics.expectCounter(SluiceMetricLabel.acknowledged, dimensions).totalValue == 90)
        #expect(try metrics.expectCounter(SluiceMetricLabel.failed, dimensions).totalValue == 10)
        #expect(try metrics.expectGauge(SluiceMetricLabel.inFlight, dimensions).lastValue == 0)
        let sizes = metrics.recorders(label: SluiceMetricLabel.batchSize).flatMap(\.values)
        #expect(sizes.reduce(0, +) == 90)
    }

    @Test func aPipelineRunsInAServiceGroup() async throws {
        let source = InMemorySource()
        let pipeline = Pipeline("service", source: source) { Processors(concurrency: 1) { _ in } }
        let group = ServiceGroup(services: [pipeline], logger: Logger(label: "test"))
        try await withTimeLimit(.seconds(20)) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                #expect(await source.testMessage("hello") == .acknowledged)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }
}
