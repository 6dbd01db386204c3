//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization
import Testing

@testable import Sluice

/// Where stages run: the Sluice executor, the global executor, a custom executor, and how a
/// custom ``StageExecutor`` shuts down.
@Suite("Stage executors", .timeLimit(.minutes(1)))
struct ExecutorTests {
    /// Forwards every job to the global executor and counts them.
    final class CountingExecutor: TaskExecutor, Sendable {
        private let jobs = Atomic<Int>(0)
        var count: Int { self.jobs.load(ordering: .sequentiallyConsistent) }

        func enqueue(_ job: consuming ExecutorJob) {
            self.jobs.add(1, ordering: .sequentiallyConsistent)
            globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Runs producer → doubling relay → recording consumer, all on `executor`, over `count`
    /// events, and returns what the consumer received once the producer's normal end reached it.
    func relay(_ count: Int, on executor: StageExecutorPreference) async throws -> [Int] {
        let log = Observed(ConsumerLog())
        let options = SubscriptionOptions<Int>(maxDemand: 10)
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: count)), options: .init(executor: executor))
        let relay = try await StageHandle.start(
            Relay(transform: { $0 * 2 }),
            options: .init(executor: executor),
            subscribeTo: [.init(producer, options: options)]
        )
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            options: .init(executor: executor),
            subscribeTo: [.init(relay, options: options)]
        )
        let reason = try await consumer.ended()
        #expect("\(reason)" == "\(StopReason.normal)")
        _ = try await relay.ended()
        return log.value.events
    }

    @Test("stages on the global executor pass every event in order")
    func globalExecutor() async throws {
        #expect(StageExecutorPreference.global.taskExecutor == nil)
        #expect(try await self.relay(1000, on: .global) == (0..<1000).map { $0 * 2 })
    }

    @Test("stages on the Sluice executor (the default) pass every event in order")
    func sluiceExecutor() async throws {
        #expect(StageOptions<Int>().executor.taskExecutor === StageExecutor.shared)
        #expect(try await self.relay(1000, on: .sluice) == (0..<1000).map { $0 * 2 })
    }

    @Test("stages run on a custom executor when told to")
    func customExecutor() async throws {
        let executor = CountingExecutor()
        #expect(try await self.relay(500, on: .custom(executor)) == (0..<500).map { $0 * 2 })
        // 50 batches of at most 10 through three stages: every hop is a job on this executor.
        #expect(executor.count >= 50)
    }

    @Test("a StageExecutor of one's own runs stages, then shuts down its threads")
    func ownExecutorShutsDown() async throws {
        let executor = try StageExecutor(threads: 2, spinDuration: .microseconds(20))
        #expect(executor.threadCount == 2)
        #expect(executor.liveThreadCount == 2)
        #expect(try await self.relay(1000, on: .custom(executor)) == (0..<1000).map { $0 * 2 })
        try await withTimeout("the executor to shut down") { await executor.shutdown() }
        #expect(executor.liveThreadCount == 0)
        // Shutting down again returns at once.
        try await withTimeout("a second shutdown") { await executor.shutdown() }
    }

    @Test("after shutdown, tasks that prefer the executor still finish (on the global executor)")
    func jobsAfterShutdown() async throws {
        let executor = try StageExecutor(threads: 1, spinDuration: .zero)
        await executor.shutdown()
        #expect(executor.liveThreadCount == 0)
        let answer = try await withTimeout("a task on a shut-down executor") {
            await Task(executorPreference: executor) {
                await Task.yield()
                return 42
            }.value
        }
        #expect(answer == 42)
        #expect(try await self.relay(100, on: .custom(executor)) == (0..<100).map { $0 * 2 })
    }

    @Test("a parked executor shuts down promptly")
    func parkedShutdown() async throws {
        let executor = try StageExecutor(threads: 3, spinDuration: .zero)
        // With no spin budget and no work the workers park at once; shutdown must wake them.
        try await Task.sleep(for: .milliseconds(20))
        try await withTimeout("parked workers to end") { await executor.shutdown() }
        #expect(executor.liveThreadCount == 0)
    }

    /// Counts arrivals; a job waits (on its own worker, which this test owns) until all came.
    final class Arrivals: Sendable {
        private let count = Atomic<Int>(0)

        /// Arrives, then waits up to `limit` for `expected` arrivals; whether they all came.
        func arriveAndWait(for expected: Int, limit: Duration) -> Bool {
            self.count.add(1, ordering: .sequentiallyConsistent)
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: limit)
            while self.count.load(ordering: .sequentiallyConsistent) < expected {
                if clock.now > deadline { return false }
            }
            return true
        }
    }

    @Test("jobs queued while every worker is parked all get a worker, though a pending wake keeps enqueues from signalling again")
    func parkedWorkersWakeEachOther() async throws {
        let workers = 3
        let executor = try StageExecutor(threads: workers, spinDuration: .zero)
        // With no spin budget and no work the workers park at once.
        try await Task.sleep(for: .milliseconds(20))
        let arrivals = Arrivals()
        // Each job holds its worker until every job has started: they finish only if each of
        // them got a worker of its own. Enqueues that find a wake already pending signal again
        // only for a second queued job, and a woken worker wakes the next while jobs still
        // wait (without both, this test fails after its limit).
        let jobs = (0..<workers).map { _ in
            Task(executorPreference: executor) { arrivals.arriveAndWait(for: workers, limit: .seconds(10)) }
        }
        for job in jobs {
            #expect(await job.value, "a job waited for a worker that was never woken")
        }
        try await withTimeout("the executor to shut down") { await executor.shutdown() }
    }

    /// When each batch's handling started and ended.
    struct Handling: Sendable {
        var started: [ContinuousClock.Instant] = []
        var ended: [ContinuousClock.Instant] = []
    }

    /// Emits whatever was asked.
    struct OnesProducer: Producer {
        mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
            context.emit(Array(repeating: 1, count: demand))
        }
    }

    /// Busy for `busy` per batch: a stage with real work, holding its worker.
    struct BusyConsumer: Consumer {
        typealias Input = Int
        let handling: Observed<Handling>
        let busy: Duration
        mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
            let clock = ContinuousClock()
            let start = clock.now
            while clock.now - start < self.busy {}
            self.handling.update {
                $0.started.append(start)
                $0.ended.append(clock.now)
            }
        }
    }

    @Test("a job its worker kept is taken by an idle worker while that worker is busy")
    func keptJobIsStolenFromABusyWorker() async throws {
        let executor = try StageExecutor(threads: 2)
        let handling = Observed(Handling())
        let options = SubscriptionOptions<Int>(maxDemand: 1000, minDemand: 0)
        try #require(1000 * MemoryLayout<Int>.stride >= StageExecutor.localHandOffBytes)
        let producer = try await StageHandle.start(
            OnesProducer(),
            options: .init(demandMode: .accumulate, executor: .custom(executor))
        )
        // Two consumers, each busy 300 ms per batch: one dispatch hands both a large batch, so
        // both are kept by the producer's worker, which then runs one of them for 300 ms.
        var consumers: [StageHandle<BusyConsumer>] = []
        for _ in 0..<2 {
            consumers.append(
                try await StageHandle.start(
                    BusyConsumer(handling: handling, busy: .milliseconds(300)),
                    options: .init(executor: .custom(executor)),
                    subscribeTo: [.init(producer, options: options)]
                )
            )
        }
        producer.setDemandMode(.forward)
        // A batch is recorded when its handling ends: the first two recorded are the first
        // batches of both consumers if they ran side by side, or two in a row otherwise.
        let value = try await handling.wait("two batches to be handled") { $0.started.count >= 2 }
        for consumer in consumers { await consumer.stop() }
        await producer.stop()
        await executor.shutdown()
        // The second consumer started while the first was still busy: it did not wait for the
        // worker that kept it.
        let batches = zip(value.started, value.ended).prefix(2).sorted { $0.0 < $1.0 }
        let first = batches[0]
        let second = batches[1].0
        #expect(second < first.1, "the second batch waited for the first (started \(second - first.0) after it)")
    }

    @Test(
        "executor options outside their range are rejected with a typed error",
        arguments: [(0, 50), (StageExecutor.maximumThreadCount + 1, 50), (1, -1), (1, 1001)]
    )
    func invalidOptions(threads: Int, spinMicroseconds: Int) {
        #expect {
            _ = try StageExecutor(threads: threads, spinDuration: .microseconds(spinMicroseconds))
        } throws: { error in
            (error as? SluiceError)?.code == .invalidOption
        }
    }
}

