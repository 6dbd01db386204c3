//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
public import Metrics
public import Synchronization

/// Counts of a pipeline's messages, by outcome.
public struct PipelineStatistics: Hashable, Sendable {
    // Same shape as StageStatistics (StageOptions.swift): both are plain public counters, but of
    // different things (a pipeline's messages by outcome; a stage's events and subscriptions).
    /// Messages the processors received from the source.
    public var received = 0
    /// Messages acknowledged after successful processing.
    public var acknowledged = 0
    /// Messages that failed for good (dead-lettered + requeued + dropped).
    public var failed = 0
    /// Retries run (message or batch attempts after the first).
    public var retried = 0
    /// Messages dead-lettered.
    public var deadLettered = 0
    /// Messages given back to the broker.
    public var requeued = 0
    /// Messages dropped by the failure policy.
    public var dropped = 0

    /// Creates empty statistics.
    public init() {}

    /// Messages settled one way or another.
    @inlinable
    public var settled: Int { self.acknowledged + self.failed }
    /// Messages received and not yet settled.
    @inlinable
    public var inFlight: Int { self.received - self.settled }
}

/// Metric labels Sluice reports through swift-metrics (dimensions: `pipeline`, and `stage` for
/// per-stage metrics).
public enum SluiceMetricLabel {
    // Same shape as SluiceLogKey, KafkaLogKey, RabbitMQLogKey and RedisLogKey: lists of string
    // constants, each for its own purpose (metric labels here, log metadata keys there).
    /// Counter: messages received by processors.
    public static let received = "sluice_messages_received_total"
    /// Counter: messages acknowledged.
    public static let acknowledged = "sluice_messages_acked_total"
    /// Counter: messages failed for good.
    public static let failed = "sluice_messages_failed_total"
    /// Counter: retries.
    public static let retried = "sluice_messages_retried_total"
    /// Counter: messages dead-lettered.
    public static let deadLettered = "sluice_messages_dead_lettered_total"
    /// Gauge: messages received and not yet settled.
    public static let inFlight = "sluice_messages_in_flight"
    /// Gauge: demand a processor asked and did not yet receive.
    public static let pendingDemand = "sluice_stage_pending_demand"
    /// Recorder: sizes of handled batches.
    public static let batchSize = "sluice_batch_size"
    /// Timer: handler time per message (processors) or per batch (batch processors).
    public static let handlerLatency = "sluice_handler_duration"
}

/// What the stages of one running pipeline share: the acknowledger, the failure policy, the
/// clock, the rate limiter, counters and metrics.
@usableFromInline
final class PipelineRuntime<Source: PipelineSource>: Sendable {
    @usableFromInline
    typealias Metadata = Source.Metadata

    @usableFromInline
    let name: String
    @usableFromInline
    let acknowledger: Source.Acker
    @usableFromInline
    let policy: FailurePolicy
    @usableFromInline
    let clock: PipelineClock
    @usableFromInline
    let limiter: RateLimiter
    @usableFromInline
    let logger: Logger
    @usableFromInline
    let batcherNames: [String]
    /// The wake-ups stages ask for (batch timeouts, rate-limit refills), served by a child
    /// task of the run (``PipelineTimers/run(clock:)``).
    @usableFromInline
    let timers = PipelineTimers()

    @usableFromInline
    let counters = Mutex(PipelineStatistics())
    @usableFromInline
    let receivedCounter: Counter
    @usableFromInline
    let acknowledgedCounter: Counter
    @usableFromInline
    let failedCounter: Counter
    @usableFromInline
    let retriedCounter: Counter
    @usableFromInline
    let deadLetteredCounter: Counter
    @usableFromInline
    let inFlightGauge: Gauge

    @usableFromInline
    init(
        name: String,
        acknowledger: Source.Acker,
        policy: FailurePolicy,
        clock: PipelineClock,
        limiter: RateLimiter,
        logger: Logger,
        batcherNames: [String],
        metricsFactory: (any MetricsFactory)?
    ) {
        // A class gets no memberwise init; the inits of PipelineConfiguration, Batcher and
        // SubscriptionInfo only share the shape of these assignments.
        self.name = name
        self.acknowledger = acknowledger
        self.policy = policy
        self.clock = clock
        self.limiter = limiter
        self.logger = logger
        self.batcherNames = batcherNames
        let dimensions = [("pipeline", name)]
        let factory = metricsFactory ?? MetricsSystem.factory
        self.receivedCounter = Counter(label: SluiceMetricLabel.received, dimensions: dimensions, factory: factory)
        self.acknowledgedCounter = Counter(label: SluiceMetricLabel.acknowledged, dimensions: dimensions, factory: factory)
        self.failedCounter = Counter(label: SluiceMetricLabel.failed, dimensions: dimensions, factory: factory)
        self.retriedCounter = Counter(label: SluiceMetricLabel.retried, dimensions: dimensions, factory: factory)
        self.deadLetteredCounter = Counter(label: SluiceMetricLabel.deadLettered, dimensions: dimensions, factory: factory)
        self.inFlightGauge = Gauge(label: SluiceMetricLabel.inFlight, dimensions: dimensions, factory: factory)
        self.metricsFactory = factory
    }

