//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization
import Testing

// Helpers that let tests wait for stages deterministically: no sleep is ever used to wait for
// something to happen; sleeps only bound how long a broken engine may keep a test waiting.

/// Thrown (and recorded as a test issue) when a wait exceeds its time limit.
struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(self.what)" }
}

/// Delivers the first of two racing results to a waiting continuation.
private final class FirstResult<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Result<T, any Error>, Never>?>

    init(_ continuation: CheckedContinuation<Result<T, any Error>, Never>) {
        self.continuation = Mutex(continuation)
    }

    /// Resumes the waiter with `result` unless another result came first; `true` if this one won.
    @discardableResult
    func offer(_ result: Result<T, any Error>) -> Bool {
        guard let continuation = self.continuation.withLock({ $0.take() }) else { return false }
        continuation.resume(returning: result)
        return true
    }
}

/// Runs `body`, failing the test if it does not finish within `seconds`.
///
/// `body` runs in a task of its own and races a timer, so even a wait that ignores
/// cancellation (a stage that never ends) cannot hang the test run: the test records a
/// failure and moves on, leaving the stuck task behind.
@discardableResult
func withTimeout<T: Sendable>(
    _ what: String,
    seconds: Int = 10,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>, Never>) in
        let first = FirstResult(continuation)
        let timer = Task {
            do {
                try await Task.sleep(for: .seconds(seconds))
            } catch {
                return  // cancelled: the work finished first
            }
            first.offer(.failure(TimedOut(what: what)))
        }
        Task {
            do {
                first.offer(.success(try await body()))
            } catch {
                first.offer(.failure(error))
            }
            timer.cancel()
        }
    }
    if case .failure(let error as TimedOut) = result {
        Issue.record("\(error)", sourceLocation: sourceLocation)
    }
    return try result.get()
}

/// A value shared between stages and the test, with waits on conditions over it.
final class Observed<Value: Sendable>: Sendable {
    private struct Waiter {
        let predicate: @Sendable (Value) -> Bool
        let continuation: CheckedContinuation<Value, Never>
    }

    private struct State: ~Copyable {
        var value: Value
        var waiters: [Waiter] = []
    }

    private let state: Mutex<State>

    init(_ value: Value) {
        self.state = Mutex(State(value: value))
    }

    /// The current value.
    var value: Value { self.state.withLock { $0.value } }

    /// Changes the value and wakes the waiters whose condition now holds.
    func update(_ body: (inout Value) -> Void) {
        let ready = self.state.withLock { state -> [(CheckedContinuation<Value, Never>, Value)] in
            body(&state.value)
            var ready: [(CheckedContinuation<Value, Never>, Value)] = []
            var kept: [Waiter] = []
            for waiter in state.waiters {
                if waiter.predicate(state.value) {
                    ready.append((waiter.continuation, state.value))
                } else {
                    kept.append(waiter)
                }
            }
            state.waiters = kept
            return ready
        }
        for (continuation, value) in ready { continuation.resume(returning: value) }
    }

    /// Waits (at most `seconds`) until `predicate` holds and returns the value it held for.
    @discardableResult
    func wait(
        _ what: String,
        seconds: Int = 10,
        sourceLocation: SourceLocation = #_sourceLocation,
        until predicate: @escaping @Sendable (Value) -> Bool
    ) async throws -> Value {
        try await withTimeout(what, seconds: seconds, sourceLocation: sourceLocation) {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> Value? in
                    if predicate(state.value) { return state.value }
                    state.waiters.append(Waiter(predicate: predicate, continuation: continuation))
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }
    }
}

extension Observed where Value == Int {
    func increment(by count: Int = 1) { self.update { $0 += count } }
}

extension Observed where Value: RangeReplaceableCollection {
    func append(_ element: Value.Element) { self.update { $0.append(element) } }
}

/// Holds tasks until the test lets them through, one permit at a time or all at once.
final class Gate: Sendable {
    private struct State: ~Copyable {
        var permits = 0
        var open = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    init() {}

    /// Waits for a permit (or for the gate to open).
    func enter() async {
        await withCheckedContinuation { continuation in
            let pass = self.state.withLock { state -> Bool in
                if state.open { return true }
                if state.permits > 0 {
                    state.permits -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if pass { continuation.resume() }
        }
    }

    /// Lets `count` waiters (present or future) through.
    func release(_ count: Int = 1) {
        let woken = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let now = min(count, state.waiters.count)
            state.permits += count - now
            let woken = Array(state.waiters.prefix(now))
            state.waiters.removeFirst(now)
            return woken
        }
        for waiter in woken { waiter.resume() }
    }

    /// Lets everyone through from now on.
    func open() {
        let woken = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in woken { waiter.resume() }
    }
}

/// Polls `condition` (yielding in between) until it holds; for states no callback announces.
func eventually(
    _ what: String,
    seconds: Int = 10,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: @escaping @Sendable () async throws -> Bool
) async throws {
    try await withTimeout(what, seconds: seconds, sourceLocation: sourceLocation) {
        while try await !condition() {
            try Task.checkCancellation()
            await Task.yield()
        }
    }
}
