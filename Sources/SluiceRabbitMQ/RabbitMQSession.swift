//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CoreMetrics
import Logging
import Sluice
import SluiceConnector
import Synchronization

/// One running source: its connection loop (which owns every librabbitmq call), the
/// deliveries waiting for demand, and the stage they go to.
final class RabbitMQSession: Sendable {
    let configuration: RabbitMQConfiguration
    let logger: Logger
    /// The prefetch in effect (explicit, or the pipeline's window).
    let prefetch: Int
    let loop: ConnectionLoop<RabbitMQConsumerDriver>
    let counters = RabbitMQCounters()

    private let deliveries: Mutex<DeliveryBuffer<Message<RabbitMQMetadata>>>
    /// Settlements waiting for the connection's thread.
    private let pending: Mutex<PendingSettlements>
    private let stage = Mutex<StageHandle<RabbitMQSourceStage>?>(nil)
    private let staleMetric: Counter
    private let unsentMetric: Counter
    private let refusedMetric: Counter

    init(configuration: RabbitMQConfiguration, prefetch: Int, logger: Logger) {
        var logger = logger
        logger[metadataKey: RabbitMQLogKey.address] = "\(configuration.address)"
        logger[metadataKey: RabbitMQLogKey.queue] = "\(configuration.queue)"
        self.configuration = configuration
        self.prefetch = prefetch
        self.logger = logger
        self.deliveries = Mutex(DeliveryBuffer(prefetch: prefetch))
        self.pending = Mutex(
            PendingSettlements(threshold: RabbitMQConsumerDriver.coalescing(prefetch: prefetch), immediate: configuration.ackDelay == .zero)
        )
        let driverLogger = logger
        let dimensions = [("queue", configuration.queue)]
        self.staleMetric = Counter(label: "sluice_amqp_stale_settlements", dimensions: dimensions)
        self.unsentMetric = Counter(label: "sluice_amqp_unsent_settlements", dimensions: dimensions)
        self.refusedMetric = Counter(label: "sluice_amqp_refused_settlements", dimensions: dimensions)
        let box = SessionBox()
        self.loop = ConnectionLoop(name: "sluice-amqp") {
            RabbitMQConsumerDriver(configuration: configuration, prefetch: prefetch, logger: driverLogger, session: box)
        }
        box.session.withLock { $0 = self }
    }

    // MARK: Start and stop

    /// Connects, declares the topology and starts consuming; throws what the broker refused.
    func start() async throws(RabbitMQError) {
        let result: Result<Void, RabbitMQError> = await withCheckedContinuation { continuation in
            let queued = self.loop.enqueue(.start { continuation.resume(returning: $0) })
            if !queued { continuation.resume(returning: .failure(RabbitMQError(.shutDown, "the RabbitMQ source was shut down"))) }
        }
        try result.get()
    }

    /// Sends the settlements still queued and deferred, then closes the channel and the
    /// connection (the broker requeues every delivery left unacknowledged).
    func shutdown() async {
        self.loop.enqueue(.flush)
        let stopTimeout = self.configuration.connectTimeout * 2 + self.configuration.maximumReconnectBackoff
        // A cancelled pipeline shuts its source down from a cancelled task: wait in a task of
        // its own, so that the wait is not cut short and the channel is closed when this returns.
        let loop = self.loop
        if !(await Task.detached { await loop.stopAndWait(timeout: stopTimeout) }.value) {
            self.logger.warning("the RabbitMQ connection did not close within \(stopTimeout); its thread ends when librabbitmq returns")
        }
    }

    // MARK: The stage's side

    func attach(_ handle: StageHandle<RabbitMQSourceStage>) {
        self.stage.withLock { $0 = handle }
    }

    func request(_ demand: Int) -> [Message<RabbitMQMetadata>] {
        self.deliveries.withLock { $0.request(demand) }
    }

    /// What the stage can emit after an `arrived` note, and whether nothing more will come.
    func takeDemanded() -> (messages: [Message<RabbitMQMetadata>], drained: Bool) {
        self.deliveries.withLock { buffer in (buffer.takeDemanded(), buffer.isDrained) }
    }