    @usableFromInline
    let metricsFactory: any MetricsFactory

    @usableFromInline
    var statistics: PipelineStatistics { self.counters.withLock { $0 } }

    @inlinable
    func received(_ count: Int) {
        let inFlight = self.counters.withLock { counters -> Int in
            counters.received += count
            return counters.inFlight
        }
        self.receivedCounter.increment(by: count)
        self.inFlightGauge.record(inFlight)
    }

    @inlinable
    func retried(_ count: Int = 1) {
        self.counters.withLock { $0.retried += count }
        self.retriedCounter.increment(by: count)
    }

    /// Counts and hands a settlement to the acknowledger. Every message passes here once.
    @inlinable
    func settle(_ settlement: Settlement<Metadata>) {
        guard !settlement.isEmpty else { return }
        var deadLettered = 0
        var requeued = 0
        var dropped = 0
        for failure in settlement.failed {
            switch failure.disposition {
            case .deadLetter: deadLettered += 1
            case .requeue: requeued += 1
            default: dropped += 1
            }
        }
        let inFlight = self.counters.withLock { counters -> Int in
            counters.acknowledged += settlement.acknowledged.count
            counters.failed += settlement.failed.count
            counters.deadLettered += deadLettered
            counters.requeued += requeued
            counters.dropped += dropped
            return counters.inFlight
        }
        if !settlement.acknowledged.isEmpty { self.acknowledgedCounter.increment(by: settlement.acknowledged.count) }
        if !settlement.failed.isEmpty {
            self.failedCounter.increment(by: settlement.failed.count)
            if deadLettered > 0 { self.deadLetteredCounter.increment(by: deadLettered) }
            self.logger.debug(
                "messages failed",
                metadata: [
                    SluiceLogKey.count: "\(settlement.failed.count)",
                    "sluice.failure": "\(settlement.failed.first.map { "\($0.message.failure?.error ?? SluiceError(.notSupported, "unknown"))" } ?? "")",
                ]
            )
        }
        self.inFlightGauge.record(inFlight)
        self.acknowledger.settle(settlement)
    }

    /// The disposition of a message that failed for good.
    @inlinable
    func disposition(of message: Message<Metadata>) -> FailureDisposition {
        message.failure?.disposition ?? self.policy.disposition
    }

    /// Whether the broker delivered `message` more often than the policy allows.
    @inlinable
    func exceedsDeliveries(_ message: Message<Metadata>) -> Bool {
        guard let cap = self.policy.maxDeliveries, let count = message.metadata.deliveryCount else { return false }
        return count > cap
    }
}

/// The wake-ups the stages of one run asked for, served by one task the run owns.
///
/// A stage cannot sleep without stopping its mailbox, so it schedules a callback here (a
/// batch timeout, a rate-limit refill) and the callback sends the stage a message. One loop,
/// a child of the pipeline's run, sleeps on the pipeline clock until the earliest deadline and
/// fires what is due; it ends with the run, so no timer outlives its pipeline.
@usableFromInline
final class PipelineTimers: Sendable {
    /// A scheduled timer's identity, to cancel it.
    @usableFromInline
    typealias Token = UInt64

    @usableFromInline
    struct Entry: Sendable {
        @usableFromInline let deadline: Duration
        @usableFromInline let fire: @Sendable () -> Void

        @inlinable
        init(deadline: Duration, fire: @escaping @Sendable () -> Void) {
            self.deadline = deadline
            self.fire = fire
        }
    }

    @usableFromInline
    struct State: ~Copyable {
        @usableFromInline var entries: [Token: Entry] = [:]
        @usableFromInline var nextToken: Token = 0
        /// The deadline the loop sleeps until (`nil`: it waits for a first timer).
        @usableFromInline var target: Duration?
        /// The loop, waiting for an earlier deadline than `target` (or for any, when idle).
        @usableFromInline var waiter: CheckedContinuation<Void, Never>?
        @usableFromInline var stopped = false

        @inlinable
        init() {}

        /// The waiter to resume when the earliest deadline is now earlier than the loop's.
        @inlinable
        mutating func wakeIfEarlier(than deadline: Duration?) -> CheckedContinuation<Void, Never>? {
            guard let deadline, self.target.map({ deadline < $0 }) ?? true else { return nil }
            defer { self.waiter = nil }
            return self.waiter
        }

        @inlinable
        var earliest: Duration? { self.entries.values.lazy.map(\.deadline).min() }
    }

    @usableFromInline
    let state = Mutex(State())

    @usableFromInline
    init() {}

