//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Metrics

/// A batch on its way from a batcher to a batch processor.
struct Batch<Metadata: Sendable>: Sendable {
    var key: String?
    var messages: [Message<Metadata>]
}

/// Information a batcher receives.
enum BatcherInfo: Sendable {
    /// The batch timer fired.
    case timer(generation: Int)
}

/// Groups messages from every processor into batches by key; a batch leaves when it is full or
/// its timeout passed. When every processor has ended it flushes what it holds and ends.
struct BatcherStage<Source: PipelineSource>: ProducerConsumer {
    typealias Metadata = Source.Metadata
    typealias Input = Message<Metadata>
    typealias Output = Batch<Metadata>
    typealias Info = BatcherInfo

    private struct Pending {
        var messages: [Message<Metadata>] = []
        var deadline: Duration
    }

    let runtime: PipelineRuntime<Source>
    let size: Int
    let timeout: Duration
    let key: (@Sendable (Message<Metadata>) -> String?)?
    private var handle: StageHandle<Self>?
    /// The batch without a key (the common case) kept apart from the keyed ones.
    private var unkeyed: Pending?
    private var keyed: [String: Pending] = [:]
    private var upstreams = 0
    private var timer: Task<Void, Never>?
    private var timerDeadline: Duration?
    private var timerGeneration = 0

    init(runtime: PipelineRuntime<Source>, batcher: Batcher<Metadata>) {
        self.runtime = runtime
        self.size = batcher.size
        self.timeout = batcher.timeout
        self.key = batcher.key
    }

    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.handle = handle
    }

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Output>) -> DemandMode {
        self.upstreams += 1
        return subscription.demand
    }

    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) {
        var now: Duration?
        for message in events {
            let key = message.batchKey ?? self.key?(message)
            if let key {
                if self.keyed[key] == nil {
                    let deadline = (now ?? self.runtime.clock.now) + self.timeout
                    now = deadline - self.timeout
                    self.keyed[key] = Pending(deadline: deadline)
                    self.armTimer(deadline)
                }
                self.keyed[key]!.messages.append(message)
                if self.keyed[key]!.messages.count >= self.size {
                    context.emit(Batch(key: key, messages: self.keyed.removeValue(forKey: key)!.messages))
                }
            } else {
                if self.unkeyed == nil {
                    let deadline = (now ?? self.runtime.clock.now) + self.timeout
                    now = deadline - self.timeout
                    self.unkeyed = Pending(messages: [], deadline: deadline)
                    self.unkeyed!.messages.reserveCapacity(self.size)
                    self.armTimer(deadline)
                }
                self.unkeyed!.messages.append(message)
                if self.unkeyed!.messages.count >= self.size {
                    context.emit(Batch(key: nil, messages: self.unkeyed!.messages))
                    self.unkeyed = nil
                }
            }
        }
    }

    mutating func handleInfo(_ info: BatcherInfo, context: inout StageContext<Output>) {
        guard case .timer(let generation) = info, generation == self.timerGeneration else { return }
        self.timer = nil
        self.timerDeadline = nil
        let now = self.runtime.clock.now
        var next: Duration?
        if let pending = self.unkeyed {
            if pending.deadline <= now {
                context.emit(Batch(key: nil, messages: pending.messages))
                self.unkeyed = nil
            } else {
                next = pending.deadline
            }
        }
        for (key, pending) in self.keyed {
            if pending.deadline <= now {
                context.emit(Batch(key: key, messages: pending.messages))
                self.keyed[key] = nil
            } else {
                next = min(next ?? pending.deadline, pending.deadline)
            }
        }
        if let next { self.armTimer(next) }
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: StopReason, context: inout StageContext<Output>) {
        self.upstreams -= 1
        guard self.upstreams == 0 else { return }
        // Every processor ended: flush what is held and end once it was handed over.
        if let pending = self.unkeyed { context.emit(Batch(key: nil, messages: pending.messages)) }
        for (key, pending) in self.keyed { context.emit(Batch(key: key, messages: pending.messages)) }
        self.unkeyed = nil
        self.keyed = [:]
        context.stop(reason.isNormalOrShutdown ? .normal : reason)
    }

    mutating func terminate(reason: StopReason) async {
        self.timer?.cancel()
    }

    /// Makes sure a timer fires no later than `deadline`.
    private mutating func armTimer(_ deadline: Duration) {
        if let current = self.timerDeadline, current <= deadline { return }
        self.timer?.cancel()
        self.timerGeneration += 1
        self.timerDeadline = deadline
        guard let handle = self.handle else { return }
        let generation = self.timerGeneration
        let clock = self.runtime.clock
        self.timer = Task {
            do {
                try await clock.sleep(for: max(.zero, deadline - clock.now))
            } catch {
                return
            }
            handle.send(.timer(generation: generation))
        }
    }
}

/// Runs a batcher's handler on each batch it receives, with retries, then settles every
/// message of the batch.
struct BatchProcessorStage<Source: PipelineSource>: Consumer {
    typealias Metadata = Source.Metadata
    typealias Input = Batch<Metadata>

    let runtime: PipelineRuntime<Source>
    let handler: @Sendable (inout [Message<Metadata>]) async throws -> Void
    let sizes: Recorder
    let latency: Metrics.Timer
    var random = SystemRandomNumberGenerator()

    init(runtime: PipelineRuntime<Source>, batcher: Batcher<Metadata>, index: Int) {
        self.runtime = runtime
        self.handler = batcher.handler
        let dimensions = [("pipeline", runtime.name), ("stage", "batch_processor_\(batcher.name)_\(index)")]
        self.sizes = Recorder(label: SluiceMetricLabel.batchSize, dimensions: dimensions, factory: runtime.metricsFactory)
        self.latency = Metrics.Timer(label: SluiceMetricLabel.handlerLatency, dimensions: dimensions, factory: runtime.metricsFactory)
    }

    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        for batch in events {
            self.sizes.record(batch.messages.count)
            var attempt = 0
            var messages = batch.messages
            var batchError: (any Error)?
            while true {
                attempt += 1
                messages = batch.messages
                let started = ContinuousClock.now
                do {
                    try await self.handler(&messages)
                    batchError = nil
                    if messages.count != batch.messages.count {
                        batchError = SluiceError(
                            .invalidOption,
                            "a batch handler changed the number of messages from \(batch.messages.count) to \(messages.count); "
                                + "mark messages failed instead of removing or adding them"
                        )
                    }
                } catch {
                    batchError = error
                }
                self.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)))
                // Torn down while handling: leave the batch unsettled for redelivery.
                if Task.isCancelled { return }
                guard batchError != nil, attempt < self.runtime.policy.maxAttempts, let retry = self.runtime.policy.retry else { break }
                self.runtime.retried()
                do {
                    try await self.runtime.clock.sleep(for: retry.delay(afterAttempt: attempt, using: &self.random))
                } catch {
                    // Torn down while waiting: leave the batch unsettled for redelivery.
                    return
                }
            }
            var settlement = Settlement<Metadata>()
            if let batchError {
                for var message in batch.messages {
                    message.attempts += attempt
                    message.fail(batchError)
                    settlement.failed.append((message, self.runtime.policy.disposition))
                }
            } else if !messages.contains(where: \.isFailed) {
                settlement.acknowledged = messages
            } else {
                for message in messages {
                    if message.isFailed {
                        settlement.failed.append((message, self.runtime.disposition(of: message)))
                    } else {
                        settlement.acknowledged.append(message)
                    }
                }
            }
            self.runtime.settle(settlement)
        }
    }
}
