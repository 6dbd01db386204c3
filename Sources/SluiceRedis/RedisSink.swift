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

/// Writes payloads to a Redis list (pipelined `RPUSH`) or stream (`XADD`), in batches, with
/// back-pressure: ``send(_:)-([[UInt8]])`` returns only once Redis answered the batch.
///
/// The sink is a `Service`: run it in the same `ServiceGroup` as the pipeline that writes to
/// it, listed before the pipeline, so that it connects at start and closes only after the
/// pipeline finished on graceful shutdown (a group stops its services in reverse order):
///
/// ```swift
/// let sink = try RedisSink(url: "redis://127.0.0.1:6379?key=results&mode=stream", logger: logger)
/// let pipeline = Pipeline("copy", source: source) {
///     Processors { message in … }
///     Batcher(size: 500) { batch in try await sink.send(batch) }
/// }
/// try await ServiceGroup(services: [sink, pipeline], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// Use it as an engine consumer stage with ``RedisSinkStage``. Creating a sink connects
/// nothing: ``run()`` or ``connect()`` does (and a ``send(_:)-([[UInt8]])`` on a sink never
/// connected connects first). The sink writes on a connection and thread of its own and
/// reconnects after a broken connection, retrying the batch (so a batch may be written twice
/// if the connection broke after Redis wrote it).
public final class RedisSink: Service, Sendable {
    /// The configuration: ``RedisConfiguration/key`` is the list or stream written;
    /// ``RedisConfiguration/Mode/stream`` writes `XADD key * <payloadField> <payload>`, the
    /// list modes `RPUSH`.
    public let configuration: RedisConfiguration
    private let connection: LazyRedisConnection

    /// Creates a sink; nothing connects until ``run()``, ``connect()`` or the first send.
    ///
    /// - Parameter logger: The sink's logger; `nil` takes `Logger.current` when it connects.
    /// - Throws: ``RedisError`` with code `invalidConfiguration`.
    public init(configuration: RedisConfiguration, logger: Logger? = nil) throws(RedisError) {
        try configuration.validate()
        self.configuration = configuration
        var logger = logger
        logger?[metadataKey: RedisLogKey.address] = "\(configuration.address)"
        logger?[metadataKey: RedisLogKey.key] = "\(configuration.key)"
        self.connection = LazyRedisConnection(name: "sluice-redis-sink", configuration: configuration, blocking: false, logger: logger)
    }

    // The URL init and run() mirror RabbitMQSink.swift (and KafkaSink) on purpose: the same Service
    // shape in every adapter; what connect, send and close do is Redis's own.
    /// Creates a sink from a URL (see ``RedisConfiguration/init(url:)``).
    public convenience init(url: String, logger: Logger? = nil) throws(RedisError) {
        try self.init(configuration: try RedisConfiguration(url: url), logger: logger)
    }

    /// Connects, serves sends until graceful shutdown or cancellation, then closes once the
    /// queued writes finished.
    ///
    /// - Throws: ``RedisError`` (`connectionFailed`, `authenticationFailed`) if Redis does not
    ///   answer at start.
    public func run() async throws {
        try await self.connect()
        // Cancellation ends the wait as graceful shutdown does: either way the sink closes.
        try? await gracefulShutdown()
        await self.close()
    }

    /// Starts the sink's connection and checks that Redis answers.
    ///
    /// - Throws: ``RedisError`` (`connectionFailed`, `authenticationFailed`, or `shutDown`
    ///   after ``close()``).
    public func connect() async throws(RedisError) {
        try await self.connection.connect()
    }

    /// Writes `payloads` and returns once Redis stored them. Transient connection failures
    /// are retried with backoff until the sink is closed.
    ///
    /// - Throws: ``RedisError``: `wrongType` if the key holds another type, `shutDown` after
    ///   ``close()``, or another error reply.
    public func send(_ payloads: [[UInt8]]) async throws(RedisError) {
        try await self.send(payloads: payloads.map(Payload.init))
    }

    /// Writes the payloads of `messages` (see ``send(_:)-([[UInt8]])``).
    public func send<Metadata>(_ messages: [Message<Metadata>]) async throws(RedisError) {
        try await self.send(payloads: messages.map(\.payload))
    }

    /// Writes `payloads` (see ``send(_:)-([[UInt8]])``).
    public func send(payloads: [Payload]) async throws(RedisError) {
        guard !payloads.isEmpty else { return }
        let commands = self.commands(payloads)
        try await self.connection.thread().run { link throws(RedisError) in
            while true {
                do throws(RedisError) {
                    try link.perform { context throws(RedisError) in
                        try context.pipeline(commands) { _, _ throws(RedisError) in }
                    }
                    return
                } catch where error.isTransient {
                    if !link.backOff(after: error) { throw RedisError(.shutDown, "the sink was closed before Redis answered") }
                }
            }
        }
    }

    /// Closes the connection once queued writes finished; later sends throw `shutDown`.
    public func close() async {
        await self.connection.close()
    }

    private func commands(_ payloads: [Payload]) -> [RedisCommand] {
        let chunk = 1000
        var commands: [RedisCommand] = []
        if self.configuration.mode == .stream {
            commands.reserveCapacity(payloads.count)
            for payload in payloads {
                var add = RedisCommand("XADD")
                add.append(self.configuration.key)
                add.append("*")
                add.append(self.configuration.payloadField)
                add.append(payload)
                commands.append(add)
            }
            return commands
        }
        var start = 0
        while start < payloads.count {
            let end = min(start + chunk, payloads.count)
            var push = RedisCommand("RPUSH")
            push.reserve(arguments: end - start + 2, bytes: payloads[start..<end].reduce(0) { $0 + $1.count } + 64)
            push.append(self.configuration.key)
            for payload in payloads[start..<end] { push.append(payload) }
            commands.append(push)
            start = end
        }
        return commands
    }
}

/// An engine consumer stage that writes what it receives to a ``RedisSink``.
///
/// It handles one slice of events at a time and asks for more only after Redis answered, so
/// a slow Redis slows its producers down. A write that fails for good stops the stage with
/// that error.
public struct RedisSinkStage: Consumer, Sendable {
    public typealias Input = [UInt8]

    /// The sink written to.
    public let sink: RedisSink

    /// Creates the stage.
    public init(sink: RedisSink) {
        self.sink = sink
    }

    public mutating func handleEvents(_ events: [[UInt8]], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
        try await self.sink.send(events)
    }
}
