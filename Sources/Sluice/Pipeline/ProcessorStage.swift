//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Metrics
import Synchronization

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
    /// Raised once this stage's task is cancelled: read per message, where `Task.isCancelled`
    /// would look the task up in thread-local storage and retain it every time.
    @usableFromInline
    let cancellation = CancellationFlag()

    @inlinable
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
            self.waitingForTokens = true
            let clock = self.runtime.clock
            let delay = retryAt - clock.now
            Task {
                try? await clock.sleep(for: max(delay, .zero))
                wake()
            }
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
        let cancellation = self.cancellation
        if cancellation.isRaised { return await self.processBatch(input) }
        // One cancellation handler per batch instead of a task lookup per message. The batch is
        // moved into the operation (through an optional), so it stays uniquely held.
        var batch: [Message<Metadata>]? = consume input
        return await withTaskCancellationHandler {
            await self.processBatch(batch.take()!)
        } onCancel: {
            cancellation.raise()
        }
    }

    @inlinable
    mutating func processBatch(_ input: consuming [Message<Metadata>]) async -> [Message<Metadata>] {
        // The batch is this stage's own: handlers change its messages in place, without a copy.
        var messages = input
        let cancellation = self.cancellation
        self.pending -= messages.count
        // Read once: `self` may change across the handler's suspension points, so every use of
        // a property in the loop would otherwise be reloaded (and retained) per message.
        let runtime = self.runtime
        let handler = self.handler
        let policy = runtime.policy
        let maxAttempts = policy.maxAttempts
        let routesToBatchers = self.routesToBatchers
        runtime.received(messages.count)
        var failed: [Int] = []
        var settlement = Settlement<Metadata>()
        // A retry runs the handler on the message as it arrived, so keep it while retries are
        // possible (a copy of the message, not of its payload bytes).
        let keepsOriginals = maxAttempts > 1
        let started = ContinuousClock.now
        for index in messages.indices {
            if runtime.exceedsDeliveries(messages[index]) {
                messages[index].fail(
                    PoisonMessage(
                        deliveryCount: messages[index].metadata.deliveryCount ?? 0,
                        maxDeliveries: policy.maxDeliveries ?? 0
                    )
                )
            } else {
                let original = keepsOriginals ? messages[index] : nil
                var attempts = messages[index].attempts
                while true {
                    attempts += 1
                    messages[index].attempts = attempts
                    do {
                        switch handler {
                        case .sync(let handle): try handle(&messages[index])
                        case .async(let handle): try await handle(&messages[index])
                        }
                    } catch {
                        messages[index].fail(error)
                    }
                    if cancellation.isRaised {
                        // The pipeline is being torn down (deadline passed, or cancelled): what
                        // is not settled yet stays unacknowledged for the broker.
                        runtime.settle(settlement)
                        return []
                    }
                    guard let failure = messages[index].failure, failure.disposition == nil, attempts < maxAttempts, let retry = policy.retry else { break }
                    runtime.retried()
                    do {
                        try await runtime.clock.sleep(for: retry.delay(afterAttempt: attempts, using: &self.random))
                    } catch {
                        runtime.settle(settlement)
                        return []
                    }
                    messages[index] = original!
                }
            }
            if routesToBatchers, !messages[index].isFailed, let name = messages[index].batcher,
                !runtime.batcherNames.contains(name)
            {
                messages[index].fail(UnknownBatcher(name: name, known: runtime.batcherNames))
            }
            if messages[index].isFailed {
                failed.append(index)
                settlement.failed.append((messages[index], runtime.disposition(of: messages[index])))
            }
        }
        if !messages.isEmpty {
            self.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)) / Int64(messages.count))
        }
        if !failed.isEmpty {
            var kept: [Message<Metadata>] = []
            kept.reserveCapacity(messages.count - failed.count)
            var next = 0
            for index in messages.indices {
                if next < failed.count && failed[next] == index {
                    next += 1
                } else {
                    kept.append(messages[index])
                }
            }
            messages = kept
        }
        if routesToBatchers {
            runtime.settle(settlement)
            return messages
        }
        settlement.acknowledged = messages
        runtime.settle(settlement)
        return []
    }
}

/// What both processor stage shapes share: demand asked by hand within the rate limit.
@usableFromInline
protocol ProcessorStageShape: Stage where Input == Message<Source.Metadata>, Info == ProcessorInfo {
    associatedtype Source: PipelineSource
    var core: ProcessorCore<Source> { get set }
}

extension ProcessorStageShape {
    @inlinable
    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.core.handle = { handle.send(.tokens) }
    }

    @inlinable
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

    @inlinable
    init(core: ProcessorCore<Source>) { self.core = core }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) async {
        let forward = await self.core.process(events)
        if !forward.isEmpty { context.emit(forward) }
        self.core.requestDemand(&context)
    }
}

/// A processor that settles its messages itself (the pipeline has no batcher).
@usableFromInline
struct TerminalProcessorStage<Source: PipelineSource>: Consumer, ProcessorStageShape {
    @usableFromInline
    typealias Input = Message<Source.Metadata>
    @usableFromInline
    typealias Info = ProcessorInfo

    @usableFromInline
    var core: ProcessorCore<Source>

    @inlinable
    init(core: ProcessorCore<Source>) { self.core = core }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        _ = await self.core.process(events)
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