    /// Calls `fire` once the pipeline clock reaches `deadline` (at once if it has), never after
    /// the run ended. A timer already due may still fire once after ``cancel(_:)`` returned (it
    /// is taken under the lock and fired outside it), so a caller that cancels checks a
    /// generation of its own, as the batcher does.
    @inlinable
    @discardableResult
    func schedule(at deadline: Duration, _ fire: @escaping @Sendable () -> Void) -> Token {
        let (token, wake) = self.state.withLock { state -> (Token, CheckedContinuation<Void, Never>?) in
            let token = state.nextToken
            state.nextToken += 1
            guard !state.stopped else { return (token, nil) }
            state.entries[token] = Entry(deadline: deadline, fire: fire)
            return (token, state.wakeIfEarlier(than: deadline))
        }
        wake?.resume()
        return token
    }

    /// Cancels a timer that did not fire yet.
    @inlinable
    func cancel(_ token: Token) {
        let wake = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.entries.removeValue(forKey: token) != nil, state.earliest != state.target else { return nil }
            // The loop sleeps for a deadline nobody waits for any more: it looks again.
            defer { state.waiter = nil }
            return state.waiter
        }
        wake?.resume()
    }

    /// Fires timers as they come due until the task is cancelled; later timers never fire.
    @usableFromInline
    func run(clock: PipelineClock) async {
        while !Task.isCancelled {
            let now = clock.now
            let (due, target) = self.state.withLock { state -> ([Entry], Duration?) in
                let due = state.entries.filter { $0.value.deadline <= now }
                for token in due.keys { state.entries[token] = nil }
                state.target = state.earliest
                return (Array(due.values), state.target)
            }
            for entry in due { entry.fire() }
            guard due.isEmpty else { continue }
            await withTaskGroup(of: Void.self) { group in
                if let target {
                    group.addTask { try? await clock.sleep(for: target - now) }
                }
                group.addTask { await self.waitForEarlierDeadline(than: target) }
                _ = await group.next()
                group.cancelAll()
            }
        }
        self.state.withLock { state in
            state.stopped = true
            state.entries = [:]
        }
    }

    /// Waits until the earliest deadline is no longer `target` (a timer came or went), or the
    /// task is cancelled.
    @usableFromInline
    func waitForEarlierDeadline(than target: Duration?) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resume = self.state.withLock { state -> Bool in
                    // A timer scheduled or cancelled since the loop looked: look again.
                    if Task.isCancelled || state.stopped || state.earliest != target { return true }
                    state.waiter = continuation
                    return false
                }
                if resume { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}

/// The error a message gets when its delivery count exceeds ``FailurePolicy/maxDeliveries``.
public struct PoisonMessage: Error, Hashable, Sendable, CustomStringConvertible {
    // Same shape as RedisEntryID (RedisMetadata.swift) only: two stored numbers and their public
    // init; the values are unrelated.
    /// The broker's delivery count.
    public let deliveryCount: Int
    /// The policy's cap.
    public let maxDeliveries: Int

    /// Creates the error.
    public init(deliveryCount: Int, maxDeliveries: Int) {
        self.deliveryCount = deliveryCount
        self.maxDeliveries = maxDeliveries
    }

    public var description: String {
        "message delivered \(self.deliveryCount) times, more than maxDeliveries=\(self.maxDeliveries)"
    }
}

/// The error a message gets when a processor routes it to a batcher that does not exist.
public struct UnknownBatcher: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name the message asked for.
    public let name: String
    /// The batchers the pipeline has.
    public let known: [String]

    /// Creates the error.
    public init(name: String, known: [String]) {
        self.name = name
        self.known = known
    }

    public var description: String {
        "message routed to unknown batcher \"\(self.name)\"; this pipeline has \(self.known.map { "\"\($0)\"" }.joined(separator: ", "))"
    }
}

/// The settlement path of a pipeline, alone, for benchmarks: what a batch processor does to
/// acknowledge a successful batch.
@_spi(Benchmarks)
public struct SettlementProbe<Source: PipelineSource>: Sendable {
    @usableFromInline
    let runtime: PipelineRuntime<Source>

    /// Connects `source` as a pipeline named `name` would, logging to `logger`.
    public init(source: Source, name: String = "probe", logger: Logger) async throws {
        let parts = try await source.makeParts(context: SourceContext(pipelineName: name, window: 100, logger: logger))
        self.runtime = PipelineRuntime(
            name: name,
            acknowledger: parts.acknowledger,
            policy: FailurePolicy(),
            clock: .continuous,
            limiter: RateLimiter(nil),
            logger: logger,
            batcherNames: [],
            metricsFactory: nil
        )
    }

    /// Acknowledges `messages` as one successful batch.
    public func settle(_ messages: [Message<Source.Metadata>]) {
        var settlement = Settlement<Source.Metadata>()
        settlement.acknowledged = messages
        self.runtime.settle(settlement)
    }
}
