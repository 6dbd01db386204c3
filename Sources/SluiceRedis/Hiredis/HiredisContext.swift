//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CRedis
import Foundation
import Sluice

/// One blocking hiredis connection (`redisContext`).
///
/// Not thread-safe: a context is created, used and destroyed on the thread of the
/// ``RedisConnection`` that owns it, never on Swift's cooperative pool.
final class HiredisContext {
    private let context: UnsafeMutablePointer<redisContext>
    /// Where the context is connected, for error texts (never contains credentials).
    let address: String
    /// Where replies are built, if not one allocation per element (see ``ReplyArena``).
    private let arena: ReplyArena?
    /// How long a reply may take (for the text of a timeout).
    private let readTimeout: Duration

    private init(context: UnsafeMutablePointer<redisContext>, address: String, arena: ReplyArena?, readTimeout: Duration) {
        self.context = context
        self.address = address
        self.arena = arena
        self.readTimeout = readTimeout
        arena?.install(on: context)
    }

    deinit {
        redisFree(self.context)
    }

    /// Connects, authenticates and selects the database of `configuration`.
    ///
    /// - Parameters:
    ///   - readTimeout: The socket timeout for replies (longer than the longest blocking
    ///     command sent on this connection).
    ///   - replyArena: Whether replies are built in a ``ReplyArena`` (for connections that
    ///     read large replies) rather than with an allocation per element.
    /// - Throws: ``RedisError`` with code `connectionFailed` or `authenticationFailed`.
    static func connect(
        _ configuration: RedisConfiguration,
        readTimeout: Duration,
        replyArena: Bool = false
    ) throws(RedisError) -> HiredisContext {
        let address = configuration.address
        let connectTimeout = Self.timeval(configuration.connectTimeout)
        let raw: UnsafeMutablePointer<redisContext>?
        if let path = configuration.unixSocketPath {
            raw = redisConnectUnixWithTimeout(path, connectTimeout)
        } else {
            raw = redisConnectWithTimeout(configuration.host, Int32(configuration.port), connectTimeout)
        }
        guard let raw else {
            throw RedisError(.connectionFailed, "cannot allocate a hiredis context for \(address)")
        }
        let connection = HiredisContext(
            context: raw,
            address: address,
            arena: raw.pointee.err == 0 && replyArena ? ReplyArena() : nil,
            readTimeout: readTimeout
        )
        guard raw.pointee.err == 0 else {
            throw RedisError(
                .connectionFailed,
                "cannot connect to Redis at \(address): \(connection.errorText); is Redis running there?"
            )
        }
        guard redisSetTimeout(raw, Self.timeval(readTimeout)) == REDIS_OK else {
            throw RedisError(.connectionFailed, "cannot set the command timeout on \(address): \(connection.errorText)")
        }
        if configuration.unixSocketPath == nil { _ = redisEnableKeepAlive(raw) }
        if let password = configuration.password {
            var auth = RedisCommand("AUTH")
            if let user = configuration.username { auth.append(user) }
            auth.append(password)
            do {
                try connection.command(auth) { _ throws(RedisError) in }
            } catch where error.code == .connectionLost {
                throw error
            } catch {
                // The server's text ("WRONGPASS invalid username-password pair") names no secret.
                throw RedisError(
                    .authenticationFailed,
                    "Redis at \(address) refused the credentials"
                        + (configuration.username.map { " of user \"\($0)\"" } ?? "") + ": \(error.message)"
                )
            }
        }
        if configuration.database != 0 {
            var select = RedisCommand("SELECT")
            select.append(configuration.database)
            try connection.command(select) { _ throws(RedisError) in }
        }
        return connection
    }

    private static func timeval(_ duration: Duration) -> Glibc.timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    /// Whether an I/O error broke the connection; a broken context must be discarded.
    var isBroken: Bool { self.context.pointee.err != 0 }

