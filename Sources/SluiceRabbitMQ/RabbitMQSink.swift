//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
public import ServiceLifecycle
public import Sluice
import SluiceConnector
import Synchronization

/// Publishes payloads to RabbitMQ in batches with publisher confirms: ``send(_:)-([[UInt8]])``
/// returns only once the broker confirmed every message of the batch, so a caller that awaits
/// it (``RabbitMQSinkStage``, a batcher) asks for more only after the previous batch was
/// confirmed.
///
/// Messages go to ``RabbitMQConfiguration/publishExchange`` with
/// ``RabbitMQConfiguration/effectiveRoutingKey`` (by default the queue's name through the
/// default exchange). With ``RabbitMQConfiguration/mandatory`` (the default) a message no
/// queue takes comes back and fails with ``RabbitMQError/Code-swift.struct/unroutable``; a
/// message the broker nacks fails with ``RabbitMQError/Code-swift.struct/nacked``.
///
/// The sink is a `Service`: run it in the same `ServiceGroup` as the pipeline that writes to
/// it, listed before the pipeline, so that it connects at start and closes only after the
/// pipeline finished on graceful shutdown:
///
/// ```swift
/// let sink = try RabbitMQSink(url: "amqp://127.0.0.1:5672/?queue=results", logger: logger)
/// let pipeline = Pipeline("copy", source: source) {
///     Processors { message in … }
///     Batcher(size: 500) { batch in try await sink.send(&batch) }
/// }
/// try await ServiceGroup(services: [sink, pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Creating a sink connects nothing: ``run()`` or ``connect()`` does (and a send on a sink
/// never connected connects first). It publishes on a connection and thread of its own. A
/// batch whose connection broke before every confirm arrived is published again on a new
/// connection (so a message may be published twice), until the sink is closed.
public final class RabbitMQSink: Service, Sendable {
    /// The configuration.
    public let configuration: RabbitMQConfiguration
    private let logger: Logger?
    private let state = Mutex<(loop: ConnectionLoop<RabbitMQPublisherDriver>?, closed: Bool)>((nil, false))

    /// Creates a sink; nothing connects until ``run()``, ``connect()`` or the first send.
    ///
    /// - Parameter logger: The sink's logger; `nil` takes `Logger.current` when it connects.
    /// - Throws: ``RabbitMQError`` with code `invalidConfiguration`.
    public init(configuration: RabbitMQConfiguration, logger: Logger? = nil) throws(RabbitMQError) {
        try configuration.validate()
        self.configuration = configuration
        var logger = logger
        logger?[metadataKey: RabbitMQLogKey.address] = "\(configuration.address)"
        logger?[metadataKey: RabbitMQLogKey.queue] = "\(configuration.queue)"
        self.logger = logger
    }

    /// Creates a sink from a URL (see ``RabbitMQConfiguration/init(url:)``).
    public convenience init(url: String, logger: Logger? = nil) throws(RabbitMQError) {
        try self.init(configuration: try RabbitMQConfiguration(url: url), logger: logger)
    }

    /// Connects, serves sends until graceful shutdown or cancellation, then closes once the
    /// batches in flight were confirmed.
    ///
    /// - Throws: ``RabbitMQError`` if the broker cannot be reached or refuses the login at start.
    public func run() async throws {
        try await self.connect()
        try? await gracefulShutdown()
        await self.close()
    }

    /// Connects and puts the channel in confirm mode.
    ///
    /// - Throws: ``RabbitMQError`` (`connectionFailed`, `accessRefused`, `notAllowed`, or
    ///   `shutDown` after ``close()``).
    public func connect() async throws(RabbitMQError) {
        let loop = try self.loop()
        let result: Result<Void, RabbitMQError> = await withCheckedContinuation { continuation in
            if !loop.enqueue(.connect({ continuation.resume(returning: $0) })) {
                continuation.resume(returning: .failure(Self.closedError))
            }
        }
        try result.get()
    }

