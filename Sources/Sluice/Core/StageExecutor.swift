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
/// A stage that hands a consumer a large batch (see ``StageExecutor/localHandOffBytes``) readies
/// the consumer on its own worker: the consumer runs there next, while the batch is still in
/// that processor's cache, instead of on whichever worker is idle. Moving a batch between
/// processors costs more than most per-event work, so a pipeline of cheap stages runs fastest
/// on one processor. An idle worker takes such a job only once it has waited
/// ``SpinPolicy/handOffGrace`` (its worker is busy), so stages with real work still spread
/// over every worker. Small hand-offs (demand, single events) go to the shared queue, where
/// any idle worker takes them at once.
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

    /// The smallest batch, in bytes of its events' inline storage, whose consumer runs next on
    /// the worker that delivered it (below it, moving the batch costs less than waiting).
    public static let localHandOffBytes = 2048

    private struct Queue: ~Copyable {
        var jobs = Deque<UnownedJob>()
        var stopped = false
        var liveWorkers = 0
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// One worker's own queue: jobs readied by the jobs it ran, with when each was readied.
    private final class Worker: @unchecked Sendable {
        // @unchecked: `keepsHandOff` is read and written only on the worker's own thread.
        struct Local: ~Copyable {
            var jobs = Deque<UnownedJob>()
            var readied = Deque<ContinuousClock.Instant>()
        }

        let local = Mutex(Local())
        /// The ``StageExecutor/identity`` of the executor this worker belongs to.
        let owner: Int
        /// Set while this worker's job delivers a large batch: the consumer it readies stays.
        var keepsHandOff = false
        /// Whether this worker executes a job now. Written only by the worker itself, twice per
        /// job: a counter shared by all workers moved its cache line between processors on
        /// every job.
        let running = Atomic<Bool>(false)
        /// Keeps the next worker's `running` off this one's cache line.
        private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

        init(owner: Int) {
            self.owner = owner
        }
    }

    /// The ``Worker`` a thread runs as, if it is one.
    private static let workerKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// Tells this executor's workers from other executors' (a thread-local names the worker).
    private let identity: Int
    private static let identities = Atomic<Int>(0)

    private let queue = Mutex(Queue())
    private let queued = Atomic<Int>(0)
    private let workers: [Worker]
    /// Jobs in the workers' own queues.
    private let kept = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// A parked worker was signalled and has not woken yet: further enqueues need not signal.
    /// Cleared under the park mutex by every worker that parks or wakes.
    private let wakePending = Atomic<Bool>(false)
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
        let identity = Self.identities.wrappingAdd(1, ordering: .relaxed).oldValue
        self.identity = identity
        self.workers = (0..<threads).map { _ in Worker(owner: identity) }
        self.queue.withLock { $0.liveWorkers = threads }
        for worker in self.workers {
            self.startWorker(worker)
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
    /// A job readied while a worker's job delivers a large batch goes to that worker's own
    /// queue instead. After ``shutdown()`` jobs go to the global concurrent executor, so tasks
    /// that still prefer this executor finish there.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if let worker = Self.currentWorker, worker.keepsHandOff, worker.owner == self.identity,
            !self.stopping.load(ordering: .relaxed)
        {
            let now = ContinuousClock.now
            worker.local.withLock { local in
                local.jobs.append(unowned)
                local.readied.append(now)
            }
            self.kept.add(1, ordering: .sequentiallyConsistent)
            self.wakeSleeper()
            return
        }
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
        self.wakeSleeper()
    }

    /// Runs `deliver`, which hands a consumer a batch of `bytes` bytes; on a worker of any
    /// ``StageExecutor``, a batch of at least ``localHandOffBytes`` keeps the consumer's task
    /// on this worker (see the type's discussion).
    @usableFromInline
    static func handingOffLarge(_ deliver: () -> Void) {
        guard let worker = Self.currentWorker else { return deliver() }
        worker.keepsHandOff = true
        deliver()
        worker.keepsHandOff = false
    }

    private static var currentWorker: Worker? {
        guard let raw = pthread_getspecific(Self.workerKey) else { return nil }
        return Unmanaged<Worker>.fromOpaque(raw).takeUnretainedValue()
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

    /// Wakes one parked worker, unless one was woken already and has not run yet.
    ///
    /// Waking costs a system call on the enqueuing thread. Until the woken worker runs, every
    /// further enqueue would signal again; on a busy machine, where the woken worker waits for a
    /// processor, that turned each hand-off between stages into a system call (tens of
    /// thousands per second at `maxDemand` 1). Jobs queued beyond the first still wake a worker
    /// each, and a worker that wakes passes the wake on when it takes a job and more are queued.
    private func wakeSleeper() {
        guard self.sleepers.load(ordering: .sequentiallyConsistent) > 0 else { return }
        // A second job queued behind the one the pending wake is for wakes another worker.
        guard self.wakePending.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
            || self.queued.load(ordering: .sequentiallyConsistent) > 1
        else { return }
        pthread_mutex_lock(self.parkMutex)
        pthread_cond_signal(self.parkCondition)
        pthread_mutex_unlock(self.parkMutex)
    }

    private func next() -> UnownedJob? {
        guard self.queued.load(ordering: .relaxed) > 0 else { return nil }
        let job = self.queue.withLock { $0.jobs.popFirst() }
        if job != nil { self.queued.subtract(1, ordering: .relaxed) }
        return job
    }

    /// The oldest job in `worker`'s own queue, if it has one readied before `cutoff` (`nil`:
    /// any).
    private func takeKept(from worker: Worker, readiedBefore cutoff: ContinuousClock.Instant? = nil) -> UnownedJob? {
        guard self.kept.load(ordering: .relaxed) > 0 else { return nil }
        let job = worker.local.withLock { local -> UnownedJob? in
            guard let readied = local.readied.first else { return nil }
            if let cutoff, readied > cutoff { return nil }
            local.readied.removeFirst()
            return local.jobs.removeFirst()
        }
        if job != nil { self.kept.subtract(1, ordering: .relaxed) }
        return job
    }

    /// A job that another worker kept for longer than ``SpinPolicy/handOffGrace``: that worker
    /// is busy, so the job is better run here than later there.
    private func steal(for me: Worker, clock: ContinuousClock) -> UnownedJob? {
        guard self.kept.load(ordering: .relaxed) > 0 else { return nil }
        let cutoff = clock.now.advanced(by: .zero - SpinPolicy.handOffGrace)
        for other in self.workers where other !== me {
            if let job = self.takeKept(from: other, readiedBefore: cutoff) { return job }
        }
        return nil
    }

    /// Whether the worker may end: shut down, and nothing left that was queued before.
    private func mayEnd(_ me: Worker) -> Bool {
        guard self.stopping.load(ordering: .sequentiallyConsistent) else { return false }
        return self.queue.withLock { $0.jobs.isEmpty } && me.local.withLock { $0.jobs.isEmpty }
    }

    private func work(as me: Worker) {
        pthread_setspecific(Self.workerKey, Unmanaged.passUnretained(me).toOpaque())
        defer { pthread_setspecific(Self.workerKey, nil) }
        let executor = self.asUnownedTaskExecutor()
        let clock = ContinuousClock()
        var policy = SpinPolicy(longest: self.spinDuration)
        var keptInARow = 0
        while true {
            // Its own jobs first (their batches are in this processor's cache), but not
            // forever: every so often the shared queue goes first, so stages handing each other
            // large batches cannot keep this worker from everything else.
            let job: UnownedJob?
            if keptInARow < SpinPolicy.keptRun, let own = self.takeKept(from: me) {
                keptInARow += 1
                job = own
            } else {
                keptInARow = 0
                job = self.next() ?? self.takeKept(from: me) ?? self.steal(for: me, clock: clock)
            }
            // More work waits than this worker takes: pass on the one wake that enqueuing gave.
            if job != nil, self.queued.load(ordering: .relaxed) > 0 { self.wakeSleeper() }
            if let job {
                self.run(job, on: executor, as: me)
                continue
            }
            if self.mayEnd(me) { break }
            // Only a running job can hand an idle worker its next one soon, so only then is
            // polling long worth a processor.
            let partnerRunning = self.workers.contains { $0 !== me && $0.running.load(ordering: .relaxed) }
            let budget = policy.budget(partnerRunning: partnerRunning)
            let (outcome, stolen) = self.spin(for: budget, clock: clock, me: me)
            policy.record(outcome)
            if let stolen {
                self.run(stolen, on: executor, as: me)
                continue
            }
            if outcome.foundWork { continue }
            self.park()
        }
        self.workerEnded()
    }

    private func run(_ job: UnownedJob, on executor: UnownedTaskExecutor, as me: Worker) {
        me.running.store(true, ordering: .relaxed)
        job.runSynchronously(on: executor)
        me.running.store(false, ordering: .relaxed)
    }

    /// Polls the queue for at most `budget`, yielding the processor between polls: when the
    /// machine is idle the yield returns at once; when it is oversubscribed, the threads that
    /// wait for a processor (perhaps the very stage about to hand this worker a batch) run
    /// first. A gap between two polls much longer than a poll takes means another thread had
    /// this processor. A job another worker kept past the grace is taken while polling.
    private func spin(for budget: Duration, clock: ContinuousClock, me: Worker) -> (SpinPolicy.Outcome, UnownedJob?) {
        let start = clock.now
        let deadline = start.advanced(by: budget)
        var last = start
        var preempted = false
        var polls = 0
        while true {
            if self.queued.load(ordering: .relaxed) > 0 {
                return (SpinPolicy.Outcome(foundWork: true, preempted: preempted), nil)
            }
            if let stolen = self.steal(for: me, clock: clock) {
                return (SpinPolicy.Outcome(foundWork: true, preempted: preempted), stolen)
            }
            sched_yield()
            polls &+= 1
            if polls & 7 == 0 {
                let now = clock.now
                if now - last > SpinPolicy.preemptionGap { preempted = true }
                if now >= deadline { return (SpinPolicy.Outcome(foundWork: false, preempted: preempted), nil) }
                last = now
            }
        }
    }

    /// Parks until a job is queued (in the shared queue or kept by a worker) or the executor
    /// shuts down. The sleeper count is raised before the last check, so an enqueue either sees
    /// the sleeper and signals under the mutex, or this check sees its job.
    private func park() {
        pthread_mutex_lock(self.parkMutex)
        self.sleepers.add(1, ordering: .sequentiallyConsistent)
        // Any signal sent before this point has been consumed or is about to find the job it
        // announced in the check below: from here on, an enqueue must signal again.
        self.wakePending.store(false, ordering: .sequentiallyConsistent)
        while self.queued.load(ordering: .sequentiallyConsistent) == 0
            && self.kept.load(ordering: .sequentiallyConsistent) == 0
            && !self.stopping.load(ordering: .sequentiallyConsistent)
        {
            pthread_cond_wait(self.parkCondition, self.parkMutex)
            self.wakePending.store(false, ordering: .sequentiallyConsistent)
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

    private func startWorker(_ worker: Worker) {
        let box = Unmanaged.passRetained(WorkerStart(executor: self, worker: worker)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(
            &thread,
            nil,
            { argument in
                let start = Unmanaged<WorkerStart>.fromOpaque(argument!).takeRetainedValue()
                start.executor.work(as: start.worker)
                return nil
            },
            box
        )
        precondition(result == 0, "pthread_create failed: \(result)")
        pthread_detach(thread)
    }

    /// What a worker thread starts with; it holds the executor until the thread ends.
    private final class WorkerStart {
        let executor: StageExecutor
        let worker: Worker

        init(executor: StageExecutor, worker: Worker) {
            self.executor = executor
            self.worker = worker
        }
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

    /// How long a job a worker kept for itself waits before an idle worker may take it.
    static let handOffGrace = Duration.microseconds(20)

    /// How many of its own kept jobs in a row a worker runs before looking at the shared queue.
    static let keptRun = 32

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
