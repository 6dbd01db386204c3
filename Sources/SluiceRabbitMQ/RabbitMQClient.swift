//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceConnector

/// A plain RabbitMQ connection on a thread of its own, for tests and benchmarks: declare,
/// publish without confirms, count and delete. (Sources and sinks do not use it.)
package final class RabbitMQClient: Sendable {
    private let loop: ConnectionLoop<ClientDriver>
    private let configuration: RabbitMQConfiguration

    /// Starts the client's thread; it connects on first use.
    package init(configuration: RabbitMQConfiguration) {
        var configuration = configuration
        configuration.heartbeat = .zero
        self.configuration = configuration
        self.loop = ConnectionLoop(name: "sluice-amqp-client") { [configuration] in ClientDriver(configuration: configuration) }
    }

    /// Declares the configuration's topology (queue, exchange, bindings).
    package func declare(_ configuration: RabbitMQConfiguration) async throws(RabbitMQError) {
        try await self.run { connection throws(RabbitMQError) in try connection.declare(configuration) }
    }

    /// Publishes `payloads` to `exchange` with `routingKey` (default: the configuration's
    /// queue through the default exchange), without confirms.
    package func publish(_ payloads: [[UInt8]], exchange: String = "", routingKey: String? = nil) async throws(RabbitMQError) {
        let key = routingKey ?? self.configuration.queue
        try await self.run { connection throws(RabbitMQError) in
            let route = AMQPRoute(exchange: exchange, routingKey: key)
            for payload in payloads {
                try connection.publish(Payload(payload), route: route, mandatory: false, persistent: false, messageID: nil)
            }
        }
    }

    /// Publishes `payload` to the configured queue (through the default exchange) with the
    /// given `basic.properties`, so that a test can check what the source decodes.
    package func publish(
        _ payload: [UInt8],
        contentType: String? = nil,
        headers: [String: String] = [:],
        messageID: String? = nil,
        timestamp: UInt64? = nil
    ) async throws(RabbitMQError) {
        let queue = self.configuration.queue
        let properties = AMQPMessageProperties(contentType: contentType, headers: headers, messageID: messageID, timestamp: timestamp)
        try await self.run { connection throws(RabbitMQError) in
            try connection.publish(payload, routingKey: queue, properties: properties)
        }
    }

    /// How many messages `queue` holds ready.
    package func readyCount(_ queue: String) async throws(RabbitMQError) -> Int {
        try await self.run { connection throws(RabbitMQError) in try connection.readyCount(queue) }
    }

    /// Deletes `queue` (and `exchange`).
    package func delete(queue: String, exchange: String? = nil) async throws(RabbitMQError) {
        try await self.run { connection throws(RabbitMQError) in try connection.delete(queue: queue, exchange: exchange) }
    }

    /// A raw librabbitmq consumer loop, for benchmarks: consumes `count` messages of `queue`
    /// on a connection of its own with prefetch `prefetch`, copying each body into an array,
    /// and acknowledges with `multiple=true` every `ackEvery` messages. Returns the seconds it
    /// took (from `basic.consume` until the last acknowledgement went out).
    package func rawConsume(_ queue: String, count: Int, prefetch: Int, ackEvery: Int) async throws(RabbitMQError) -> Double {
        var consumer = self.configuration
        consumer.queue = queue
        consumer.topology = RabbitMQConfiguration.Topology()
        let configuration = consumer
        return try await self.run { _ throws(RabbitMQError) in
            let connection = try AMQPConnection.open(configuration)
            let start = ContinuousClock.now
            _ = try connection.consume(configuration, prefetch: prefetch)
            var received = 0
            var bytes = 0
            var lastTag: UInt64 = 0
            while received < count {
                guard case .delivery(let delivery) = try connection.next(waiting: .seconds(10)) else {
                    throw RabbitMQError(.connectionLost, "the raw consumer waited 10 s for a delivery after \(received)")
                }
                bytes &+= delivery.body.count
                received += 1
                lastTag = delivery.deliveryTag
                if received % ackEvery == 0 { try connection.ack(lastTag, multiple: true) }
            }
            if received % ackEvery != 0 { try connection.ack(lastTag, multiple: true) }
            let elapsed = ContinuousClock.now - start
            precondition(bytes > 0 || count == 0)
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
    }

    /// A raw librabbitmq publisher loop with confirms, for benchmarks: publishes `count` copies
    /// of `payload` to `queue` keeping at most `outstanding` unconfirmed. Returns the seconds
    /// it took until the last confirm.
    package func rawPublish(_ queue: String, count: Int, payload: [UInt8], outstanding: Int) async throws(RabbitMQError) -> Double {
        let configuration = self.configuration
        return try await self.run { _ throws(RabbitMQError) in
            let connection = try AMQPConnection.open(configuration)
            try connection.selectConfirms()
            let route = AMQPRoute(exchange: "", routingKey: queue)
            let body = Payload(payload)
            let start = ContinuousClock.now
            var published = 0
            var confirmed: UInt64 = 0
            while confirmed < UInt64(count) {
                while published < count && UInt64(published) - confirmed < UInt64(outstanding) {
                    try connection.publish(body, route: route, mandatory: false, persistent: false, messageID: nil)
                    published += 1
                }
                switch try connection.next(waiting: .seconds(10)) {
                case .confirm(_, let tag, let multiple):
                    confirmed = multiple ? max(confirmed, tag) : confirmed + 1
                case .idle:
                    throw RabbitMQError(.connectionLost, "the raw publisher waited 10 s for a confirm")
                default:
                    continue
                }
            }
            let elapsed = ContinuousClock.now - start
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
    }

    /// Closes the connection.
    package func close() async {
        let loop = self.loop
        _ = await Task.detached { await loop.stopAndWait(timeout: .seconds(10)) }.value
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable (AMQPConnection) throws(RabbitMQError) -> T) async throws(RabbitMQError) -> T {
        let result: Result<T, RabbitMQError> = await withCheckedContinuation { continuation in
            let queued = self.loop.enqueue(
                ClientDriver.Job { driver in
                    continuation.resume(returning: driver.perform(body))
                }
            )
            if !queued { continuation.resume(returning: .failure(RabbitMQError(.shutDown, "the client was closed"))) }
        }
        return try result.get()
    }
}

/// The client's connection; reconnects after any failed call.
final class ClientDriver: ConnectionDriver {
    struct Job: Sendable {
        let body: @Sendable (ClientDriver) -> Void
    }

    private let configuration: RabbitMQConfiguration
    private var connection: AMQPConnection?

    init(configuration: RabbitMQConfiguration) {
        self.configuration = configuration
    }

    func perform<T>(_ body: (AMQPConnection) throws(RabbitMQError) -> T) -> Result<T, RabbitMQError> {
        do throws(RabbitMQError) {
            let connection: AMQPConnection
            if let open = self.connection {
                connection = open
            } else {
                connection = try AMQPConnection.open(self.configuration)
                self.connection = connection
            }
            let value = try body(connection)
            return .success(value)
        } catch {
            // A failed call may have closed the channel: start afresh next time.
            self.connection = nil
            return .failure(error)
        }
    }

    func handle(_ command: Job, on loop: ConnectionLoop<ClientDriver>) {
        command.body(self)
    }

    func service(on loop: ConnectionLoop<ClientDriver>) -> ServiceOutcome {
        .wait(socket: nil, timeout: nil)
    }

    func close() {
        self.connection = nil
    }
}

@available(*, unavailable)
extension ClientDriver: Sendable {}
