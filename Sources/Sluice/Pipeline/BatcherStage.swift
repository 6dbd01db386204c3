//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Metrics

/// A batch on its way from a batcher to a batch processor.
@usableFromInline
struct Batch<Metadata: Sendable>: Sendable {
    @usableFromInline
    var key: String?
    @usableFromInline
    var messages: [Message<Metadata>]

    @inlinable
    init(key: String?, messages: [Message<Metadata>]) {
        self.key = key
        self.messages = messages
    }
}

/// Information a batcher receives.
@usableFromInline
enum BatcherInfo: Sendable {
    /// The batch timer fired.
    case timer(generation: Int)
}

/// Groups messages from every processor into batches by key; a batch leaves when it is full or
/// its timeout passed. When every processor has ended it flushes what it holds and ends.
@usableFromInline
struct BatcherStage<Source: PipelineSource>: ProducerConsumer {
    @usableFromInline
    typealias Metadata = Source.Metadata
    @usableFromInline
    typealias Input = Message<Metadata>
    @usableFromInline
    typealias Output = Batch<Metadata>
    @usableFromInline
    typealias Info = BatcherInfo

    @usableFromInline
    struct Pending {
        @usableFromInline
        var messages: [Message<Metadata>] = []
        @usableFromInline
        var deadline: Duration

        @inlinable
        init(messages: [Message<Metadata>] = [], deadline: Duration) {
            self.messages = messages
            self.deadline = deadline
        }
    }

    @usableFromInline
    let runtime: PipelineRuntime<Source>
    @usableFromInline
    let size: Int
    @usableFromInline
    let timeout: Duration
    @usableFromInline
    let key: (@Sendable (Message<Metadata>) -> String?)?
    @usableFromInline
    var handle: StageHandle<Self>?
    /// The batch without a key (the common case) kept apart from the keyed ones.
    @usableFromInline
    var unkeyed: Pending?
    @usableFromInline
    var keyed: [String: Pending] = [:]
    /// The processors' subscriptions (handleCancel also reports the batch processors', which
    /// subscribe to this stage).
    @usableFromInline
    var upstreams: Set<SubscriptionID> = []
    /// The batch timer, scheduled on the run's timer loop.
    @usableFromInline
    var timer: PipelineTimers.Token?
    @usableFromInline
    var timerDeadline: Duration?
    @usableFromInline
    var timerGeneration = 0

    @usableFromInline
    init(runtime: PipelineRuntime<Source>, batcher: Batcher<Metadata>) {
        self.runtime = runtime
        self.size = batcher.size
        self.timeout = batcher.timeout
        self.key = batcher.key
    }

