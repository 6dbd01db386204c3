//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging

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
    private let thread: RedisConnection

    /// Connects (lazily, on the first command) to what `configuration` names.
    public init(configuration: RedisConfiguration, logger: Logger = Logger(label: "sluice.redis.client")) {
        self.thread = RedisConnection(name: "sluice-redis-client", configuration: configuration, blocking: true, logger: logger)
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

    /// Runs `body` on the client's thread with a raw command loop: `send(arguments)` sends
    /// one command and returns how many bytes of bulk strings its reply held (nested arrays
    /// included), copying each into a new `[UInt8]` once when `copy` is set. For baselines.
    public func withRawLoop<T: Sendable>(
        _ body: @escaping @Sendable (_ send: (_ arguments: [String], _ copy: Bool) throws(RedisError) -> (items: Int, ids: [String])) throws(RedisError) -> T
    ) async throws(RedisError) -> T {
        try await self.thread.run { link throws(RedisError) in
            let context = try link.connected()
            return try body { arguments, copy throws(RedisError) in
                var command = RedisCommand(arguments[0])
                for argument in arguments.dropFirst() { command.append(argument) }
                return try context.command(command) { reply throws(RedisError) in Self.walk(reply, copy: copy) }
            }
        }
    }

    /// Counts the leaf payloads of `LPOP` (strings) or `XREADGROUP` (entries) replies and
    /// returns the entry ids seen.
    private static func walk(_ reply: RedisReplyRef, copy: Bool) -> (items: Int, ids: [String]) {
        guard reply.kind == .array else { return (reply.kind == .string ? 1 : 0, []) }
        if reply.count == 1, reply[0].kind == .array, reply[0].count == 2, reply[0][1].kind == .array {
            // XREADGROUP: [[stream, [[id, [field, value]], …]]]
            let entries = reply[0][1]
            var ids: [String] = []
            ids.reserveCapacity(entries.count)
            var sink = 0
            for index in 0..<entries.count {
                let fields = entries[index][1]
                if copy, fields.count >= 2 { sink &+= fields[1].bytes.count }
                ids.append(entries[index][0].text)
            }
            _ = sink
            return (entries.count, ids)
        }
        var sink = 0
        if copy {
            for index in 0..<reply.count { sink &+= reply[index].bytes.count }
        }
        _ = sink
        return (reply.count, [])
    }

    /// Closes the connection.
    public func close() async {
        await self.thread.shutdown()
    }
}