    /// Publishes `payloads` and returns once the broker confirmed them all.
    ///
    /// - Throws: ``RabbitMQError``: `unroutable` or `nacked` naming how many of the batch
    ///   failed (the others were confirmed), `shutDown` after ``close()``.
    public func send(_ payloads: [[UInt8]]) async throws(RabbitMQError) {
        let outcomes = try await self.publish(payloads.map(Payload.init))
        let failures = outcomes.compactMap { $0 }
        if let first = failures.first {
            throw RabbitMQError(first.code, "\(failures.count) of \(payloads.count) messages failed; the first: \(first.message)")
        }
    }

    /// Publishes the payloads of `messages`, marks each unroutable or nacked one failed
    /// (``Sluice/Message/fail(_:disposition:)``, the pipeline's failure policy decides), and
    /// returns once the broker answered for every message.
    ///
    /// - Throws: ``RabbitMQError`` `shutDown` after ``close()``.
    public func send<Metadata>(_ messages: inout [Message<Metadata>]) async throws(RabbitMQError) {
        let outcomes = try await self.publish(messages.map(\.payload))
        for (index, outcome) in outcomes.enumerated() {
            if let outcome { messages[index].fail(outcome) }
        }
    }

    /// Publishes `payloads`; for each, `nil` once confirmed or why it failed. A batch whose
    /// connection broke is published again (after the reconnect backoff) until the sink is
    /// closed.
    public func publish(_ payloads: [Payload]) async throws(RabbitMQError) -> [RabbitMQError?] {
        guard !payloads.isEmpty else { return [] }
        var reconnect = Reconnect(backoff: self.configuration.reconnectSchedule)
        while true {
            let loop = try self.loop()
            let result: Result<[RabbitMQError?], RabbitMQError> = await withCheckedContinuation { continuation in
                if !loop.enqueue(.publish(payloads, { continuation.resume(returning: $0) })) {
                    continuation.resume(returning: .failure(Self.closedError))
                }
            }
            switch result {
            case .success(let outcomes):
                return outcomes
            case .failure(let error) where error.isTransient && !self.isClosed:
                try? await Task.sleep(for: reconnect.failed())
            case .failure(let error):
                throw error
            }
        }
    }

    /// Waits for the batches in flight, then closes the connection; later sends throw `shutDown`.
    public func close() async {
        let loop = self.state.withLock { state -> ConnectionLoop<RabbitMQPublisherDriver>? in
            state.closed = true
            return state.loop
        }
        guard let loop else { return }
        let timeout = self.configuration.connectTimeout * 2
        _ = await Task.detached { await loop.stopAndWait(timeout: timeout) }.value
    }

    private var isClosed: Bool { self.state.withLock { $0.closed } }

    private func loop() throws(RabbitMQError) -> ConnectionLoop<RabbitMQPublisherDriver> {
        let configuration = self.configuration
        let logger = self.logger ?? Logger.current
        let loop = self.state.withLock { state -> ConnectionLoop<RabbitMQPublisherDriver>? in
            guard !state.closed else { return nil }
            if let loop = state.loop { return loop }
            let loop = ConnectionLoop(name: "sluice-amqp-sink") { RabbitMQPublisherDriver(configuration: configuration, logger: logger) }
            state.loop = loop
            return loop
        }
        guard let loop else { throw Self.closedError }
        return loop
    }

    private static var closedError: RabbitMQError { RabbitMQError(.shutDown, "the RabbitMQ sink was closed") }
}

/// An engine consumer stage that publishes what it receives through a ``RabbitMQSink``.
///
/// It handles one slice of events at a time and asks for more only after the broker
/// confirmed it, so a slow broker slows its producers down. A message that fails stops the
/// stage with that error.
public struct RabbitMQSinkStage: Consumer, Sendable {
    public typealias Input = [UInt8]

    /// The sink published to.
    public let sink: RabbitMQSink

    /// Creates the stage.
    public init(sink: RabbitMQSink) {
        self.sink = sink
    }

    public mutating func handleEvents(_ events: [[UInt8]], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
        try await self.sink.send(events)
    }
}
