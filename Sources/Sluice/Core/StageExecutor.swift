//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a stage's task runs.
///
/// ```swift
/// // Inside a NIO or Hummingbird server that should keep the machine to itself:
/// let options = StageOptions<Int>(executor: .global)
/// ```
public struct StageExecutorPreference: Sendable {
    /// The task executor the stage prefers; `nil` is the global concurrent executor.
    @usableFromInline
    let taskExecutor: (any TaskExecutor)?

    private init(taskExecutor: (any TaskExecutor)?) {
        self.taskExecutor = taskExecutor
    }

    /// ``StageExecutor/shared``: workers that poll briefly for the next hand-off (the default).
    public static var sluice: Self { Self(taskExecutor: StageExecutor.shared) }

    /// The global concurrent executor (Swift's cooperative pool): no threads of Sluice's own.
    public static var global: Self { Self(taskExecutor: nil) }

    /// A task executor of your own, such as a ``StageExecutor`` made for one pipeline.
    public static func custom(_ executor: any TaskExecutor) -> Self {
        Self(taskExecutor: executor)
    }
}

/// A small pool of threads that runs stage tasks.
///
/// Stages exchange many short messages; on the default global executor each hand-off to a
/// parked thread costs a kernel wake-up of several microseconds. The workers of this executor
/// poll their queue briefly before parking, so a busy pipeline passes batches between stages
/// without waking any thread. Polling gives way on a busy machine: a worker polls long only
/// while another worker runs a job (which may hand it work), yields its processor between
/// polls (so a thread that waits for one, such as the stage that will hand it the next batch,
/// runs first), and its polling budget shrinks each time polling ends empty or the worker
/// finds it was preempted, and grows back when polling finds work.
///
/// Stages run on ``StageExecutor/shared`` by default; choose ``StageExecutorPreference/global``
/// in ``StageOptions/executor`` to keep them on the cooperative pool. Blocking code must not
/// run here, exactly as on the cooperative pool.
public final class StageExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the pthread mutex and condition are only touched through their pointers,
    // under the documented pthread rules; everything else is behind `Mutex` or atomics.

    /// The executor stages use unless told otherwise: one worker per active processor.
    public static let shared = try! StageExecutor(threads: min(StageExecutor.defaultThreadCount, StageExecutor.maximumThreadCount))

    /// The number of active processors: the default worker count and processor concurrency.
    public static let defaultThreadCount = StageExecutor.activeProcessorCount()

    /// The most workers one executor may have.
    public static let maximumThreadCount = 256

    /// The longest ``spinDuration`` an executor accepts.
    public static let maximumSpinDuration = Duration.milliseconds(1)

    private struct Queue: ~Copyable {
        var jobs = Deque<UnownedJob>()
        var stopped = false
        var liveWorkers = 0
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let queue = Mutex(Queue())
    private let queued = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Workers executing a job now: only a running job can hand an idle worker its next one
    /// soon, so only then is polling long worth a processor.
    private let running = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let parkMutex: UnsafeMutablePointer<pthread_mutex_t>
    private let parkCondition: UnsafeMutablePointer<pthread_cond_t>

    /// How long an idle worker polls at most before parking.
    public let spinDuration: Duration

    /// The number of workers.
    public let threadCount: Int

    /// Creates an executor with `threads` workers that poll up to `spinDuration` for work.
    ///
    /// The workers run until ``shutdown()``.
    ///
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code-swift.struct/invalidOption`` if
    ///   `threads` is outside 1...``maximumThreadCount`` or `spinDuration` outside
    ///   0...``maximumSpinDuration``.
    public init(threads: Int, spinDuration: Duration = .microseconds(50)) throws(SluiceError) {
        guard (1...Self.maximumThreadCount).contains(threads) else {
            throw .invalidOption("StageExecutor.threads", threads, "must be 1...\(Self.maximumThreadCount)")
        }
        guard spinDuration >= .zero, spinDuration <= Self.maximumSpinDuration else {
            throw .invalidOption("StageExecutor.spinDuration", spinDuration, "must be 0...\(Self.maximumSpinDuration)")
        }
        self.spinDuration = spinDuration
        self.threadCount = threads
        self.parkMutex = .allocate(capacity: 1)
        self.parkCondition = .allocate(capacity: 1)
        pthread_mutex_init(self.parkMutex, nil)
        pthread_cond_init(self.parkCondition, nil)
        self.queue.withLock { $0.liveWorkers = threads }
        for _ in 0..<threads {
            self.startWorker()
        }
    }

    deinit {
        // Reached only after shutdown: every worker holds the executor until it exits.
        pthread_cond_destroy(self.parkCondition)
        pthread_mutex_destroy(self.parkMutex)
        self.parkCondition.deallocate()
        self.parkMutex.deallocate()
    }

    /// Queues a job; an idle worker picks it up (a parked one is woken).
    ///
    /// After ``shutdown()`` jobs go to the global concurrent executor, so tasks that still
    /// prefer this executor finish there.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let accepted = self.queue.withLock { queue -> Bool in
            if queue.stopped { return false }
            queue.jobs.append(unowned)
            return true
        }
        guard accepted else {
            globalConcurrentExecutor.enqueue(ExecutorJob(unowned))
            return
        }
        self.queued.add(1, ordering: .sequentiallyConsistent)
        if self.sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(self.parkMutex)
            pthread_cond_signal(self.parkCondition)
            pthread_mutex_unlock(self.parkMutex)
        }
    }

    /// Stops the workers once the jobs already queued have run, and returns when every worker
    /// thread has ended. Later jobs run on the global concurrent executor.
    ///
    /// Do not shut down ``shared``: stages started on it later would lose its speed.
    public func shutdown() async {
        let done = self.queue.withLock { queue -> Bool in
            queue.stopped = true
            return queue.liveWorkers == 0
        }
        self.stopping.store(true, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(self.parkMutex)
        pthread_cond_broadcast(self.parkCondition)
        pthread_mutex_unlock(self.parkMutex)
        if done { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = self.queue.withLock { queue -> Bool in
                if queue.liveWorkers == 0 { return true }
                queue.shutdownWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// The worker threads still running (they end after ``shutdown()``).
    public var liveThreadCount: Int {
        self.queue.withLock { $0.liveWorkers }
    }

    private func next() -> UnownedJob? {
        guard self.queued.load(ordering: .relaxed) > 0 else { return nil }
        let job = self.queue.withLock { $0.jobs.popFirst() }
        if job != nil { self.queued.subtract(1, ordering: .relaxed) }
        return job
    }

    /// Whether the worker may end: shut down, and nothing left that was queued before.
    private func mayEnd() -> Bool {
        guard self.stopping.load(ordering: .sequentiallyConsistent) else { return false }
        return self.queue.withLock { $0.jobs.isEmpty }
    }

    private func work() {
        let executor = self.asUnownedTaskExecutor()
        let clock = ContinuousClock()
        var policy = SpinPolicy(longest: self.spinDuration)
        while true {
            if let job = self.next() {
                self.running.add(1, ordering: .relaxed)
                job.runSynchronously(on: executor)
                self.running.subtract(1, ordering: .relaxed)
                continue
            }
            if self.mayEnd() { break }
            let budget = policy.budget(partnerRunning: self.running.load(ordering: .relaxed) > 0)
            let outcome = self.spin(for: budget, clock: clock)
            policy.record(outcome)
            if outcome.foundWork { continue }
            self.park()
        }
        self.workerEnded()
    }

    /// Polls the queue for at most `budget`, yielding the processor between polls: when the
    /// machine is idle the yield returns at once; when it is oversubscribed, the threads that
    /// wait for a processor (perhaps the very stage about to hand this worker a batch) run
    /// first. A gap between two polls much longer than a poll takes means another thread had
    /// this processor.
    private func spin(for budget: Duration, clock: ContinuousClock) -> SpinPolicy.Outcome {
        let start = clock.now
        let deadline = start.advanced(by: budget)
        var last = start
        var preempted = false
        var polls = 0
        while true {
            if self.queued.load(ordering: .relaxed) > 0 {
                return SpinPolicy.Outcome(foundWork: true, preempted: preempted)
            }
            sched_yield()
            polls &+= 1
            if polls & 7 == 0 {
                let now = clock.now
                if now - last > SpinPolicy.preemptionGap { preempted = true }
                if now >= deadline { return SpinPolicy.Outcome(foundWork: false, preempted: preempted) }
                last = now
            }
        }
    }

    /// Parks until a job is queued or the executor shuts down. The sleeper count is raised
    /// before the last check, so an enqueue either sees the sleeper and signals under the
    /// mutex, or this check sees its job.
    private func park() {
        pthread_mutex_lock(self.parkMutex)
        self.sleepers.add(1, ordering: .sequentiallyConsistent)
        while self.queued.load(ordering: .sequentiallyConsistent) == 0
            && !self.stopping.load(ordering: .sequentiallyConsistent)
        {
            pthread_cond_wait(self.parkCondition, self.parkMutex)
        }
        self.sleepers.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(self.parkMutex)
    }

    private func workerEnded() {
        let waiters = self.queue.withLock { queue -> [CheckedContinuation<Void, Never>] in
            queue.liveWorkers -= 1
            guard queue.liveWorkers == 0 else { return [] }
            defer { queue.shutdownWaiters = [] }
            return queue.shutdownWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func startWorker() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(
            &thread,
            nil,
            { argument in
                let executor = Unmanaged<StageExecutor>.fromOpaque(argument!).takeRetainedValue()
                executor.work()
                return nil
            },
            box
        )
        precondition(result == 0, "pthread_create failed: \(result)")
        pthread_detach(thread)
    }

    private static func activeProcessorCount() -> Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// How long an idle ``StageExecutor`` worker polls for its next job: a pure state machine fed
/// with how each poll ended.
///
/// While no other worker runs a job, nothing inside the executor is about to hand this one
/// work, so it polls at most the short `alone` budget before parking. A poll that finds work doubles the budget (up to the longest). A poll that ends empty, or
/// one during which the worker was descheduled (the machine is oversubscribed), halves it
/// (down to the shortest): polling that does not pay stops taking a processor that another
/// thread, inside or outside this process, wants.
struct SpinPolicy: Sendable, Equatable {
    /// How one poll ended.
    struct Outcome: Sendable, Equatable {
        /// A job arrived while polling.
        var foundWork: Bool
        /// The worker was descheduled while polling.
        var preempted: Bool
    }

    /// A gap between two polls longer than this means the poller was descheduled.
    static let preemptionGap = Duration.microseconds(100)

    /// The budget's upper bound: the executor's ``StageExecutor/spinDuration``.
    let longest: Duration
    /// The budget's lower bound (at most `longest`).
    let shortest: Duration
    /// The most a poll lasts while no other worker runs a job (at most `longest`).
    let alone: Duration
    /// How long the next poll may last while another worker runs a job.
    private(set) var budget: Duration

    /// A policy that starts at the longest budget.
    init(longest: Duration, shortest: Duration = .microseconds(2), alone: Duration = .microseconds(5)) {
        self.longest = longest
        self.shortest = min(shortest, longest)
        self.alone = min(alone, longest)
        self.budget = longest
    }

    /// How long the next poll may last, given whether another worker is running a job.
    func budget(partnerRunning: Bool) -> Duration {
        partnerRunning ? self.budget : min(self.budget, self.alone)
    }

    /// Adapts the budget to how the last poll ended.
    mutating func record(_ outcome: Outcome) {
        if outcome.foundWork && !outcome.preempted {
            self.budget = min(self.longest, self.budget * 2)
        } else {
            self.budget = max(self.shortest, self.budget / 2)
        }
    }
}
