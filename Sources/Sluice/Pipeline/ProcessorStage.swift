//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Metrics
public import Synchronization

/// Information a processor receives.
@usableFromInline
enum ProcessorInfo: Sendable {
    /// Rate-limit tokens may be available again.
    case tokens
}

/// The work of one processor, shared by its two stage shapes (with and without batchers).
///
/// A processor asks for its demand by hand: like automatic demand (ask `maxDemand`, re-ask
/// when pending falls to `minDemand`), but only as far as the rate limiter grants tokens.
@usableFromInline
struct ProcessorCore<Source: PipelineSource> {
    @usableFromInline
    typealias Metadata = Source.Metadata

    @usableFromInline
    let runtime: PipelineRuntime<Source>
    @usableFromInline
    let handler: MessageHandler<Metadata>
    @usableFromInline
    let maxDemand: Int
    @usableFromInline
    let minDemand: Int
    @usableFromInline
    let routesToBatchers: Bool
    @usableFromInline
    let pendingGauge: Gauge
    @usableFromInline
    let latency: Metrics.Timer
    @usableFromInline
    var handle: (@Sendable () -> Void)?
    @usableFromInline
    var subscription: SubscriptionID?
    @usableFromInline
    var pending = 0
    @usableFromInline
    var waitingForTokens = false
    @usableFromInline
    var random = SystemRandomNumberGenerator()

    @usableFromInline
    init(runtime: PipelineRuntime<Source>, processors: Processors<Metadata>, index: Int, routesToBatchers: Bool) {
        self.runtime = runtime
        self.handler = processors.handler
        self.maxDemand = processors.maxDemand
        self.minDemand = processors.minDemand ?? processors.maxDemand / 2
        self.routesToBatchers = routesToBatchers
        let dimensions = [("pipeline", runtime.name), ("stage", "processor_\(index)")]
        self.pendingGauge = Gauge(label: SluiceMetricLabel.pendingDemand, dimensions: dimensions, factory: runtime.metricsFactory)
        self.latency = Metrics.Timer(label: SluiceMetricLabel.handlerLatency, dimensions: dimensions, factory: runtime.metricsFactory)
    }

    /// Asks upstream back up to `maxDemand` once pending demand fell to `minDemand`, within the
    /// rate limit; schedules a retry when the limit withholds demand.
    @inlinable
    mutating func requestDemand<Output>(_ context: inout StageContext<Output>) {
        guard let subscription = self.subscription, !self.waitingForTokens, self.pending <= self.minDemand else { return }
        let wanted = self.maxDemand - self.pending
        let (granted, retryAt) = self.runtime.limiter.take(wanted, now: self.runtime.clock.now)
        if granted > 0 {
            self.pending += granted
            context.ask(granted, on: subscription)
        }
        self.pendingGauge.record(self.pending)
        if let retryAt, let wake = self.handle {
            // The run's timer loop wakes the stage when the limiter refills.
            self.waitingForTokens = true
            self.runtime.timers.schedule(at: retryAt, wake)
        }
    }

    @inlinable
    mutating func tokensMayBeAvailable<Output>(_ context: inout StageContext<Output>) {
        self.waitingForTokens = false
        self.requestDemand(&context)
    }

    /// Runs the handler on each message (with retries); returns the messages to pass on to
    /// batchers, and settles the rest. Messages are changed in place and passed on as the same
    /// array when none failed, so the common path costs nothing per message beyond the handler.
    @inlinable
    mutating func process(_ input: consuming [Message<Metadata>]) async -> [Message<Metadata>] {
        // One cancellation handler and flag per batch, read per message, where `Task.isCancelled`
        // would look the task up in thread-local storage and retain it every time. (A flag per
        // batch, not per stage: a copy of the stage never inherits a raised one.) The batch is
        // moved into the operation (through an optional), so it stays uniquely held.
        let cancellation = CancellationFlag()
        var batch: [Message<Metadata>]? = consume input
        return await withTaskCancellationHandler {
            await self.processBatch(batch.take()!, cancellation: cancellation)
        } onCancel: {
            cancellation.raise()
        }
    }

