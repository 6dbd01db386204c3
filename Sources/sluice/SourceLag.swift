//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceKafka
import SluiceRabbitMQ
import SluiceRedis
import Synchronization

/// A source that can tell how many messages wait for it in its broker (its `lag()`).
protocol LagReporting: Sendable {
    /// The messages waiting in the broker (`nil`: unknown); throws when the broker cannot say.
    func lag() async throws -> Int?
}

extension RedisSource: LagReporting {}
extension RabbitMQSource: LagReporting {}
extension KafkaSource: LagReporting {}

/// Asks a source for its lag in a task of its own, at most once per interval, and keeps the
/// last answer for the live status: a frame reads it without waiting, so a slow query never
/// delays a frame. A failed query shows no lag (and logs nothing); an answer older than
/// ``staleAfter`` is not shown either.
final class LagSampler: Sendable {
    private struct State: Sendable {
        var value: Int?
        var answered: ContinuousClock.Instant?
        var task: Task<Void, Never>?
        var stopped = false
    }

    private let query: @Sendable () async throws -> Int?
    private let interval: Duration
    /// How old an answer may be and still be shown.
    let staleAfter: Duration
    private let state = Mutex(State())

    /// Samples `query` every `interval` (the first time at ``start()``).
    init(interval: Duration = .seconds(1), query: @escaping @Sendable () async throws -> Int?) {
        self.query = query
        self.interval = interval
        self.staleAfter = max(interval * 3, .seconds(3))
    }

    /// A sampler of `source`'s lag, or `nil` for a source that does not know it (lines of
    /// stdin: or a file, the demo's orders in memory).
    convenience init?<Source: PipelineSource>(of source: Source, interval: Duration = .seconds(1)) {
        guard let source = source as? any LagReporting else { return nil }
        self.init(interval: interval) { try await source.lag() }
    }

    /// Starts sampling (once; not again after ``stop()``).
    func start() {
        self.state.withLock { state in
            guard state.task == nil, !state.stopped else { return }
            state.task = Task.detached { await self.sampleLoop() }
        }
    }

    /// Stops sampling and forgets the last answer (a query still running is not waited for).
    func stop() {
        let task = self.state.withLock { state -> Task<Void, Never>? in
            state.stopped = true
            state.value = nil
            state.answered = nil
            defer { state.task = nil }
            return state.task
        }
        task?.cancel()
    }

    /// The last answer, if there is a recent one.
    var current: Int? {
        self.state.withLock { state in
            guard let answered = state.answered, ContinuousClock.now - answered <= self.staleAfter else { return nil }
            return state.value
        }
    }

    private func sampleLoop() async {
        let clock = ContinuousClock()
        while !Task.isCancelled {
            let asked = clock.now
            let value = try? await self.query()
            self.state.withLock { state in
                guard !state.stopped else { return }
                state.value = value
                state.answered = value == nil ? nil : clock.now
            }
            try? await Task.sleep(until: asked + self.interval, clock: clock)
        }
    }
}