    /// Sends one command and hands its reply to `body` (valid only during the call).
    ///
    /// - Throws: `connectionLost` on I/O errors, or the classified error reply.
    func command<T>(_ command: RedisCommand, _ body: (RedisReplyRef) throws(RedisError) -> T) throws(RedisError) -> T {
        let raw: UnsafeMutableRawPointer? = command.withArgv { argc, argv, lengths in
            redisCommandArgv(self.context, argc, argv, lengths)
        }
        guard let raw else { throw self.ioError(command.name) }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { self.release(raw) }
        let ref = RedisReplyRef(pointer: reply)
        if ref.kind == .error { throw RedisError(serverReply: ref.text, command: command.name) }
        return try body(ref)
    }

    /// Sends `commands` in one write and reads their replies in order (pipelining); `body`
    /// gets each reply's index and the reply. Every reply is read even when one is an error;
    /// the first error reply is thrown at the end.
    func pipeline(_ commands: [RedisCommand], _ body: (Int, RedisReplyRef) throws(RedisError) -> Void) throws(RedisError) {
        for command in commands {
            let status = command.withArgv { argc, argv, lengths in
                redisAppendCommandArgv(self.context, argc, argv, lengths)
            }
            guard status == REDIS_OK else { throw self.ioError(command.name) }
        }
        var firstError: RedisError?
        for (index, command) in commands.enumerated() {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(self.context, &raw) == REDIS_OK, let raw else { throw self.ioError(command.name) }
            defer { self.release(raw) }
            let ref = RedisReplyRef(pointer: raw.assumingMemoryBound(to: redisReply.self))
            if ref.kind == .error {
                if firstError == nil { firstError = RedisError(serverReply: ref.text, command: command.name) }
                continue
            }
            do {
                try body(index, ref)
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
    }

    /// Queues `command` in the output buffer without sending it; ``flush(_:)`` or
    /// ``nextReply(_:_:)`` sends it. Its reply is read later with ``nextReply(_:_:)``.
    func append(_ command: RedisCommand) throws(RedisError) {
        let status = command.withArgv { argc, argv, lengths in
            redisAppendCommandArgv(self.context, argc, argv, lengths)
        }
        guard status == REDIS_OK else { throw self.ioError(command.name) }
    }

    /// Writes every queued command to the socket now. (`redisGetReply` only writes when no
    /// earlier reply is buffered already, so commands queued behind a pipeline would wait.)
    func flush(_ name: String) throws(RedisError) {
        var done: Int32 = 0
        repeat {
            guard redisBufferWrite(self.context, &done) == REDIS_OK else { throw self.ioError(name) }
        } while done == 0
    }

    /// Reads the reply of the oldest command sent with ``append(_:)`` and hands it to `body`
    /// (valid only during the call). `name` names that command in errors.
    ///
    /// - Throws: `connectionLost` on I/O errors, or the classified error reply.
    func nextReply<T>(_ name: String, _ body: (RedisReplyRef) throws(RedisError) -> T) throws(RedisError) -> T {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(self.context, &raw) == REDIS_OK, let raw else { throw self.ioError(name) }
        defer { self.release(raw) }
        let ref = RedisReplyRef(pointer: raw.assumingMemoryBound(to: redisReply.self))
        if ref.kind == .error { throw RedisError(serverReply: ref.text, command: name) }
        return try body(ref)
    }

    /// Frees a reply once it was read.
    private func release(_ reply: UnsafeMutableRawPointer) {
        if let arena = self.arena {
            arena.reset()
        } else {
            freeReplyObject(reply)
        }
    }

    private func ioError(_ command: String) -> RedisError {
        var text = self.context.pointee.err == 0 ? "no reply" : self.errorText
        if self.context.pointee.err == REDIS_ERR_IO && (text == String(cString: strerror(EAGAIN)) || text == String(cString: strerror(EWOULDBLOCK))) {
            // A socket timeout: the server accepted the connection but did not answer.
            text = "timed out after \(Self.seconds(self.readTimeout)) s without a reply; is the server at \(self.address) a Redis that answers?"
        }
        return RedisError(.connectionLost, "\(command) to Redis at \(self.address) failed: \(text)")
    }

    /// `duration` in seconds, as short as it can be written (`5`, `0.25`).
    private static func seconds(_ duration: Duration) -> String {
        let milliseconds = duration.inMilliseconds
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)" : "\(Double(milliseconds) / 1000)"
    }

    private var errorText: String {
        String(cString: sluice_redis_error_string(self.context))
    }
}

@available(*, unavailable)
extension HiredisContext: Sendable {}

/// A reply of hiredis, borrowed: valid only inside the closure it was passed to.
struct RedisReplyRef {
    /// The kinds of RESP2 replies.
    enum Kind: Equatable { case string, array, integer, null, status, error, other }