    /// Whether the consumer was cancelled and every delivery was emitted.
    var isDrained: Bool { self.deliveries.withLock { $0.isDrained } }

    /// Deliveries of the current channel not settled yet (at most the prefetch).
    var unsettled: Int { self.deliveries.withLock { $0.unsettled } }

    /// Drain: `basic.cancel`; deliveries that arrived are still handed out as asked.
    func drain() {
        if !self.loop.enqueue(.cancel) { self.finished() }
    }

    /// The stage ended: deliveries it never emitted go back to the queue.
    func stageEnded() {
        let unemitted = self.deliveries.withLock { buffer in
            _ = buffer.finish()
            return buffer.takeAll()
        }
        guard !unemitted.isEmpty else { return }
        self.settle(Settlement(failed: unemitted.map { ($0, FailureDisposition.requeue) }))
    }

    // MARK: Settling (any thread)

    /// Queues a settlement for the connection's thread, waking it only when something is due
    /// (see ``PendingSettlements``); never blocks.
    func settle(_ settlement: Settlement<RabbitMQMetadata>) {
        guard !settlement.isEmpty else { return }
        var batches: [UInt64: RabbitMQConsumerDriver.SettleBatch] = [:]
        for message in settlement.acknowledged {
            let metadata = message.metadata
            batches[metadata.channelGeneration, default: .init()].add(metadata.deliveryTag, bytes: message.payload.count)
        }
        for (message, disposition) in settlement.failed {
            let metadata = message.metadata
            let bytes = message.payload.count
            switch disposition {
            case .requeue: batches[metadata.channelGeneration, default: .init()].add(metadata.deliveryTag, bytes: bytes, requeue: true)
            case .deadLetter: batches[metadata.channelGeneration, default: .init()].add(metadata.deliveryTag, bytes: bytes, requeue: false)
            default: batches[metadata.channelGeneration, default: .init()].add(metadata.deliveryTag, bytes: bytes)
            }
        }
        // Their places in the prefetch window are free (the acknowledgements may still be
        // coalescing, so the broker's count can lag behind; never the other way round).
        self.deliveries.withLock { buffer in
            for (generation, batch) in batches { buffer.settled(count: batch.count, bytes: batch.bytes, generation: generation) }
        }
        switch self.pending.withLock({ $0.add(batches, now: .now) }) {
        case .none:
            break
        case .wakeLoop:
            // Refused once the loop is stopping: its driver's close() still takes them.
            self.loop.enqueue(.settlementsDue)
        case .closed:
            for (generation, batch) in batches {
                self.unsent(batch.count, generation: generation, reason: "the source was already shut down")
            }
        }
    }

    // MARK: The connection's side (its thread)

    /// The settlements waiting, oldest generation first, and when the oldest was made; `nil`
    /// when none wait.
    func takeSettlements() -> (batches: [(generation: UInt64, batch: RabbitMQConsumerDriver.SettleBatch)], since: ContinuousClock.Instant?)? {
        self.pending.withLock { $0.isEmpty ? nil : $0.take() }
    }

    /// The connection's thread holds `count` acknowledgements, not sent yet.
    func settlementsHeld(_ count: Int) {
        self.pending.withLock { $0.held(count) }
    }

    /// The connection's thread ends: the settlements still waiting (later ones are counted
    /// unsent).
    func closeSettlements() -> [(generation: UInt64, batch: RabbitMQConsumerDriver.SettleBatch)] {
        self.pending.withLock { $0.close() }
    }

    /// Whether settlements may come that do not wake the connection's thread: deliveries are
    /// unsettled, or settlements wait.
    var awaitsSettlements: Bool {
        self.deliveries.withLock { $0.unsettled > 0 } || !self.pending.withLock { $0.isEmpty }
    }

    /// Deliveries arrived.
    func arrived(_ messages: [Message<RabbitMQMetadata>]) {
        guard !messages.isEmpty else { return }
        var bytes = 0
        for message in messages { bytes += message.payload.count }
        if self.deliveries.withLock({ $0.arrived(messages, bytes: bytes) }) == .notifyStage { self.post(.arrived) }
    }

