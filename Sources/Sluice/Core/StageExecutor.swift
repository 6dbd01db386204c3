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

/// A small pool of threads that runs stage tasks.
///
/// Stages exchange many short messages; on the default global executor each hand-off to a
/// parked thread costs a kernel wake-up of several microseconds. The workers of this executor
/// poll their queue briefly before parking, so a busy pipeline passes batches between stages
/// without waking any thread. Idle workers park after about ``spinDuration`` and cost nothing.
///
/// Stages run here by default (``StageExecutor/shared``, one worker per core). Blocking code
/// must not run on it, exactly as on the cooperative pool.
public final class StageExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the pthread mutex and condition are only touched through their pointers,
    // under the documented pthread rules; everything else is behind `Mutex` or atomics.

    /// The executor stages use unless told otherwise: one worker per active processor.
    public static let shared = StageExecutor(threads: StageExecutor.defaultThreadCount)

    /// The number of active processors: the default worker count and processor concurrency.
    public static let defaultThreadCount = StageExecutor.activeProcessorCount()

    private let jobs = Mutex<Deque<UnownedJob>>([])
    private let queued = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let parkMutex: UnsafeMutablePointer<pthread_mutex_t>
    private let parkCondition: UnsafeMutablePointer<pthread_cond_t>
    /// How long an idle worker polls before parking.
    public let spinDuration: Duration

    /// Creates an executor with `threads` workers (at least 1).
    public init(threads: Int, spinDuration: Duration = .microseconds(50)) {
        self.spinDuration = spinDuration
        self.parkMutex = .allocate(capacity: 1)
        self.parkCondition = .allocate(capacity: 1)
        pthread_mutex_init(self.parkMutex, nil)
        pthread_cond_init(self.parkCondition, nil)
        for index in 0..<max(1, threads) {
            self.startWorker(index)
        }
    }

    // Workers hold the executor for the life of the process; it is never deinitialized.

    /// Queues a job; an idle worker picks it up (a parked one is woken).
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        self.jobs.withLock { $0.append(unowned) }
        self.queued.add(1, ordering: .sequentiallyConsistent)
        if self.sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(self.parkMutex)
            pthread_cond_signal(self.parkCondition)
            pthread_mutex_unlock(self.parkMutex)
        }
    }

    private func next() -> UnownedJob? {
        guard self.queued.load(ordering: .relaxed) > 0 else { return nil }
        let job = self.jobs.withLock { $0.popFirst() }
        if job != nil { self.queued.subtract(1, ordering: .relaxed) }
        return job
    }

    private func work() {
        let executor = self.asUnownedTaskExecutor()
        let clock = ContinuousClock()
        while true {
            if let job = self.next() {
                job.runSynchronously(on: executor)
                continue
            }
            // Poll for a while: the next job usually arrives within microseconds.
            let deadline = clock.now.advanced(by: self.spinDuration)
            var found = false
            var polls = 0
            while !found {
                if self.queued.load(ordering: .relaxed) > 0 {
                    found = true
                    break
                }
                polls += 1
                if polls & 1023 == 0 && clock.now >= deadline { break }
            }
            if found { continue }
            // Park. The sleeper count is raised before the last check, so an enqueue either
            // sees the sleeper and signals under the mutex, or this check sees its job.
            pthread_mutex_lock(self.parkMutex)
            self.sleepers.add(1, ordering: .sequentiallyConsistent)
            while self.queued.load(ordering: .sequentiallyConsistent) == 0 {
                pthread_cond_wait(self.parkCondition, self.parkMutex)
            }
            self.sleepers.subtract(1, ordering: .sequentiallyConsistent)
            pthread_mutex_unlock(self.parkMutex)
        }
    }

    private func startWorker(_ index: Int) {
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