    @inlinable
    mutating func processBatch(_ input: consuming [Message<Metadata>], cancellation: CancellationFlag) async -> [Message<Metadata>] {
        // The batch is this stage's own: handlers change its messages in place, without a copy.
        var messages = consume input
        self.pending -= messages.count
        let runtime = self.runtime
        runtime.received(messages.count)
        var settlement = Settlement<Metadata>()
        let started = ContinuousClock.now
        var index = 0
        while index < messages.count {
            // First attempts run in stretches up to the next message that needs another attempt;
            // a synchronous handler's stretch is a plain loop, with no suspension point per
            // message and nothing kept in the async frame.
            let stretch: Stretch<Metadata>
            switch self.handler {
            case .sync(let handle):
                stretch = self.syncStretch(&messages, from: index, handle: handle, cancellation: cancellation, settlement: &settlement)
            case .async(let handle):
                stretch = await self.asyncStretch(&messages, from: index, handle: handle, cancellation: cancellation, settlement: &settlement)
            }
            switch stretch {
            case .finished:
                index = messages.count
            case .cancelled:
                // The pipeline is being torn down (deadline passed, or cancelled): what is not
                // settled yet stays unacknowledged for the broker.
                runtime.settle(settlement)
                return []
            case .retry(let at, let original, let attempts):
                guard await self.retry(&messages[at], original: original, attempts: attempts, cancellation: cancellation) else {
                    runtime.settle(settlement)
                    return []
                }
                self.finish(&messages[at], settlement: &settlement)
                index = at + 1
            }
        }
        if !messages.isEmpty {
            self.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)) / Int64(messages.count))
        }
        if !settlement.failed.isEmpty {
            // The failed ones (already in the settlement) leave; the rest are moved, not copied.
            var kept: [Message<Metadata>] = []
            kept.reserveCapacity(messages.count - settlement.failed.count)
            messages.reverseMoving()
            while let message = messages.popLast() {
                if !message.isFailed { kept.append(message) }
            }
            messages = kept
        }
        if self.routesToBatchers {
            runtime.settle(settlement)
            return messages
        }
        settlement.acknowledged = messages
        runtime.settle(settlement)
        return []
    }

    /// First attempts with a synchronous handler, from `start` to the end of the batch or to the
    /// first message that needs another attempt.
    @inlinable
    func syncStretch(
        _ messages: inout [Message<Metadata>],
        from start: Int,
        handle: (inout Message<Metadata>) throws -> Void,
        cancellation: CancellationFlag,
        settlement: inout Settlement<Metadata>
    ) -> Stretch<Metadata> {
        // Read once, not per message through `self`.
        let keepsOriginals = self.runtime.policy.maxAttempts > 1
        var anchor = PayloadAnchor()
        // One uniqueness check for the stretch, not one per message: the handler gets each
        // message in place, and cannot reach the batch itself.
        return messages.withUnsafeMutableBufferPointer { buffer -> Stretch<Metadata> in
            for index in start..<buffer.count {
                if self.failsAsPoison(&buffer[index]) {
                    self.finish(&buffer[index], settlement: &settlement)
                    continue
                }
                // A retry runs the handler on the message as it arrived, so keep it while
                // retries are possible: its payload's bits, with its buffer held by the anchor
                // (one retain per buffer, not per message).
                let snapshot = keepsOriginals ? buffer[index].snapshot(anchor: &anchor) : nil
                let attempts = buffer[index].attempts + 1
                buffer[index].attempts = attempts
                do {
                    try handle(&buffer[index])
                } catch {
                    buffer[index].fail(error)
                }
                if cancellation.isRaised { return .cancelled }
                if let snapshot, self.needsAnotherAttempt(buffer[index], after: attempts) {
                    return .retry(at: index, original: buffer[index].arrived(snapshot), attempts: attempts)
                }
                self.finish(&buffer[index], settlement: &settlement)
            }
            return .finished
        }
    }

    /// ``syncStretch(_:from:handle:cancellation:settlement:)`` for an async handler.
    ///
    /// The two loops are kept apart on purpose: the synchronous one must not be async, and
    /// sharing their steps through helpers returning the attempt's state measured about 15 %
    /// slower on the pipeline benchmark.
    @inlinable
    func asyncStretch(
        _ messages: inout [Message<Metadata>],
        from start: Int,
        handle: MessageHandler<Metadata>.Async,
        cancellation: CancellationFlag,
        settlement: inout Settlement<Metadata>
    ) async -> Stretch<Metadata> {
        let keepsOriginals = self.runtime.policy.maxAttempts > 1
        var anchor = PayloadAnchor()
        for index in start..<messages.count {
            if self.failsAsPoison(&messages[index]) {
                self.finish(&messages[index], settlement: &settlement)
                continue
            }
            let snapshot = keepsOriginals ? messages[index].snapshot(anchor: &anchor) : nil
            let attempts = messages[index].attempts + 1
            messages[index].attempts = attempts
            do {
                try await handle(&messages[index])
            } catch {
                messages[index].fail(error)
            }
            if cancellation.isRaised { return .cancelled }
            if let snapshot, self.needsAnotherAttempt(messages[index], after: attempts) {
                return .retry(at: index, original: messages[index].arrived(snapshot), attempts: attempts)
            }
            self.finish(&messages[index], settlement: &settlement)
        }
        return .finished
    }

    /// Retries a message that failed attempt `attempts`, after the policy's backoff, on the
    /// message as it arrived; returns `false` if the stage was cancelled meanwhile.
    @inlinable
    mutating func retry(
        _ message: inout Message<Metadata>,
        original: Message<Metadata>,
        attempts: Int,
        cancellation: CancellationFlag
    ) async -> Bool {
        var attempts = attempts
        let runtime = self.runtime
        while let retry = runtime.policy.retry {
            runtime.retried()
            do {
                try await runtime.clock.sleep(for: retry.delay(afterAttempt: attempts, using: &self.random))
            } catch {
                return false
            }
            message = original
            attempts += 1
            message.attempts = attempts
            do {
                switch self.handler {
                case .sync(let handle): try handle(&message)
                case .async(let handle): try await handle(&message)
                }
            } catch {
                message.fail(error)
            }
            if cancellation.isRaised { return false }
            if !self.needsAnotherAttempt(message, after: attempts) { break }
        }
        return true
    }

    /// Fails a message the broker delivered more often than the policy allows; returns whether
    /// it did.
    @inlinable
    func failsAsPoison(_ message: inout Message<Metadata>) -> Bool {
        guard self.runtime.exceedsDeliveries(message) else { return false }
        let policy = self.runtime.policy
        message.fail(PoisonMessage(deliveryCount: message.metadata.deliveryCount ?? 0, maxDeliveries: policy.maxDeliveries ?? 0))
        return true
    }

    /// Whether a message that went through attempt `attempts` failed and may be tried again.
    @inlinable
    func needsAnotherAttempt(_ message: borrowing Message<Metadata>, after attempts: Int) -> Bool {
        guard let failure = message.failure, failure.disposition == nil else { return false }
        return attempts < self.runtime.policy.maxAttempts && self.runtime.policy.retry != nil
    }

    /// Ends a message's handling: a message routed to an unknown batcher fails, and a failed
    /// message is set aside for settlement.
    @inlinable
    @inline(__always)
    func finish(_ message: inout Message<Metadata>, settlement: inout Settlement<Metadata>) {
        if self.routesToBatchers, !message.isFailed, let name = message.batcher, !self.runtime.batcherNames.contains(name) {
            message.fail(UnknownBatcher(name: name, known: self.runtime.batcherNames))
        }
        if message.isFailed {
            settlement.failed.append((message, self.runtime.disposition(of: message)))
        }
    }
}

