//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Metrics

/// Information a processor receives.
enum ProcessorInfo: Sendable {
    /// Rate-limit tokens may be available again.
    case tokens
}

/// The work of one processor, shared by its two stage shapes (with and without batchers).
///
/// A processor asks for its demand by hand: like automatic demand (ask `maxDemand`, re-ask
/// when pending falls to `minDemand`), but only as far as the rate limiter grants tokens.
struct ProcessorCore<Source: PipelineSource> {
    typealias Metadata = Source.Metadata

    let runtime: PipelineRuntime<Source>
    let handler: @Sendable (inout Message<Metadata>) async throws -> Void
    let maxDemand: Int
    let minDemand: Int
    let routesToBatchers: Bool
    let pendingGauge: Gauge
    let latency: Metrics.Timer
    var handle: (@Sendable () -> Void)?
    var subscription: SubscriptionID?
    var pending = 0
    var waitingForTokens = false
    var random = SystemRandomNumberGenerator()

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

    mutating func tokensMayBeAvailable<Output>(_ context: inout StageContext<Output>) {
        self.waitingForTokens = false
        self.requestDemand(&context)
    }

    /// Runs the handler on each message (with retries); returns the messages to pass on to
    /// batchers, and settles the rest.
    mutating func process(_ messages: [Message<Metadata>]) async -> [Message<Metadata>] {
        self.pending -= messages.count
        self.runtime.received(messages.count)
        var forward: [Message<Metadata>] = []
        if self.routesToBatchers { forward.reserveCapacity(messages.count) }
        var settlement = Settlement<Metadata>()
        let started = ContinuousClock.now
        for original in messages {
            var message = original
            if self.runtime.exceedsDeliveries(message) {
                message.fail(
                    PoisonMessage(deliveryCount: message.metadata.deliveryCount ?? 0, maxDeliveries: self.runtime.policy.maxDeliveries ?? 0)
                )
                settlement.failed.append((message, self.runtime.policy.disposition))
                continue
            }
            var abandoned = false
            while true {
                message.attempts += 1
                do {
                    try await self.handler(&message)
                } catch {
                    message.fail(error)
                }
                if Task.isCancelled {
                    // The pipeline is being torn down (deadline passed, or cancelled): whatever
                    // is not settled yet stays unacknowledged for the broker to deliver again.
                    self.runtime.settle(settlement)
                    return []
                }
                guard let failure = message.failure else { break }
                guard failure.disposition == nil, message.attempts < self.runtime.policy.maxAttempts,
                    let retry = self.runtime.policy.retry
                else { break }
                self.runtime.retried()
                do {
                    try await self.runtime.clock.sleep(for: retry.delay(afterAttempt: message.attempts, using: &self.random))
                } catch {
                    // Cancelled while waiting: the stage is being torn down. Leave the message
                    // unsettled so the broker delivers it again.
                    abandoned = true
                    break
                }
                let attempts = message.attempts
                message = original
                message.attempts = attempts
            }
            if abandoned { continue }
            if message.isFailed {
                settlement.failed.append((message, self.runtime.disposition(of: message)))
            } else if self.routesToBatchers {
                if let name = message.batcher, !self.runtime.batcherNames.contains(name) {
                    message.fail(UnknownBatcher(name: name, known: self.runtime.batcherNames))
                    settlement.failed.append((message, self.runtime.disposition(of: message)))
                } else {
                    forward.append(message)
                }
            } else {
                settlement.acknowledged.append(message)
            }
        }
        if !messages.isEmpty {
            self.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)) / Int64(messages.count))
        }
        self.runtime.settle(settlement)
        return forward
    }
}

/// A processor whose messages go on to batchers.
struct ProcessorStage<Source: PipelineSource>: ProducerConsumer {
    typealias Input = Message<Source.Metadata>
    typealias Output = Message<Source.Metadata>
    typealias Info = ProcessorInfo

    var core: ProcessorCore<Source>

    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.core.handle = { handle.send(.tokens) }
    }

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Output>) -> DemandMode {
        self.core.subscription = subscription.id
        self.core.requestDemand(&context)
        return .manual
    }

    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) async {
        let forward = await self.core.process(events)
        if !forward.isEmpty { context.emit(forward) }
        self.core.requestDemand(&context)
    }

    mutating func handleInfo(_ info: ProcessorInfo, context: inout StageContext<Output>) {
        self.core.tokensMayBeAvailable(&context)
    }
}

/// A processor that settles its messages itself (the pipeline has no batcher).
struct TerminalProcessorStage<Source: PipelineSource>: Consumer {
    typealias Input = Message<Source.Metadata>
    typealias Info = ProcessorInfo

    var core: ProcessorCore<Source>

    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Never>) {
        self.core.handle = { handle.send(.tokens) }
    }

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
        self.core.subscription = subscription.id
        self.core.requestDemand(&context)
        return .manual
    }

    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        _ = await self.core.process(events)
        self.core.requestDemand(&context)
    }

    mutating func handleInfo(_ info: ProcessorInfo, context: inout StageContext<Never>) {
        self.core.tokensMayBeAvailable(&context)
    }
}