    @usableFromInline
    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.handle = handle
    }

    @usableFromInline
    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Output>) -> DemandMode {
        self.upstreams.insert(subscription.id)
        return subscription.demand
    }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Output>) {
        if self.key == nil, !events.contains(where: { $0.batchKey != nil }) {
            self.batchUnkeyed(consume events, context: &context)
            return
        }
        var events = consume events
        var now: Duration?
        // Taken out front first by moving (reversed once, then popped), not copied.
        events.reverseMoving()
        while let message = events.popLast() {
            let key = message.batchKey ?? self.key?(message)
            if let key {
                // The key is hashed once per message (twice when it opens a batch): the batch is
                // then reached through its index.
                var index = self.keyed.index(forKey: key)
                if index == nil {
                    self.keyed[key] = self.openBatch(now: &now, reserving: false)
                    index = self.keyed.index(forKey: key)
                }
                self.keyed.values[index!].messages.append(message)
                if self.keyed.values[index!].messages.count >= self.size {
                    context.emit(Batch(key: key, messages: self.keyed.remove(at: index!).value.messages))
                }
            } else {
                if self.unkeyed == nil { self.unkeyed = self.openBatch(now: &now, reserving: true) }
                self.unkeyed!.messages.append(message)
                if self.unkeyed!.messages.count >= self.size {
                    context.emit(Batch(key: nil, messages: self.unkeyed.take()!.messages))
                }
            }
        }
    }

    /// Adds messages without a batch key to the common batch, cutting full batches off by moving
    /// whole runs of messages.
    @inlinable
    mutating func batchUnkeyed(_ events: consuming [Input], context: inout StageContext<Output>) {
        let events = consume events
        guard !events.isEmpty else { return }
        var now: Duration?
        let room = self.size - (self.unkeyed?.messages.count ?? 0)
        if events.count < room {
            // Not reserved: the first run of messages taken becomes the batch's array.
            if self.unkeyed == nil { self.unkeyed = self.openBatch(now: &now, reserving: false) }
            self.unkeyed!.messages.appendMoving(events)
            return
        }
        // The first run completes the open batch (or is a batch of its own), the runs after it
        // are whole batches, and a shorter last one opens the next batch.
        var runs = events.cutMoving(first: room, size: self.size)
        let first = runs.popLast()!
        if self.unkeyed != nil {
            self.unkeyed!.messages.appendMoving(first)
            context.emit(Batch(key: nil, messages: self.unkeyed.take()!.messages))
        } else {
            context.emit(Batch(key: nil, messages: first))
        }
        while let run = runs.popLast() {
            if run.count == self.size {
                context.emit(Batch(key: nil, messages: run))
            } else {
                self.unkeyed = self.openBatch(now: &now, reserving: false)
                self.unkeyed!.messages = run
            }
        }
    }

    /// A new, empty batch whose timeout runs from now, with the batch timer armed for it. The
    /// clock is read once per call of the caller (`now`), not once per batch.
    @inlinable
    mutating func openBatch(now: inout Duration?, reserving: Bool) -> Pending {
        let current = now ?? self.runtime.clock.now
        now = current
        let deadline = current + self.timeout
        self.armTimer(deadline)
        var pending = Pending(deadline: deadline)
        if reserving { pending.messages.reserveCapacity(self.size) }
        return pending
    }

    @inlinable
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

    @usableFromInline
    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Output>) {
        guard self.upstreams.remove(subscription) != nil, self.upstreams.isEmpty else { return }
        let reason = reason.reason
        // Every processor ended: flush what is held and end once it was handed over.
        if let pending = self.unkeyed { context.emit(Batch(key: nil, messages: pending.messages)) }
        for (key, pending) in self.keyed { context.emit(Batch(key: key, messages: pending.messages)) }
        self.unkeyed = nil
        self.keyed = [:]
        context.stop(reason.isNormalOrShutdown ? .normal : reason)
    }

    @usableFromInline
    mutating func terminate(reason: StopReason) async {
        if let timer = self.timer { self.runtime.timers.cancel(timer) }
    }

    /// Makes sure a timer fires no later than `deadline`.
    @inlinable
    mutating func armTimer(_ deadline: Duration) {
        if let current = self.timerDeadline, current <= deadline { return }
        if let timer = self.timer { self.runtime.timers.cancel(timer) }
        self.timerGeneration += 1
        self.timerDeadline = deadline
        guard let handle = self.handle else { return }
        let generation = self.timerGeneration
        self.timer = self.runtime.timers.schedule(at: deadline) { handle.send(.timer(generation: generation)) }
    }
}

/// Runs a batcher's handler on each batch it receives, with retries, then settles every
/// message of the batch.
@usableFromInline
struct BatchProcessorStage<Source: PipelineSource>: Consumer {
    // Same typealias header as BatcherStage: each Stage conformance names its own Input (and
    // Output, Info).
    @usableFromInline
    typealias Metadata = Source.Metadata
    @usableFromInline
    typealias Input = Batch<Metadata>

    @usableFromInline
    let runtime: PipelineRuntime<Source>
    @usableFromInline
    let handler: nonisolated(nonsending) @Sendable (inout [Message<Metadata>]) async throws -> Void
    @usableFromInline
    let sizes: Recorder
    @usableFromInline
    let latency: Metrics.Timer
    @usableFromInline
    var random = SystemRandomNumberGenerator()

    @usableFromInline
    init(runtime: PipelineRuntime<Source>, batcher: Batcher<Metadata>, index: Int) {
        self.runtime = runtime
        self.handler = batcher.handler
        let dimensions = [("pipeline", runtime.name), ("stage", "batch_processor_\(batcher.name)_\(index)")]
        self.sizes = Recorder(label: SluiceMetricLabel.batchSize, dimensions: dimensions, factory: runtime.metricsFactory)
        self.latency = Metrics.Timer(label: SluiceMetricLabel.handlerLatency, dimensions: dimensions, factory: runtime.metricsFactory)
    }

    @inlinable
    mutating func handleEvents(_ events: consuming [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        for batch in events {
            self.sizes.record(batch.messages.count)
            var attempt = 0
            // `batch.messages` stays as it arrived: every attempt starts from it.
            var messages = batch.messages
            var batchError: (any Error)?
            while true {
                attempt += 1
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
                messages = batch.messages
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
