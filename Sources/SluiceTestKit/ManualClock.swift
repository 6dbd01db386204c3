//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// A clock that moves only when told to: for testing batch timeouts, retry backoff and rate
/// limits without waiting.
///
/// ```swift
/// let clock = ManualClock()
/// let configuration = PipelineConfiguration(clock: PipelineClock(clock))
/// …
/// await clock.waitForSleepers(1)
/// clock.advance(by: .milliseconds(200))
/// ```
public final class ManualClock: Clock, Sendable {
    /// A point in manual time.
    public struct Instant: InstantProtocol, Hashable, Sendable {
        /// Time since the clock was created.
        public var offset: Duration

        public func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - self.offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        let id: UInt64
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State: ~Copyable {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        var cancelled: Set<UInt64> = []
        var sleepersWaiters: [(id: UInt64, count: Int, dueWithin: Duration?, continuation: CheckedContinuation<Void, Never>)] = []

        /// How many sleepers wake within `dueWithin` from now (all of them for `nil`).
        func sleeperCount(dueWithin: Duration?) -> Int {
            guard let dueWithin else { return self.sleepers.count }
            let horizon = self.now.advanced(by: dueWithin)
            return self.sleepers.count { $0.deadline <= horizon }
        }
    }

    private let state = Mutex(State())

    /// Creates a clock at offset zero.
    public init() {}

    public var now: Instant { self.state.withLock { $0.now } }

    public var minimumResolution: Duration { .zero }

    /// How many tasks sleep on this clock now.
    public var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    /// How many tasks sleep on this clock now and wake within `dueWithin` from now (a sleeper
    /// still counted here has not been woken: a backoff that is not over yet).
    public func sleeperCount(dueWithin: Duration) -> Int {
        self.state.withLock { $0.sleeperCount(dueWithin: dueWithin) }
    }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = self.state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Now { case resume, cancel, wait }
                var waiters: [CheckedContinuation<Void, Never>] = []
                let now = self.state.withLock { state -> Now in
                    if state.cancelled.remove(id) != nil { return .cancel }
                    if deadline <= state.now { return .resume }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    var pending = state.sleepersWaiters
                    pending.removeAll { waiter in
                        if state.sleeperCount(dueWithin: waiter.dueWithin) >= waiter.count {
                            waiters.append(waiter.continuation)
                            return true
                        }
                        return false
                    }
                    state.sleepersWaiters = pending
                    return .wait
                }
                for waiter in waiters { waiter.resume() }
                switch now {
                case .resume: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                case .wait: break
                }
            }
        } onCancel: {
            let sleeper = self.state.withLock { state -> Sleeper? in
                if let index = state.sleepers.firstIndex(where: { $0.id == id }) {
                    return state.sleepers.remove(at: index)
                }
                state.cancelled.insert(id)
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline passed.
    public func advance(by duration: Duration) {
        let due = self.state.withLock { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Waits until at least `count` tasks sleep on this clock; with `dueWithin`, counts only
    /// those that wake within that time from now (a retry backoff, not a batch timeout).
    ///
    /// A cancelled wait returns at once (so a test past its time limit fails, not hangs).
    public func waitForSleepers(_ count: Int, dueWithin: Duration? = nil) async {
        let id = self.state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = self.state.withLock { state -> Bool in
                    if Task.isCancelled || state.sleeperCount(dueWithin: dueWithin) >= count { return true }
                    state.sleepersWaiters.append((id, count, dueWithin, continuation))
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard let index = state.sleepersWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepersWaiters.remove(at: index).continuation
            }
            waiter?.resume()
        }
    }
}
