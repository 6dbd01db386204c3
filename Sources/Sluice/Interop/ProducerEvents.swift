//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Synchronization

extension ProducerRef {
    /// The producer's events as an async sequence of batches, consumed with demand.
    ///
    /// Iterating subscribes with `maxDemand` and `minDemand` exactly like a consumer stage:
    /// batches come in slices of at most `maxDemand - minDemand` events, demand is asked again
    /// after each slice (10/5 asks 10, 5, 5, …), and never more than `maxDemand` events wait in
    /// the sequence. Leaving the loop (or
    /// cancelling the iterating task) cancels the subscription. The sequence ends when the
    /// producer ends normally or shuts down, and throws the producer's error if it crashed.
    ///
    /// ```swift
    /// for try await batch in producer.events(maxDemand: 100) {
    ///     for event in batch { print(event) }
    /// }
    /// ```
    public func events(maxDemand: Int = 1000, minDemand: Int? = nil) -> ProducerEvents<Output> {
        ProducerEvents(source: self.source, options: SubscriptionOptions(maxDemand: maxDemand, minDemand: minDemand))
    }
}

extension StageHandle {
    /// The stage's events as an async sequence of batches; see ``ProducerRef/events(maxDemand:minDemand:)``.
    public func events(maxDemand: Int = 1000, minDemand: Int? = nil) -> ProducerEvents<S.Output> {
        self.producer.events(maxDemand: maxDemand, minDemand: minDemand)
    }
}

/// A producer's events as an async sequence of batches; see ``ProducerRef/events(maxDemand:minDemand:)``.
public struct ProducerEvents<Event: Sendable>: AsyncSequence, Sendable {
    public typealias Element = [Event]

    let source: EventSource<Event>
    let options: SubscriptionOptions<Event>

    /// Subscribes when the first batch is asked for.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(token: IteratorToken(storage: EventsStorage(source: self.source, options: self.options)))
    }

    /// The iterator; each ``next()`` returns the next batch.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let token: IteratorToken

        /// The next batch, or `nil` when the producer ended normally (or the task was cancelled).
        ///
        /// - Throws: ``SluiceError`` for invalid demand options or a producer that already ended,
        ///   or the producer's error if it crashed.
        public mutating func next() async throws -> [Event]? {
            try await self.token.storage.next()
        }
    }

    /// Cancels the subscription when the iterator goes away.
    final class IteratorToken: Sendable {
        let storage: EventsStorage<Event>
        init(storage: EventsStorage<Event>) { self.storage = storage }
        deinit { self.storage.cancel() }
    }
}

@available(*, unavailable)
extension ProducerEvents.AsyncIterator: Sendable {}

/// The consumer side of an events sequence: a subscription whose sink is a queue of batches.
final class EventsStorage<Event: Sendable>: Sendable {
    private struct State: ~Copyable {
        var started = false
        var subscription: SubscriptionID?
        var demand: ConsumerDemand?
        var batches: Deque<[Event]> = []
        var end: StopReason?
        var cancelled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private enum Step {
        case batch([Event], ask: Int, SubscriptionID?)
        case finished(StopReason?)
        case wait
    }

    private let source: EventSource<Event>
    private let options: SubscriptionOptions<Event>
    private let state = Mutex(State())

    init(source: EventSource<Event>, options: SubscriptionOptions<Event>) {
        self.source = source
        self.options = options
    }

    private func makeSink() -> EventSink<Event> {
        EventSink(
            stageID: StageID.next(),
            deliver: { [weak self] events, _ in self?.received(events) },
            ended: { [weak self] _, reason in self?.ended(reason.reason) },
            rejected: { [weak self] _, error in self?.ended(.failure(error)) }
        )
    }

    private func received(_ events: [Event]) {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.batches.append(events)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private func ended(_ reason: StopReason) {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.end == nil { state.end = reason }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func cancel() {
        let (subscription, waiter) = self.state.withLock { state -> (SubscriptionID?, CheckedContinuation<Void, Never>?) in
            state.cancelled = true
            defer {
                state.waiter = nil
                state.subscription = nil
            }
            return (state.subscription, state.waiter)
        }
        // The iteration ended: for the producer this subscriber is gone, as a consumer that ended.
        if let subscription { self.source.cancel(subscription, reason: .down(.normal)) }
        waiter?.resume()
    }

    func next() async throws -> [Event]? {
        try self.startIfNeeded()
        while true {
            let step = self.state.withLock { state -> Step in
                if var batch = state.batches.popFirst() {
                    // Like a consumer stage: hand out slices of at most maxDemand - minDemand
                    // and re-ask after each, so 10/5 asks 10, 5, 5, …
                    if let demand = state.demand, batch.count > demand.sliceSize {
                        state.batches.prepend(Array(batch[demand.sliceSize...]))
                        batch = Array(batch[..<demand.sliceSize])
                    }
                    let ask = state.demand?.consume(batch.count).ask ?? 0
                    return .batch(batch, ask: ask, state.subscription)
                }
                if state.cancelled { return .finished(nil) }
                if let end = state.end {
                    // Reported once; later calls return nil, as after any end of a sequence.
                    state.end = .normal
                    return .finished(end)
                }
                return .wait
            }
            switch step {
            case .batch(let batch, let ask, let subscription):
                if ask > 0, let subscription { self.source.ask(ask, on: subscription) }
                return batch
            case .finished(let reason):
                if case .failure(let error) = reason { throw error }
                return nil
            case .wait:
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if !state.batches.isEmpty || state.end != nil || state.cancelled { return true }
                            state.waiter = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    self.cancel()
                }
            }
        }
    }

    private func startIfNeeded() throws {
        let alreadyStarted = self.state.withLock { state -> Bool in
            defer { state.started = true }
            return state.started
        }
        if alreadyStarted { return }
        do {
            try self.options.validate()
        } catch {
            self.state.withLock { $0.end = .normal }
            throw error
        }
        let subscription = SubscriptionID.next()
        var demand = ConsumerDemand(
            maxDemand: self.options.maxDemand,
            minDemand: self.options.effectiveMinDemand,
            manual: false
        )
        let first = demand.initialAsk()
        self.state.withLock { state in
            state.subscription = subscription
            state.demand = demand
        }
        guard self.source.subscribe(subscription, sink: self.makeSink(), options: self.options, reply: nil) else {
            self.state.withLock { $0.end = .normal }
            throw SluiceError(.stageEnded, "cannot consume \(self.source.stageName) (\(self.source.stageID)): it has ended")
        }
        self.source.ask(first, on: subscription)
    }
}
