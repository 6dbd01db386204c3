//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import CRedis
import Foundation

/// A reply from Redis, copied out of hiredis's `redisReply` tree.
enum RedisValue: Equatable, Sendable {
    case status(String)
    case string(String)
    case integer(Int64)
    case array([RedisValue])
    case null
}

/// One blocking hiredis connection (`redisContext`). Not thread-safe: use it from one thread.
final class HiredisContext {
    private let context: UnsafeMutablePointer<redisContext>

    private init(context: UnsafeMutablePointer<redisContext>) {
        self.context = context
    }

    deinit {
        redisFree(self.context)
    }

    /// Connects to `redis://host:port[/db]` (with `AUTH` when the URL has a password), with a
    /// timeout for connecting and for every later command.
    static func connect(url: String, timeoutSeconds: Int = 5) throws -> HiredisContext {
        guard let components = URLComponents(string: url), components.scheme == "redis",
            let host = components.host, !host.isEmpty
        else {
            throw BrokerSmokeError("'\(url)' is not a redis://host:port URL")
        }
        let port = Int32(components.port ?? 6379)
        let timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        guard let context = redisConnectWithTimeout(host, port, timeout) else {
            throw BrokerSmokeError("hiredis could not allocate a context for \(url)")
        }
        let connection = HiredisContext(context: context)
        guard context.pointee.err == 0 else {
            throw BrokerSmokeError("cannot connect to Redis at \(url): \(connection.errorText)")
        }
        guard redisSetTimeout(context, timeout) == REDIS_OK else {
            throw BrokerSmokeError("cannot set a command timeout on \(url): \(connection.errorText)")
        }
        if let password = components.password {
            _ = try connection.command(["AUTH", password])
        }
        if let database = Int(components.path.dropFirst()) {
            _ = try connection.command(["SELECT", String(database)])
        }
        return connection
    }

    /// Sends one command through `redisCommandArgv` (binary-safe arguments, no format string)
    /// and waits for its reply. An error reply throws.
    func command(_ arguments: [String]) throws -> RedisValue {
        let buffers = arguments.map { Array($0.utf8) + [0] }
        let pointers = buffers.map { buffer -> UnsafeMutablePointer<CChar> in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: buffer.count)
            buffer.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(copy).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
            return copy
        }
        defer {
            for pointer in pointers {
                pointer.deallocate()
            }
        }
        var argv = pointers.map { UnsafePointer<CChar>?(UnsafePointer($0)) }
        let lengths = buffers.map { $0.count - 1 }

        let raw = redisCommandArgv(self.context, Int32(argv.count), &argv, lengths)
        guard let raw else {
            throw BrokerSmokeError("\(arguments.first ?? "command") failed: \(self.errorText)")
        }
        defer { freeReplyObject(raw) }
        return try Self.value(of: raw.assumingMemoryBound(to: redisReply.self), command: arguments.first ?? "")
    }

    private static func value(of reply: UnsafeMutablePointer<redisReply>, command: String) throws -> RedisValue {
        let reply = reply.pointee
        switch reply.type {
        case REDIS_REPLY_STATUS:
            return .status(Self.text(reply))
        case REDIS_REPLY_STRING:
            return .string(Self.text(reply))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements: [RedisValue] = []
            for index in 0..<reply.elements {
                guard let element = reply.element[index] else { continue }
                elements.append(try Self.value(of: element, command: command))
            }
            return .array(elements)
        case REDIS_REPLY_ERROR:
            throw BrokerSmokeError("Redis answered \(command) with an error: \(Self.text(reply))")
        default:
            throw BrokerSmokeError("Redis answered \(command) with an unknown reply type \(reply.type)")
        }
    }

    private static func text(_ reply: redisReply) -> String {
        guard let bytes = reply.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: reply.len), as: UTF8.self)
    }

    private var errorText: String {
        String(cString: sluice_redis_error_string(self.context))
    }
}

@available(*, unavailable)
extension HiredisContext: Sendable {}
