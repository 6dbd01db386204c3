//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Foundation
import Logging
import Synchronization

/// One Redis connection and the thread that makes every call on it.
///
/// Blocking hiredis calls never run on Swift's cooperative pool: jobs are queued here and run
/// one after the other on this connection's own thread; async callers wait on a continuation
/// (``run(_:)``). Periodic jobs (liveness refresh, reaper) run between queued jobs.
///
/// `@unchecked Sendable`: every mutable property is read and written only while `condition`
/// is locked, and the ``RedisLink`` is only touched by the thread.
final class RedisThread: @unchecked Sendable {
    typealias Job = @Sendable (RedisLink) -> Void

    private struct Periodic {
        var interval: Duration
        var due: ContinuousClock.Instant
        var job: Job
    }

    private let condition = NSCondition()
    private var jobs: Deque<Job> = []
    private var periodic: [Periodic] = []
    private var stopping = false
    private var finished = false
    private var wakeups = 0
    private var finishWaiters: [CheckedContinuation<Void, Never>] = []

    /// Starts the thread; it connects on first use.
    ///
    /// - Parameters:
    ///   - blocking: Whether blocking commands are sent (their wait lengthens the read timeout).
    ///   - replyArena: Whether replies are built in a ``ReplyArena`` (large replies).
    init(name: String, configuration: RedisConfiguration, blocking: Bool, replyArena: Bool = false, logger: Logger) {
        let readTimeout = configuration.commandTimeout + (blocking ? configuration.blockTimeout : .zero)
        let thread = Thread { [self] in
            let link = RedisLink(configuration: configuration, readTimeout: readTimeout, replyArena: replyArena, thread: self, logger: logger)
            self.loop(link)
            link.close()
            let waiters = self.locked { () -> [CheckedContinuation<Void, Never>] in
                self.finished = true
                defer { self.finishWaiters = [] }
                return self.finishWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
        thread.name = name
        thread.start()
    }

    private func locked<R>(_ body: () -> R) -> R {
        self.condition.lock()
        defer { self.condition.unlock() }
        return body()
    }

    /// Queues `job`. Returns `false` (and drops it) once the thread is stopping.
    @discardableResult
    func enqueue(_ job: @escaping Job) -> Bool {
        self.locked {
            guard !self.stopping else { return false }
            self.jobs.append(job)
            self.condition.signal()
            return true
        }
    }

    /// Runs `job` every `interval`, first after one interval.
    func every(_ interval: Duration, _ job: @escaping Job) {
        self.locked {
            self.periodic.append(Periodic(interval: interval, due: .now + interval, job: job))
            self.condition.signal()
        }
    }

    /// Runs `body` on the thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (RedisLink) throws(RedisError) -> T) async throws(RedisError) -> T {
        let result: Result<T, RedisError> = await withCheckedContinuation { continuation in
            let queued = self.enqueue { link in
                do throws(RedisError) {
                    continuation.resume(returning: .success(try body(link)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !queued { continuation.resume(returning: .failure(RedisError(.shutDown, "the Redis connection was shut down"))) }
        }
        return try result.get()
    }

    /// Runs `body` on this thread and blocks the calling thread until it returned. Only for
    /// jobs of another connection's thread (never the cooperative pool); `caller` is that
    /// thread, whose stop ends the wait with `shutDown` (`body` may still run later).
    func runBlocking<T: Sendable>(
        from caller: RedisThread,
        _ body: @escaping @Sendable (RedisLink) throws(RedisError) -> T
    ) throws(RedisError) -> T {
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox<T>()
        let queued = self.enqueue { link in
            do throws(RedisError) {
                let value = try body(link)
                outcome.value.withLock { $0 = .success(value) }
            } catch {
                outcome.value.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        let stopped = RedisError(.shutDown, "the Redis connection was shut down")
        guard queued else { throw stopped }
        while done.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
            if caller.isStopping { throw stopped }
        }
        return try outcome.value.withLock { $0! }.get()
    }

    private final class OutcomeBox<T: Sendable>: Sendable {
        let value = Mutex<Result<T, RedisError>?>(nil)
    }

    /// Wakes a job that is pausing in ``pause(_:)`` (for example to notice a drain).
    func wake() {
        self.locked {
            self.wakeups += 1
            self.condition.broadcast()
        }
    }

    /// Whether ``stop()`` was called.
    var isStopping: Bool { self.locked { self.stopping } }

    /// Called from a job: waits up to `duration` or until ``wake()`` or ``stop()``.
    /// Returns `false` if the thread is stopping.
    @discardableResult
    func pause(_ duration: Duration) -> Bool {
        let deadline = Date(timeIntervalSinceNow: Self.seconds(duration))
        return self.locked {
            let seen = self.wakeups
            while !self.stopping && self.wakeups == seen {
                if !self.condition.wait(until: deadline) { break }
            }
            return !self.stopping
        }
    }

    /// Lets queued jobs finish, then ends the thread and closes the connection.
    func stop() {
        self.locked {
            self.stopping = true
            self.condition.broadcast()
        }
    }

    /// ``stop()`` and wait until the thread ended.
    func stopAndWait() async {
        self.stop()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.locked { () -> Bool in
                if self.finished { return true }
                self.finishWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    private func loop(_ link: RedisLink) {
        while true {
            var job: Job?
            var due: [Job] = []
            self.condition.lock()
            while true {
                if let next = self.jobs.popFirst() {
                    job = next
                    break
                }
                if self.stopping { break }
                let now = ContinuousClock.now
                for index in self.periodic.indices where self.periodic[index].due <= now {
                    due.append(self.periodic[index].job)
                    self.periodic[index].due = now + self.periodic[index].interval
                }
                if !due.isEmpty { break }
                if let next = self.periodic.map(\.due).min() {
                    _ = self.condition.wait(until: Date(timeIntervalSinceNow: Self.seconds(next - now)))
                } else {
                    self.condition.wait()
                }
            }
            self.condition.unlock()
            if let job {
                job(link)
            } else if !due.isEmpty {
                for job in due { job(link) }
            } else {
                return
            }
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// The connection a ``RedisThread`` owns: connects on demand and again after an I/O error.
///
/// Lives on its thread only (not `Sendable`).
final class RedisLink {
    let configuration: RedisConfiguration
    let logger: Logger
    unowned let thread: RedisThread
    private let readTimeout: Duration
    private let replyArena: Bool
    private var context: HiredisContext?
    private var failures = 0
    /// How many times a connection was (re)established.
    private(set) var connections = 0

    init(configuration: RedisConfiguration, readTimeout: Duration, replyArena: Bool, thread: RedisThread, logger: Logger) {
        self.configuration = configuration
        self.readTimeout = readTimeout
        self.replyArena = replyArena
        self.thread = thread
        self.logger = logger
    }

    /// The connected context, connecting first if needed.
    func connected() throws(RedisError) -> HiredisContext {
        if let context = self.context, !context.isBroken { return context }
        self.context = nil
        let context = try HiredisContext.connect(self.configuration, readTimeout: self.readTimeout, replyArena: self.replyArena)
        self.context = context
        self.connections += 1
        if self.failures > 0 {
            self.logger.info("reconnected to Redis", metadata: [RedisLogKey.address: "\(self.configuration.address)"])
        }
        self.failures = 0
        return context
    }

    /// Runs `body` on the connected context; a broken connection is dropped so that the next
    /// call reconnects.
    func perform<T>(_ body: (HiredisContext) throws(RedisError) -> T) throws(RedisError) -> T {
        let context = try self.connected()
        do {
            return try body(context)
        } catch {
            if context.isBroken || error.code == .connectionLost { self.context = nil }
            throw error
        }
    }

    /// After a transient error: log it, drop the connection and wait a jittered, growing
    /// backoff. Returns `false` if the thread is stopping.
    func backOff(after error: RedisError) -> Bool {
        self.context = nil
        self.failures += 1
        var wait = self.configuration.reconnectBackoff
        for _ in 1..<min(self.failures, 30) {
            wait = wait * 2
            if wait >= self.configuration.maximumReconnectBackoff { break }
        }
        wait = min(wait, self.configuration.maximumReconnectBackoff)
        let jittered = wait * Double.random(in: 0.5...1.0)
        if self.failures == 1 || self.failures % 20 == 0 {
            self.logger.info(
                "Redis connection failed; retrying",
                metadata: [
                    RedisLogKey.address: "\(self.configuration.address)",
                    RedisLogKey.error: "\(error)",
                    RedisLogKey.attempt: "\(self.failures)",
                ]
            )
        }
        return self.thread.pause(jittered)
    }

    func close() {
        self.context = nil
    }
}

@available(*, unavailable)
extension RedisLink: Sendable {}

/// Metadata keys of the Redis adapter's log messages.
public enum RedisLogKey {
    /// The Redis address (`host:port` or `unix:path`).
    public static let address = "sluice.redis.address"
    /// The key or stream.
    public static let key = "sluice.redis.key"
    /// The read mode.
    public static let mode = "sluice.redis.mode"
    /// The consumer name.
    public static let consumer = "sluice.redis.consumer"
    /// An error.
    public static let error = "sluice.redis.error"
    /// A retry attempt number.
    public static let attempt = "sluice.redis.attempt"
    /// A count of items.
    public static let count = "sluice.redis.count"
}

extension Duration {
    static func * (lhs: Duration, rhs: Double) -> Duration {
        .nanoseconds(Int64(RedisThread.seconds(lhs) * rhs * 1e9))
    }
}
