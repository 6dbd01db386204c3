//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Foundation
import Synchronization

/// What one turn of broker service asks its ``ConnectionLoop`` to do next.
package enum ServiceOutcome: Sendable, Equatable {
    /// Serve again at once (after the queued commands): more work is ready, or a reply is
    /// still outstanding.
    case again
    /// Nothing to do until a command arrives, ``ConnectionLoop/wake()`` is called, `socket`
    /// (the broker's, if the C library exposes it) turns readable, or `timeout` passes
    /// (`nil`: no limit). Heartbeats and polls that must run at zero demand set a timeout.
    case wait(socket: Int32?, timeout: Duration?)
}

/// The code that owns one C client handle and runs on a ``ConnectionLoop``'s thread.
///
/// It is created on that thread and used only there (it need not be `Sendable`).
package protocol ConnectionDriver: AnyObject, SendableMetatype {
    /// A unit of work sent to the loop from other threads: an acknowledgement, a settle
    /// batch, pause/resume, a closure to run on the handle.
    associatedtype Command: Sendable

    /// Performs `command` (on the loop's thread).
    func handle(_ command: Command, on loop: ConnectionLoop<Self>)

    /// One turn of broker service: a read with a short timeout, a heartbeat, a poll. Called
    /// after every batch of commands, also while the loop is stopping: the loop ends at the
    /// first turn that answers ``ServiceOutcome/wait(socket:timeout:)`` once stopping, so a
    /// driver answers ``ServiceOutcome/again`` while replies it must read are outstanding.
    func service(on loop: ConnectionLoop<Self>) -> ServiceOutcome

    /// The loop ends: release the C handle.
    func close()
}

/// A thread that owns one C client handle and, every turn, drains a command queue and then
/// services the broker.
///
/// ```swift
/// let loop = ConnectionLoop(name: "sluice-amqp") { AMQPDriver(configuration) }
/// loop.enqueue(.ack(tag))          // from any thread; wakes the loop at once
/// let ended = await loop.stopAndWait(timeout: .seconds(5))
/// ```
///
/// Waking the loop does not depend on a polling interval: an idle loop waits in `poll` on a
/// self-pipe (and the driver's socket, if it names one), and ``enqueue(_:)``, ``wake()`` and
/// ``stop()`` write to the pipe when the loop sleeps. Stopping lets the queued commands run,
/// then ends the loop at its first idle turn; ``stopAndWait(timeout:)`` waits for that at most
/// until a deadline.
package final class ConnectionLoop<Driver: ConnectionDriver>: Sendable {
    private struct State: ~Copyable {
        var commands: Deque<Driver.Command> = []
        var stopping = false
        var finished = false
        /// Whether the thread waits on the pipe (and so needs a byte to wake).
        var sleeping = false
        /// A command, a wake or a stop arrived since the loop last looked.
        var woken = false
        /// ``wake()`` was called since ``pause(for:)`` last looked.
        var interrupted = false
        var nextWaiter = 0
        var finishWaiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    }

    /// The thread's name.
    package let name: String
    private let state = Mutex(State())
    private let waker = Waker()

    /// Starts the thread, which creates its driver with `makeDriver`.
    package init(name: String, makeDriver: @escaping @Sendable () -> Driver) {
        self.name = name
        let thread = Thread { [self] in
            let driver = makeDriver()
            self.run(driver)
            driver.close()
            let waiters = self.state.withLock { state -> [CheckedContinuation<Bool, Never>] in
                state.finished = true
                defer { state.finishWaiters = [:] }
                return Array(state.finishWaiters.values)
            }
            for waiter in waiters { waiter.resume(returning: true) }
        }
        thread.name = name
        thread.start()
    }

    // MARK: Any thread

    /// Queues `command` and wakes the loop. Returns `false` (and drops it) once the loop is
    /// stopping.
    @discardableResult
    package func enqueue(_ command: Driver.Command) -> Bool {
        let (queued, signal) = self.state.withLock { state -> (Bool, Bool) in
            guard !state.stopping else { return (false, false) }
            state.commands.append(command)
            return (true, Self.wake(&state))
        }
        if signal { self.waker.signal() }
        return queued
    }

    /// Wakes the loop for another turn now, and ends a ``pause(for:)`` early.
    package func wake() {
        let signal = self.state.withLock { state -> Bool in
            state.interrupted = true
            return Self.wake(&state)
        }
        if signal { self.waker.signal() }
    }

    /// Whether ``stop()`` was called.
    package var isStopping: Bool { self.state.withLock { $0.stopping } }

    /// Lets the queued commands run, then ends the loop at its first idle turn.
    package func stop() {
        let signal = self.state.withLock { state -> Bool in
            state.stopping = true
            return Self.wake(&state)
        }
        if signal { self.waker.signal() }
    }

    /// ``stop()``, then waits until the loop ended, at most `timeout`. Returns whether it
    /// ended (`false`: the driver is still inside a call; the thread ends when it returns).
    ///
    /// The wait ignores the caller's cancellation: a caller being cancelled (a service
    /// shutting down) must still let the loop end before it frees what the driver uses.
    package func stopAndWait(timeout: Duration) async -> Bool {
        self.stop()
        // An unstructured task does not inherit the caller's cancellation.
        return await Task { await self.waitUntilStopped(timeout: timeout) }.value
    }

    private func waitUntilStopped(timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.waitUntilFinished() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let ended = await group.next() ?? false
            group.cancelAll()
            return ended
        }
    }

    private func waitUntilFinished() async -> Bool {
        let id = self.state.withLock { state -> Int in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let resume = self.state.withLock { state -> Bool? in
                    if state.finished { return true }
                    if Task.isCancelled { return false }
                    state.finishWaiters[id] = continuation
                    return nil
                }
                if let resume { continuation.resume(returning: resume) }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.finishWaiters.removeValue(forKey: id) }
            waiter?.resume(returning: false)
        }
    }

    private static func wake(_ state: inout State) -> Bool {
        state.woken = true
        guard state.sleeping else { return false }
        state.sleeping = false
        return true
    }

    // MARK: The loop's thread

    /// Called by the driver (on the loop's thread): waits `duration`, or less if ``wake()``
    /// or ``stop()`` is called. Returns `false` if the loop is stopping. For reconnect backoff.
    package func pause(for duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while true {
            let wait = self.state.withLock { state -> Bool? in
                if state.stopping { return false }
                if state.interrupted {
                    state.interrupted = false
                    return true
                }
                state.sleeping = true
                return nil
            }
            if let wait { return wait }
            let remaining = deadline - .now
            if remaining > .zero { self.waker.wait(socket: nil, timeout: remaining) }
            self.state.withLock { $0.sleeping = false }
            if ContinuousClock.now >= deadline { return !self.isStopping }
        }
    }

    private func run(_ driver: Driver) {
        while true {
            let commands = self.state.withLock { state -> Deque<Driver.Command> in
                state.woken = false
                // A wake during this turn still ends a pause in it; older ones do not.
                state.interrupted = false
                defer { state.commands.removeAll() }
                return state.commands
            }
            for command in commands { driver.handle(command, on: self) }
            guard case .wait(let socket, let timeout) = driver.service(on: self) else { continue }
            let idle = self.state.withLock { state -> Bool? in
                if state.woken { return true }
                if state.stopping { return nil }
                state.sleeping = true
                return false
            }
            guard let idle else { return }
            if idle { continue }
            self.waker.wait(socket: socket, timeout: timeout)
            self.state.withLock { $0.sleeping = false }
        }
    }
}