/// The spin budget of an idle worker as pure logic.
@Suite("Spin policy")
struct SpinPolicyTests {
    static let found = SpinPolicy.Outcome(foundWork: true, preempted: false)
    static let empty = SpinPolicy.Outcome(foundWork: false, preempted: false)

    /// Records `outcome` `times` times and returns the budget after each.
    static func budgets(_ policy: inout SpinPolicy, after outcome: SpinPolicy.Outcome, times: Int) -> [Duration] {
        (0..<times).map { _ in
            policy.record(outcome)
            return policy.budget
        }
    }

    @Test("starts at the longest budget; empty polls halve it down to the shortest")
    func shrinks() {
        var policy = SpinPolicy(longest: .microseconds(64), shortest: .microseconds(4))
        #expect(policy.budget == .microseconds(64))
        #expect(Self.budgets(&policy, after: Self.empty, times: 6) == [32, 16, 8, 4, 4, 4].map { .microseconds($0) })
    }

    @Test("polls that find work double it back up to the longest")
    func grows() {
        var policy = SpinPolicy(longest: .microseconds(64), shortest: .microseconds(4))
        _ = Self.budgets(&policy, after: Self.empty, times: 10)
        #expect(Self.budgets(&policy, after: Self.found, times: 6) == [8, 16, 32, 64, 64, 64].map { .microseconds($0) })
    }

