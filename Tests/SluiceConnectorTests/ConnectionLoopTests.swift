//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceConnector
import Synchronization
import Testing

/// A fake client driven by the loop: commands are closures run on the loop's thread; each
/// service turn runs the script's `service` closure.
final class FakeDriver: ConnectionDriver {
    typealias Command = @Sendable (FakeDriver) -> Void

    let script: Script
    /// Outstanding "replies" that service turns must read before the loop may end.
    var outstanding = 0

    init(script: Script) { self.script = script }

    func handle(_ command: Command, on loop: ConnectionLoop<FakeDriver>) {
        command(self)
    }

    func service(on loop: ConnectionLoop<FakeDriver>) -> ServiceOutcome {
        self.script.turns.add(1, ordering: .relaxed)
        if self.outstanding > 0 {
            self.outstanding -= 1
            self.script.replies.add(1, ordering: .relaxed)
            return .again
        }
        return self.script.service(self, loop)
    }

    func close() {
        self.script.closed.store(true, ordering: .relaxed)
    }

    final class Script: Sendable {
        let turns = Atomic<Int>(0)
        let replies = Atomic<Int>(0)
        let closed = Atomic<Bool>(false)
        let service: @Sendable (FakeDriver, ConnectionLoop<FakeDriver>) -> ServiceOutcome

        /// By default an idle turn waits 5 s: anything faster was woken, not polled.
        init(service: @escaping @Sendable (FakeDriver, ConnectionLoop<FakeDriver>) -> ServiceOutcome = { _, _ in
            .wait(socket: nil, timeout: .seconds(5))
        }) {
            self.service = service
        }
    }
}

/// Runs `command` on the loop and waits for it; returns how long that took.
private func timed(_ loop: ConnectionLoop<FakeDriver>, _ command: @escaping @Sendable (FakeDriver) -> Void) async -> Duration {
    let start = ContinuousClock.now
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let queued = loop.enqueue { driver in
            command(driver)
            continuation.resume()
        }
        if !queued { continuation.resume() }
    }
    return ContinuousClock.now - start
}

@Suite("Connection loop", .timeLimit(.minutes(1)))
struct ConnectionLoopTests {
    @Test func anIdleLoopRunsACommandWellUnderItsServiceTimeout() async throws {
        let script = FakeDriver.Script()
        let loop = ConnectionLoop(name: "test-wake") { FakeDriver(script: script) }
        var slowest = Duration.zero
        for _ in 0..<20 {
            // Let the loop fall asleep in its 5 s wait first.
            try await Task.sleep(for: .milliseconds(5))
            slowest = max(slowest, await timed(loop) { _ in })
        }
        #expect(slowest < .milliseconds(500), "the slowest command took \(slowest) against a 5 s service timeout")
        #expect(await loop.stopAndWait(timeout: .seconds(5)))
        let closed = script.closed.load(ordering: .relaxed)
        #expect(closed)
    }

    @Test func wakeStartsAnotherServiceTurn() async throws {
        let script = FakeDriver.Script()
        let loop = ConnectionLoop(name: "test-turn") { FakeDriver(script: script) }
        _ = await timed(loop) { _ in }
        try await Task.sleep(for: .milliseconds(20))
        let before = script.turns.load(ordering: .relaxed)
        let start = ContinuousClock.now
        loop.wake()
        while script.turns.load(ordering: .relaxed) == before {
            try await Task.sleep(for: .milliseconds(1))
            #expect(ContinuousClock.now - start < .seconds(2), "no turn after wake()")
            if ContinuousClock.now - start >= .seconds(2) { break }
        }
        #expect(await loop.stopAndWait(timeout: .seconds(5)))
    }

    @Test func stopRunsQueuedCommandsAndReadsOutstandingReplies() async throws {
        let script = FakeDriver.Script()
        let ran = Atomic<Int>(0)
        let loop = ConnectionLoop(name: "test-stop") { FakeDriver(script: script) }
        for _ in 0..<10 {
            loop.enqueue { driver in
                driver.outstanding += 3
                ran.add(1, ordering: .relaxed)
            }
        }
        #expect(await loop.stopAndWait(timeout: .seconds(5)))
        #expect(ran.load(ordering: .relaxed) == 10)
        #expect(script.replies.load(ordering: .relaxed) == 30, "the loop ended with replies unread")
        #expect(!loop.enqueue { _ in }, "a stopped loop takes no command")
    }

