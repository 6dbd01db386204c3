//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceConnector
import Synchronization

/// The consumer connection a ``RabbitMQSession``'s loop owns: connects, declares and
/// consumes, reads deliveries every turn (also at zero demand, so heartbeats flow), sends
/// settlements, and reconnects with jittered backoff after a lost connection or channel.
///
/// Lives on the loop's thread only (not `Sendable`).
final class RabbitMQConsumerDriver: ConnectionDriver {
    /// Tags of one channel generation to settle.
    struct SettleBatch: Sendable {
        var acknowledged: [UInt64] = []
        var rejected: [(tag: UInt64, requeue: Bool)] = []
        /// The payload bytes of the settled deliveries.
        var bytes = 0
        var count: Int { self.acknowledged.count + self.rejected.count }

        /// Adds the acknowledgement of `tag` (`requeue` `nil`), or its rejection.
        mutating func add(_ tag: UInt64, bytes: Int, requeue: Bool? = nil) {
            if let requeue { self.rejected.append((tag, requeue)) } else { self.acknowledged.append(tag) }
            self.bytes += bytes
        }

        /// Adds the settlements of `other`.
        mutating func merge(_ other: SettleBatch) {
            self.acknowledged += other.acknowledged
            self.rejected += other.rejected
            self.bytes += other.bytes
        }
    }

    /// How many acknowledgements go out together as one `multiple` ack on a channel with
    /// `prefetch`: half the prefetch (as a raw consumer acknowledging every 500 of 1000 does),
    /// so that the broker handles two frames per window and half the window keeps flowing.
    static func coalescing(prefetch: Int) -> Int { max(1, prefetch / 2) }

    /// How long deliveries that stream in are gathered at most before the stage gets them
    /// (see ``DeliveryHandOff``).
    static let handOffLinger = Duration.milliseconds(1)

    enum Command: Sendable {
        /// The first connection; its outcome is reported.
        case start(@Sendable (Result<Void, RabbitMQError>) -> Void)
        /// Settlements wait in the session that are due now (see ``PendingSettlements``).
        case settlementsDue
        /// Drain: cancel the consumer.
        case cancel
        /// Send the deferred acknowledgements now (before closing).
        case flush
        /// Count the queue's ready messages (``RabbitMQSource/lag()``).
        case readyCount(@Sendable (Result<Int, RabbitMQError>) -> Void)
    }

    private let configuration: RabbitMQConfiguration
    private let prefetch: Int
    private let logger: Logger
    private let box: SessionBox
    private var connection: AMQPConnection?
    private var consumerTag = ""
    private var generation: UInt64 = 0
    private var tracker = AckTracker(generation: 0)
    private var reconnect: Reconnect<SystemRandomNumberGenerator>
    private var started = false
    private var cancelled = false
    /// How many deliveries one turn reads at most before it lets commands (settlements) in.
    private let readsPerTurn: Int
    /// Gathers the deliveries of several reads while they stream in.
    private var handOff: DeliveryHandOff<Message<RabbitMQMetadata>>

    init(configuration: RabbitMQConfiguration, prefetch: Int, logger: Logger, session: SessionBox) {
        self.configuration = configuration
        self.prefetch = prefetch
        self.logger = logger
        self.box = session
        self.reconnect = Reconnect(backoff: configuration.reconnectSchedule)
        self.readsPerTurn = max(1, min(prefetch, 500))
        self.handOff = DeliveryHandOff(linger: Self.handOffLinger, target: prefetch / 4)
    }

    private var session: RabbitMQSession? { self.box.value }

    // MARK: ConnectionDriver

    func handle(_ command: Command, on loop: ConnectionLoop<RabbitMQConsumerDriver>) {
        switch command {
        case .start(let report):
            do throws(RabbitMQError) {
                try self.connect()
                self.started = true
                report(.success(()))
            } catch {
                report(.failure(error))
            }
        case .settlementsDue:
            self.settlePending()
        case .cancel:
            self.cancel()
        case .flush:
            self.settlePending()
            self.send(self.tracker.flushDeferred())
        case .readyCount(let report):
            report(self.readyCount())
        }
    }