    @Test("a poll that was preempted halves the budget even if it found work")
    func preemption() {
        var policy = SpinPolicy(longest: .microseconds(64), shortest: .microseconds(4))
        policy.record(SpinPolicy.Outcome(foundWork: true, preempted: true))
        #expect(policy.budget == .microseconds(32))
        policy.record(SpinPolicy.Outcome(foundWork: false, preempted: true))
        #expect(policy.budget == .microseconds(16))
    }

    @Test("without another worker running a job, a poll lasts at most the alone budget")
    func alone() {
        var policy = SpinPolicy(longest: .microseconds(64), shortest: .microseconds(2), alone: .microseconds(5))
        #expect(policy.budget(partnerRunning: true) == .microseconds(64))
        #expect(policy.budget(partnerRunning: false) == .microseconds(5))
        _ = Self.budgets(&policy, after: Self.empty, times: 5)
        #expect(policy.budget(partnerRunning: true) == .microseconds(2))
        #expect(policy.budget(partnerRunning: false) == .microseconds(2))
        #expect(SpinPolicy(longest: .microseconds(3)).alone == .microseconds(3))
    }

    @Test("the shortest budget never exceeds the longest; a zero budget stays zero")
    func bounds() {
        var zero = SpinPolicy(longest: .zero)
        #expect(zero.shortest == .zero)
        zero.record(Self.found)
        #expect(zero.budget == .zero)
        zero.record(Self.empty)
        #expect(zero.budget == .zero)
        let short = SpinPolicy(longest: .microseconds(1), shortest: .microseconds(2))
        #expect(short.shortest == .microseconds(1))
    }
}
