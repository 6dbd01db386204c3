//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule
import Logging
import Sluice
import SluiceConnector

/// The connection a ``RabbitMQSink``'s loop owns: a channel in confirm mode. Batches are
/// published at once; each completes when the broker confirmed (or refused) every message in
/// it. `mandatory` messages carry their publish sequence number as message id, so a
/// `basic.return` names the message it gives back.
///
/// Lives on the loop's thread only (not `Sendable`).
final class RabbitMQPublisherDriver: ConnectionDriver {
    /// What became of each message of a batch: `nil` confirmed, or why it failed.
    typealias Completion = @Sendable (Result<[RabbitMQError?], RabbitMQError>) -> Void

    enum Command: Sendable {
        case connect(@Sendable (Result<Void, RabbitMQError>) -> Void)
        case publish([Payload], Completion)
    }

    /// A published batch waiting for its confirms.
    private struct Pending {
        let firstSequence: UInt64
        var outcomes: [RabbitMQError?]
        var confirmed: [Bool]
        var remaining: Int
        let completion: Completion

        func contains(_ sequence: UInt64) -> Bool {
            sequence >= self.firstSequence && sequence < self.firstSequence + UInt64(self.outcomes.count)
        }
    }

    private let configuration: RabbitMQConfiguration
    private let logger: Logger
    private var connection: AMQPConnection?
    /// The next publish sequence number on the channel (confirms count from 1 per channel).
    private var nextSequence: UInt64 = 1
    /// Every sequence number at or below this one is confirmed.
    private var confirmedFloor: UInt64 = 0
    private var pending: Deque<Pending> = []
    private let route: AMQPRoute

    init(configuration: RabbitMQConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.route = AMQPRoute(exchange: configuration.publishExchange, routingKey: configuration.effectiveRoutingKey)
    }

    // MARK: ConnectionDriver

    func handle(_ command: Command, on loop: ConnectionLoop<RabbitMQPublisherDriver>) {
        switch command {
        case .connect(let report):
            do throws(RabbitMQError) {
                _ = try self.connected()
                report(.success(()))
            } catch {
                report(.failure(error))
            }
        case .publish(let payloads, let completion):
            self.publish(payloads, completion)
        }
    }

    func service(on loop: ConnectionLoop<RabbitMQPublisherDriver>) -> ServiceOutcome {
        guard let connection = self.connection else { return .wait(socket: nil, timeout: nil) }
        do throws(RabbitMQError) {
            reading: while true {
                switch try connection.next() {
                case .idle:
                    break reading
                case .confirm(let acknowledged, let tag, let multiple):
                    self.confirm(tag, multiple: multiple, acknowledged: acknowledged)
                case .returned(let messageID, let code, let text):
                    self.returned(messageID, code: code, text: text)
                case .delivery, .consumerCancelled:
                    continue
                }
            }
        } catch {
            self.lost(error)
            return .wait(socket: nil, timeout: nil)
        }
        let timeout = connection.heartbeat > 0 ? Duration.milliseconds(connection.heartbeat * 500) : Duration.seconds(1)
        return .wait(socket: connection.socket, timeout: timeout)
    }

    func close() {
        self.connection = nil
        self.failPending(RabbitMQError(.shutDown, "the sink was closed before the broker confirmed the batch"))
    }

    // MARK: Publishing

    private func connected() throws(RabbitMQError) -> AMQPConnection {
        if let connection = self.connection { return connection }
        let connection = try AMQPConnection.open(self.configuration)
        if self.configuration.topology.declare { try connection.declare(self.configuration) }
        try connection.selectConfirms()
        self.connection = connection
        self.nextSequence = 1
        self.confirmedFloor = 0
        return connection
    }

    private func publish(_ payloads: [Payload], _ completion: @escaping Completion) {
        guard !payloads.isEmpty else { return completion(.success([])) }
        let connection: AMQPConnection
        do throws(RabbitMQError) {
            connection = try self.connected()
        } catch {
            return completion(.failure(error))
        }
        self.pending.append(
            Pending(
                firstSequence: self.nextSequence,
                outcomes: Array(repeating: nil, count: payloads.count),
                confirmed: Array(repeating: false, count: payloads.count),
                remaining: payloads.count,
                completion: completion
            )
        )
        do throws(RabbitMQError) {
            for payload in payloads {
                let id: UInt64? = self.configuration.mandatory ? self.nextSequence : nil
                try connection.publish(
                    payload, route: self.route, mandatory: self.configuration.mandatory, persistent: self.configuration.persistent, messageID: id
                )
                self.nextSequence += 1
            }
        } catch {
            // Fails every batch waiting, this one included.
            self.lost(error)
        }
    }

    private func confirm(_ tag: UInt64, multiple: Bool, acknowledged: Bool) {
        let range = multiple ? (self.confirmedFloor + 1)...max(tag, self.confirmedFloor + 1) : tag...tag
        let nack = acknowledged ? nil : RabbitMQError(.nacked, "the broker refused to take the message (basic.nack)")
        var index = self.pending.startIndex
        while index < self.pending.endIndex {
            let batch = self.pending[index]
            let first = batch.firstSequence
            let last = first + UInt64(batch.outcomes.count) - 1
            if last >= range.lowerBound && first <= range.upperBound {
                for sequence in max(first, range.lowerBound)...min(last, range.upperBound) {
                    let offset = Int(sequence - first)
                    guard !self.pending[index].confirmed[offset] else { continue }
                    self.pending[index].confirmed[offset] = true
                    self.pending[index].remaining -= 1
                    if let nack, self.pending[index].outcomes[offset] == nil { self.pending[index].outcomes[offset] = nack }
                }
            }
            index += 1
        }
        if multiple { self.confirmedFloor = max(self.confirmedFloor, tag) }
        self.completeConfirmed()
    }

    private func returned(_ messageID: String?, code: UInt16, text: String) {
        guard let id = messageID, id.hasPrefix("sluice-"), let sequence = UInt64(id.dropFirst("sluice-".count)),
            let index = self.pending.firstIndex(where: { $0.contains(sequence) })
        else {
            self.logger.warning("the broker returned a message the sink cannot place", metadata: [RabbitMQLogKey.error: "\(code) \(text)"])
            return
        }
        let offset = Int(sequence - self.pending[index].firstSequence)
        self.pending[index].outcomes[offset] = RabbitMQError(
            .unroutable,
            "no queue took the message published to exchange \"\(self.configuration.publishExchange)\" with routing key "
                + "\"\(self.configuration.effectiveRoutingKey)\": \(code) \(text)"
        )
    }

    private func completeConfirmed() {
        while let first = self.pending.first, first.remaining == 0 {
            self.pending.removeFirst()
            first.completion(.success(first.outcomes))
        }
        // A batch behind an unfinished one may be complete too (confirms can come out of order).
        if self.pending.contains(where: { $0.remaining == 0 }) {
            let done = self.pending.filter { $0.remaining == 0 }
            self.pending.removeAll { $0.remaining == 0 }
            for batch in done { batch.completion(.success(batch.outcomes)) }
        }
    }

    private func lost(_ error: RabbitMQError) {
        self.connection = nil
        self.logger.warning("lost the RabbitMQ publishing connection", metadata: [RabbitMQLogKey.error: "\(error)"])
        self.failPending(RabbitMQError(.connectionLost, "the connection broke before the broker confirmed the batch: \(error.message)"))
    }

    private func failPending(_ error: RabbitMQError) {
        let batches = self.pending
        self.pending = []
        for batch in batches { batch.completion(.failure(error)) }
    }
}

@available(*, unavailable)
extension RabbitMQPublisherDriver: Sendable {}