    func service(on loop: ConnectionLoop<RabbitMQConsumerDriver>) -> ServiceOutcome {
        guard self.started else { return .wait(socket: nil, timeout: nil) }
        self.settlePending()
        guard let connection = self.connection else {
            guard !self.cancelled else { return .wait(socket: nil, timeout: nil) }
            return self.reconnectAfterBackoff(on: loop)
        }
        var messages: [Message<RabbitMQMetadata>] = []
        var more = false
        do throws(RabbitMQError) {
            reading: while true {
                guard messages.count < self.readsPerTurn else {
                    more = true
                    break
                }
                switch try connection.next() {
                case .idle:
                    break reading
                case .delivery(let delivery):
                    messages.append(self.message(delivery))
                case .consumerCancelled:
                    throw RabbitMQError(.channelClosed, "the broker cancelled the consumer of queue \(self.configuration.queue) (was it deleted?)")
                case .confirm, .returned:
                    continue
                }
            }
        } catch {
            self.session?.arrived(messages)
            self.lost(error)
            return .again
        }
        let now = ContinuousClock.now
        self.session?.arrived(self.handOff.read(messages, now: now))
        if let since = self.tracker.deferredSince, now - since >= self.configuration.ackDelay {
            self.send(self.tracker.flushDeferred())
            self.session?.settlementsHeld(self.tracker.unsentCount)
        }
        // A send that failed gave the connection up: reconnect on the next turn rather than
        // wait on the socket of the closed one.
        if more || self.connection == nil { return .again }
        // Wake at least every half heartbeat (librabbitmq sends and checks heartbeats inside
        // its reads), and when deferred acknowledgements fall due.
        var timeout = connection.heartbeat > 0 ? Duration.milliseconds(connection.heartbeat * 500) : Duration.seconds(1)
        // Settlements below the wake threshold do not wake this thread: while deliveries are
        // unsettled, turn at least every ack delay to take them.
        if self.configuration.ackDelay > .zero, self.session?.awaitsSettlements == true { timeout = min(timeout, self.configuration.ackDelay) }
        if let since = self.tracker.deferredSince {
            timeout = min(timeout, max(.milliseconds(1), since + self.configuration.ackDelay - now))
        }
        if let deadline = self.handOff.deadline { timeout = min(timeout, max(.zero, deadline - now)) }
        return .wait(socket: connection.socket, timeout: timeout)
    }

    func close() {
        for (generation, batch) in self.session?.closeSettlements() ?? [] { self.settle(batch, generation: generation, at: nil) }
        self.send(self.tracker.flushDeferred())
        // Closing the channel requeues every delivery not acknowledged.
        self.connection = nil
    }

    // MARK: Connecting

    /// Connects, declares the topology, sets the prefetch and consumes, on a new channel
    /// generation.
    private func connect() throws(RabbitMQError) {
        let connection = try AMQPConnection.open(self.configuration)
        try connection.declare(self.configuration)
        let tag = try connection.consume(self.configuration, prefetch: self.prefetch)
        self.connection = connection
        self.consumerTag = tag
        self.generation += 1
        // Acknowledgements go out as a `multiple` ack per half of the prefetch (or after the
        // ack delay): two frames per window for the broker, half of it kept flowing.
        self.tracker = AckTracker(generation: self.generation, coalescing: Self.coalescing(prefetch: self.prefetch))
        if self.reconnect.connected() || self.generation > 1 {
            self.session?.counters.reconnectCount.add(1, ordering: .relaxed)
            self.logger.info("reconnected to RabbitMQ; topology declared again", metadata: [RabbitMQLogKey.generation: "\(self.generation)"])
        }
    }

    private func reconnectAfterBackoff(on loop: ConnectionLoop<RabbitMQConsumerDriver>) -> ServiceOutcome {
        do throws(RabbitMQError) {
            try self.connect()
            return .again
        } catch {
            let wait = self.reconnect.failed()
            if self.reconnect.shouldLog {
                self.logger.warning(
                    "cannot reconnect to RabbitMQ; retrying",
                    metadata: [RabbitMQLogKey.error: "\(error)", RabbitMQLogKey.attempt: "\(self.reconnect.failures)"]
                )
            }
            return loop.pause(for: wait) ? .again : .wait(socket: nil, timeout: nil)
        }
    }