    private let pointer: UnsafeMutablePointer<redisReply>

    init(pointer: UnsafeMutablePointer<redisReply>) { self.pointer = pointer }

    var kind: Kind {
        switch Int32(self.pointer.pointee.type) {
        case REDIS_REPLY_STRING: return .string
        case REDIS_REPLY_ARRAY: return .array
        case REDIS_REPLY_INTEGER: return .integer
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_STATUS: return .status
        case REDIS_REPLY_ERROR: return .error
        default: return .other
        }
    }

    /// Elements of an array reply (0 for other kinds).
    var count: Int {
        Int32(self.pointer.pointee.type) == REDIS_REPLY_ARRAY ? self.pointer.pointee.elements : 0
    }

    /// Element `index` of an array reply.
    subscript(index: Int) -> RedisReplyRef {
        RedisReplyRef(pointer: self.pointer.pointee.element[index]!)
    }

    /// The integer of an integer reply.
    var integer: Int { Int(self.pointer.pointee.integer) }

    /// The bytes of a string or status reply, copied once into a new array.
    var bytes: [UInt8] {
        let reply = self.pointer.pointee
        guard let start = reply.str, reply.len > 0 else { return [] }
        // Not `init(unsafeUninitializedCapacity:)`: that one allocates through the standard
        // library's unspecialized path and looks the array's generic metadata up on every
        // call, which cost more than the copy itself (about 95 ns against 40 ns for 100 bytes).
        return [UInt8](UnsafeRawBufferPointer(start: start, count: reply.len))
    }

    /// The bytes of a string reply, in the reply's memory: valid only while the reply is.
    var unsafeBytes: UnsafeRawBufferPointer {
        let reply = self.pointer.pointee
        guard let start = reply.str, reply.len > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: start, count: reply.len)
    }

    /// The text of a string, status or error reply.
    var text: String {
        let reply = self.pointer.pointee
        guard let start = reply.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: start, count: reply.len), as: UTF8.self)
    }

    /// A stream entry id (`ms-seq`) read straight from the reply's bytes.
    var entryID: RedisEntryID? {
        let reply = self.pointer.pointee
        guard let start = reply.str, reply.len > 0 else { return nil }
        let bytes = UnsafeRawBufferPointer(start: start, count: reply.len)
        var milliseconds: UInt64 = 0
        var sequence: UInt64 = 0
        var seenDash = false
        var digits = 0
        for byte in bytes {
            if byte == UInt8(ascii: "-") {
                guard !seenDash, digits > 0 else { return nil }
                seenDash = true
                digits = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let digit = UInt64(byte - UInt8(ascii: "0"))
            if seenDash { sequence = sequence &* 10 &+ digit } else { milliseconds = milliseconds &* 10 &+ digit }
            digits += 1
        }
        guard digits > 0 else { return nil }
        return RedisEntryID(milliseconds: milliseconds, sequence: sequence)
    }

    /// Whether a string reply holds exactly `value`.
    func equals(_ value: [UInt8]) -> Bool {
        let reply = self.pointer.pointee
        guard reply.len == value.count else { return false }
        guard let start = reply.str else { return value.isEmpty }
        return value.withUnsafeBytes { memcmp(start, $0.baseAddress!, reply.len) == 0 }
    }

    /// Whether a string reply equals `value`.
    func equals(_ value: StaticString) -> Bool {
        let reply = self.pointer.pointee
        guard let start = reply.str, reply.len == value.utf8CodeUnitCount else { return false }
        return memcmp(start, value.utf8Start, reply.len) == 0
    }
}