    @Test func stopAndWaitIsBoundedByItsDeadline() async throws {
        let script = FakeDriver.Script()
        let release = Atomic<Bool>(false)
        let loop = ConnectionLoop(name: "test-deadline") { FakeDriver(script: script) }
        // A command stuck in a "C call" for up to 10 s.
        loop.enqueue { _ in
            let until = ContinuousClock.now + .seconds(10)
            while !release.load(ordering: .relaxed) && ContinuousClock.now < until { usleep(1000) }
        }
        try await Task.sleep(for: .milliseconds(20))
        let start = ContinuousClock.now
        let ended = await loop.stopAndWait(timeout: .milliseconds(150))
        let waited = ContinuousClock.now - start
        #expect(!ended)
        #expect(waited >= .milliseconds(150) && waited < .seconds(2), "waited \(waited)")
        release.store(true, ordering: .relaxed)
        #expect(await loop.stopAndWait(timeout: .seconds(5)), "the loop ends once the call returns")
    }

    /// A caller being cancelled (a service shutting down) still waits for the loop to end, up
    /// to the deadline, before it frees what the loop's driver uses.
    @Test func stopAndWaitFromACancelledTaskStillWaitsForTheLoop() async throws {
        let script = FakeDriver.Script()
        let loop = ConnectionLoop(name: "test-cancelled") { FakeDriver(script: script) }
        let waiting = Atomic<Bool>(false)
        let callReturned = Atomic<Bool>(false)
        // A command inside a "C call" that returns 100 ms after the waiter began to wait (so
        // the wait overlaps the call however late the waiter task runs).
        loop.enqueue { _ in
            let until = ContinuousClock.now + .seconds(10)
            while !waiting.load(ordering: .acquiring) && ContinuousClock.now < until { usleep(1000) }
            usleep(100_000)
            callReturned.store(true, ordering: .releasing)
        }
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            let start = ContinuousClock.now
            waiting.store(true, ordering: .releasing)
            let ended = await loop.stopAndWait(timeout: .seconds(5))
            return (ended, ContinuousClock.now - start, callReturned.load(ordering: .acquiring))
        }
        let (ended, waited, returnedFirst) = await waiter.value
        #expect(ended, "returned before the loop ended")
        #expect(returnedFirst, "returned while the loop was still inside the call (after \(waited))")
        #expect(waited >= .milliseconds(100), "waited only \(waited)")
        let closed = script.closed.load(ordering: .relaxed)
        #expect(closed)
    }

    @Test func reconnectWaitsTheBackoffSequenceAndAStopEndsAWait() async throws {
        let waits = Mutex<[Duration]>([])
        let connectedAt = Mutex<ContinuousClock.Instant?>(nil)
        let backoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(80), multiplier: 2, jitter: 0)
        let failuresBeforeConnecting = 4
        final class Box: @unchecked Sendable { var reconnect: Reconnect<SeededRandom>; var attempts = 0
            init(_ r: Reconnect<SeededRandom>) { self.reconnect = r } }
        let box = Box(Reconnect(backoff: backoff, random: SeededRandom(seed: 3)))
        let script = FakeDriver.Script { _, loop in
            // Used only on the loop's thread.
            if connectedAt.withLock({ $0 }) != nil { return .wait(socket: nil, timeout: .seconds(5)) }
            box.attempts += 1
            if box.attempts <= failuresBeforeConnecting {
                let wait = box.reconnect.failed()
                waits.withLock { $0.append(wait) }
                _ = loop.pause(for: wait)
                return .again
            }
            box.reconnect.connected()
            connectedAt.withLock { $0 = .now }
            return .wait(socket: nil, timeout: .seconds(5))
        }
        let start = ContinuousClock.now
        let loop = ConnectionLoop(name: "test-reconnect") { FakeDriver(script: script) }
        while connectedAt.withLock({ $0 }) == nil && ContinuousClock.now - start < .seconds(5) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let took = try #require(connectedAt.withLock { $0 }) - start
        #expect(waits.withLock { $0 } == [20, 40, 80, 80].map { Duration.milliseconds($0) })
        #expect(took >= .milliseconds(220) && took < .seconds(2), "connected after \(took)")
        #expect(await loop.stopAndWait(timeout: .seconds(5)))

        // A long backoff wait ends as soon as the loop is stopped.
        let paused = Atomic<Bool>(false)
        let stuck = ConnectionLoop(name: "test-backoff-stop") {
            FakeDriver(script: FakeDriver.Script { _, loop in
                paused.store(true, ordering: .relaxed)
                return loop.pause(for: .seconds(30)) ? .again : .wait(socket: nil, timeout: nil)
            })
        }
        while !paused.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(2)) }
        let stopStart = ContinuousClock.now
        #expect(await stuck.stopAndWait(timeout: .seconds(5)))
        #expect(ContinuousClock.now - stopStart < .seconds(1))
    }
}