    /// The connection or channel is gone: log why (with what to change for a consumer
    /// timeout), drop the connection, and let the next turn reconnect.
    private func lost(_ error: RabbitMQError) {
        let generation = self.generation
        self.connection = nil
        // Deliveries of the closed channel: the broker requeued them.
        _ = self.handOff.takeAll()
        if self.tracker.unsentCount > 0 {
            self.session?.unsent(self.tracker.unsentCount, generation: generation, reason: "the channel closed while they waited to be coalesced")
        }
        self.tracker = AckTracker(generation: 0)
        self.session?.settlementsHeld(0)
        if error.isConsumerTimeout {
            self.logger.error(
                """
                RabbitMQ closed the channel because a delivery was not acknowledged within its consumer_timeout; \
                raise consumer_timeout (rabbitmq.conf, or the queue argument x-consumer-timeout) or make handlers \
                and batches finish sooner (lower maxDemand, batch size or timeout); reconnecting
                """,
                metadata: [RabbitMQLogKey.error: "\(error)", RabbitMQLogKey.generation: "\(generation)"]
            )
        } else if error.code == .preconditionFailed {
            // A 406 channel close while consuming answers a settlement: an unknown delivery tag
            // (or one settled twice).
            self.session?.refused(error, generation: generation)
        } else {
            self.logger.warning(
                "lost the RabbitMQ connection or channel; reconnecting",
                metadata: [RabbitMQLogKey.error: "\(error)", RabbitMQLogKey.generation: "\(generation)"]
            )
        }
        self.session?.channelClosed(generation: generation)
        if self.cancelled { self.session?.finished() }
    }

    // MARK: Settling

    /// Settles what waits in the session.
    private func settlePending() {
        guard let (batches, since) = self.session?.takeSettlements() else { return }
        for (generation, batch) in batches { self.settle(batch, generation: generation, at: since) }
        self.session?.settlementsHeld(self.tracker.unsentCount)
    }

    /// Settles `batch` of `generation`, made at `instant` (`nil`: now).
    private func settle(_ batch: SettleBatch, generation: UInt64, at instant: ContinuousClock.Instant?) {
        guard generation == self.generation, self.connection != nil else {
            self.session?.stale(batch.count, generation: generation, current: self.generation)
            return
        }
        var frames = self.tracker.settle(acknowledged: batch.acknowledged, rejected: batch.rejected, now: instant ?? .now)
        if self.tracker.deferredCount >= max(1, self.prefetch / 2) { frames += self.tracker.flushDeferred() }
        self.send(frames)
    }

    private func send(_ frames: [AckTracker.Frame]) {
        guard !frames.isEmpty else { return }
        guard let connection = self.connection else {
            self.session?.unsent(frames.count, generation: self.generation, reason: "the channel is closed")
            return
        }
        do throws(RabbitMQError) {
            for frame in frames {
                switch frame {
                case .ack(let tag, let multiple): try connection.ack(tag, multiple: multiple)
                case .reject(let tag, let requeue): try connection.reject(tag, requeue: requeue)
                }
            }
        } catch {
            self.session?.unsent(frames.count, generation: self.generation, reason: "\(error)")
            self.lost(error)
        }
    }

    // MARK: Drain

    private func cancel() {
        guard !self.cancelled else { return }
        self.cancelled = true
        guard let connection = self.connection else {
            self.session?.finished()
            return
        }
        var messages = self.handOff.takeAll()
        do throws(RabbitMQError) {
            try connection.cancel(consumerTag: self.consumerTag)
            // Deliveries that came before cancel-ok were kept by librabbitmq: read them.
            while case .delivery(let delivery) = try connection.next() { messages.append(self.message(delivery)) }
        } catch {
            self.session?.arrived(messages)
            self.lost(error)
            return
        }
        self.session?.arrived(messages)
        self.session?.finished()
    }

    // MARK: Lag

    /// The queue's ready messages: a passive `queue.declare` on the consumer's channel
    /// (deliveries that arrive meanwhile stay queued in librabbitmq for the next read). A
    /// failure gives the channel up, as any failed call does, and the next turn reconnects.
    private func readyCount() -> Result<Int, RabbitMQError> {
        guard let connection = self.connection else {
            return .failure(RabbitMQError(.connectionLost, "not connected to RabbitMQ (reconnecting)"))
        }
        do throws(RabbitMQError) {
            return .success(try connection.readyCount(self.configuration.queue))
        } catch {
            self.lost(error)
            return .failure(error)
        }
    }

    private func message(_ delivery: AMQPDelivery) -> Message<RabbitMQMetadata> {
        Message(
            payload: delivery.body,
            metadata: RabbitMQMetadata(
                deliveryTag: delivery.deliveryTag,
                channelGeneration: self.generation,
                redelivered: delivery.redelivered,
                exchange: delivery.exchange,
                routingKey: delivery.routingKey,
                headers: delivery.headers,
                contentType: delivery.contentType,
                messageID: delivery.messageID,
                timestamp: delivery.timestamp
            )
        )
    }
}

@available(*, unavailable)
extension RabbitMQConsumerDriver: Sendable {}