/// Where a stretch of first attempts stopped.
@usableFromInline
enum Stretch<Metadata: Sendable> {
    /// Every message of the batch was handled.
    case finished
    /// The message at `at` failed attempt `attempts` and may be tried again from `original`.
    case retry(at: Int, original: Message<Metadata>, attempts: Int)
    /// The stage was cancelled.
    case cancelled
}

/// What both processor stage shapes share: demand asked by hand within the rate limit.
@usableFromInline
protocol ProcessorStageShape: Stage where Input == Message<Source.Metadata>, Info == ProcessorInfo {
    associatedtype Source: PipelineSource
    var core: ProcessorCore<Source> { get set }
}

extension ProcessorStageShape {
    @usableFromInline
    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.core.handle = { handle.send(.tokens) }
    }

    @usableFromInline
    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Output>) -> DemandMode {
        self.core.subscription = subscription.id
        self.core.requestDemand(&context)
        return .manual
    }

    @inlinable
    mutating func handleInfo(_ info: ProcessorInfo, context: inout StageContext<Output>) {
        self.core.tokensMayBeAvailable(&context)
    }
}

/// A processor whose messages go on to batchers.
@usableFromInline
struct ProcessorStage<Source: PipelineSource>: ProducerConsumer, ProcessorStageShape {
    @usableFromInline
    typealias Input = Message<Source.Metadata>
    @usableFromInline
    typealias Output = Message<Source.Metadata>
    @usableFromInline
    typealias Info = ProcessorInfo

    @usableFromInline
    var core: ProcessorCore<Source>

    @usableFromInline
    init(core: ProcessorCore<Source>) { self.core = core }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) async {
        let forward = await self.core.process(consume events)
        if !forward.isEmpty { context.emit(consume forward) }
        self.core.requestDemand(&context)
    }
}

/// A processor that settles its messages itself (the pipeline has no batcher).
@usableFromInline
struct TerminalProcessorStage<Source: PipelineSource>: Consumer, ProcessorStageShape {
    // Same shape as ProcessorStage: a Consumer (StageContext<Never>) and a ProducerConsumer are
    // separate conformances; what they share lives in ProcessorStageShape and ProcessorCore.
    @usableFromInline
    typealias Input = Message<Source.Metadata>
    @usableFromInline
    typealias Info = ProcessorInfo

    @usableFromInline
    var core: ProcessorCore<Source>

    @usableFromInline
    init(core: ProcessorCore<Source>) { self.core = core }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        _ = await self.core.process(consume events)
        self.core.requestDemand(&context)
    }
}

/// A flag raised when a task is cancelled, cheap to read from that task's hot loop.
@usableFromInline
final class CancellationFlag: Sendable {
    @usableFromInline
    let raised = Atomic<Bool>(false)

    @inlinable
    init() {}

    /// Whether the task was cancelled.
    @inlinable
    var isRaised: Bool { self.raised.load(ordering: .relaxed) }

    /// Records the cancellation (called from the task's cancellation handler).
    @inlinable
    func raise() { self.raised.store(true, ordering: .relaxed) }
}