    /// The channel of `generation` closed: the broker requeued what it left unacknowledged,
    /// so its deliveries not yet emitted are dropped and the prefetch window is free for the
    /// next channel (late settlements of this one no longer count in it).
    func channelClosed(generation: UInt64) {
        let dropped = self.deliveries.withLock { $0.channelClosed(next: generation + 1) }
        if dropped > 0 {
            self.logger.debug("dropped deliveries of a closed channel (the broker requeued them)", metadata: [
                RabbitMQLogKey.count: "\(dropped)", RabbitMQLogKey.generation: "\(generation)",
            ])
        }
    }

    /// The consumer was cancelled (drain) or the connection is gone for good: nothing more
    /// arrives.
    func finished() {
        if self.deliveries.withLock({ $0.finish() }) == .notifyStage { self.post(.arrived) }
    }

    /// Settlements of an older generation than the channel's: dropped, never sent.
    func stale(_ count: Int, generation: UInt64, current: UInt64) {
        self.counters.staleCount.add(count, ordering: .relaxed)
        self.staleMetric.increment(by: Int64(count))
        self.logger.info(
            "dropped settlements of a closed channel; the broker redelivers those messages",
            metadata: [RabbitMQLogKey.count: "\(count)", RabbitMQLogKey.generation: "\(generation) (now \(current))"]
        )
    }

    // Same shape as `stale(_:generation:current:)`: each outcome has its own counter, metric,
    // log level and text (stale ones were never owed to this channel; unsent ones were), so
    // the two stay separate rather than one function switching over the outcome.
    /// Settlements that could not be sent (the connection broke before they went out).
    func unsent(_ count: Int, generation: UInt64, reason: String) {
        self.counters.unsentCount.add(count, ordering: .relaxed)
        self.unsentMetric.increment(by: Int64(count))
        self.logger.warning(
            "settlements were not sent: \(reason); the broker redelivers those messages",
            metadata: [RabbitMQLogKey.count: "\(count)", RabbitMQLogKey.generation: "\(generation)"]
        )
    }

    /// The broker refused a settlement of `generation` (an unknown or already settled
    /// delivery tag) and closed the channel with `error`: counted, and logged as an error
    /// (something settled a message twice, or one this channel never delivered).
    func refused(_ error: RabbitMQError, generation: UInt64) {
        self.counters.refusedCount.add(1, ordering: .relaxed)
        self.refusedMetric.increment()
        self.logger.error(
            """
            RabbitMQ refused a settlement and closed the channel; the messages it left unacknowledged \
            are redelivered; reconnecting
            """,
            metadata: [RabbitMQLogKey.error: "\(error)", RabbitMQLogKey.generation: "\(generation)"]
        )
    }

    private func post(_ kind: RabbitMQSourceInfo.Kind) {
        let handle = self.stage.withLock { $0 }
        handle?.send(RabbitMQSourceInfo(kind))
    }
}

/// Counts a source keeps for its tests and logs.
package final class RabbitMQCounters: Sendable {
    let staleCount = Atomic<Int>(0)
    let unsentCount = Atomic<Int>(0)
    let reconnectCount = Atomic<Int>(0)
    let refusedCount = Atomic<Int>(0)

    /// Settlements dropped because their channel had closed.
    package var stale: Int { self.staleCount.load(ordering: .relaxed) }
    /// Settlements that could not be sent.
    package var unsent: Int { self.unsentCount.load(ordering: .relaxed) }
    /// Settlements the broker refused (it closed the channel over them).
    package var refused: Int { self.refusedCount.load(ordering: .relaxed) }
    /// Channels opened after the first (reconnects).
    package var reconnects: Int { self.reconnectCount.load(ordering: .relaxed) }
}

/// The session, for its driver (made before the session finished initializing).
final class SessionBox: Sendable {
    let session = Mutex<RabbitMQSession?>(nil)
    var value: RabbitMQSession? { self.session.withLock { $0 } }
}
