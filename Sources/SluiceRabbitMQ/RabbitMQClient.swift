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

    /// How many messages `queue` holds ready.
    package func readyCount(_ queue: String) async throws(RabbitMQError) -> Int {
        try await self.run { connection throws(RabbitMQError) in try connection.readyCount(queue) }
    }

    /// Deletes `queue` (and `exchange`).
    package func delete(queue: String, exchange: String? = nil) async throws(RabbitMQError) {
        try await self.run { connection throws(RabbitMQError) in try connection.delete(queue: queue, exchange: exchange) }
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
