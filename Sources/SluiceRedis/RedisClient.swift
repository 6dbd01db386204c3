//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
import Synchronization

/// A reply from Redis, copied out of hiredis's reply tree.
@_spi(Internal)
public enum RedisValue: Hashable, Sendable {
    case status(String)
    case string([UInt8])
    case integer(Int)
    case array([RedisValue])
    case null

    /// The text of a string or status reply.
    public var text: String? {
        switch self {
        case .status(let text): return text
        case .string(let bytes): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The integer of an integer reply.
    public var integer: Int? {
        if case .integer(let value) = self { return value }
        return nil
    }

    /// The elements of an array reply.
    public var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    init(_ reply: RedisReplyRef) {
        switch reply.kind {
        case .string: self = .string(reply.bytes)
        case .status, .error: self = .status(reply.text)
        case .integer: self = .integer(reply.integer)
        case .array: self = .array((0..<reply.count).map { RedisValue(reply[$0]) })
        default: self = .null
        }
    }
}

/// A plain Redis client on a thread of its own, for tests, benchmarks and tools: one command
/// or a pipeline at a time. Not part of the stable API.
@_spi(Internal)
public final class RedisClient: Sendable {
    private let connection: LazyRedisConnection

    /// Creates a client for what `configuration` names; nothing connects until ``connect()``
    /// (or the first command).
    ///
    /// - Parameter logger: The connection's logger; `nil` takes `Logger.current` when it connects.
    public init(configuration: RedisConfiguration, logger: Logger? = nil) {
        self.connection = LazyRedisConnection(name: "sluice-redis-client", configuration: configuration, blocking: true, logger: logger)
    }

    /// Starts the connection's thread and checks that Redis answers.
    ///
    /// - Throws: ``RedisError`` (`connectionFailed`, `authenticationFailed`, or `shutDown`
    ///   after ``close()``).
    public func connect() async throws(RedisError) {
        try await self.connection.connect()
    }

    private var thread: RedisConnection {
        get throws(RedisError) { try self.connection.thread() }
    }

    /// Sends one command and returns its reply.
    public func command(_ arguments: [String]) async throws(RedisError) -> RedisValue {
        try await self.pipeline([arguments.map { Array($0.utf8) }])[0]
    }

    /// Sends commands in one write and returns their replies.
    public func pipeline(_ commands: [[[UInt8]]]) async throws(RedisError) -> [RedisValue] {
        let built = commands.map { arguments -> RedisCommand in
            var command = RedisCommand(String(decoding: arguments[0], as: UTF8.self))
            for argument in arguments.dropFirst() { command.append(argument) }
            return command
        }
        return try await self.thread.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                var replies: [RedisValue] = []
                try context.pipeline(built) { _, reply throws(RedisError) in replies.append(RedisValue(reply)) }
                return replies
            }
        }
    }

    /// Closes the connection; later commands throw `shutDown`.
    public func close() async {
        await self.connection.close()
    }
}

/// A ``RedisConnection`` made by its first use (or ``connect()``), never by the initializer
/// of what owns it, so that creating a client or sink starts no thread.
final class LazyRedisConnection: Sendable {
    private enum State {
        case idle
        case running(RedisConnection)
        case closed
    }

    private let state = Mutex(State.idle)
    private let name: String
    private let configuration: RedisConfiguration
    private let blocking: Bool
    private let logger: Logger?

    init(name: String, configuration: RedisConfiguration, blocking: Bool, logger: Logger?) {
        self.name = name
        self.configuration = configuration
        self.blocking = blocking
        self.logger = logger
    }

    /// The running thread, started now if it was not yet.
    ///
    /// - Throws: ``RedisError`` `shutDown` once closed.
    func thread() throws(RedisError) -> RedisConnection {
        // Started under the lock so that two first users share one thread; starting a thread
        // calls back into nothing that takes this lock.
        let thread = self.state.withLock { state -> RedisConnection? in
            switch state {
            case .idle:
                let thread = RedisConnection(
                    name: self.name,
                    configuration: self.configuration,
                    blocking: self.blocking,
                    logger: self.logger ?? Logger.current
                )
                state = .running(thread)
                return thread
            case .running(let thread):
                return thread
            case .closed:
                return nil
            }
        }
        guard let thread else { throw RedisError(.shutDown, "the Redis connection was closed") }
        return thread
    }

    /// Starts the thread if needed and checks that Redis answers.
    func connect() async throws(RedisError) {
        try await self.thread().run { link throws(RedisError) in _ = try link.connected() }
    }

    /// Stops the thread once queued jobs ran; later uses throw `shutDown`.
    func close() async {
        let thread = self.state.withLock { state -> RedisConnection? in
            defer { state = .closed }
            if case .running(let thread) = state { return thread }
            return nil
        }
        await thread?.shutdown()
    }
}
