//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// Where and how a ``RedisSource`` or ``RedisSink`` talks to Redis.
///
/// ```swift
/// var configuration = RedisConfiguration(key: "jobs")
/// configuration.port = 16379
/// configuration.mode = .stream
/// let source = RedisSource(configuration: configuration)
/// ```
///
/// or from a URL: `RedisConfiguration(url: "redis://user:secret@127.0.0.1:6379/0?key=jobs&mode=reliable")`.
/// ``description`` never shows the password.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// How a source reads its key.
    public struct Mode: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable { case list, reliable, stream }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A list, popped (`LPOP key n`, `BLMPOP … COUNT n` while it is empty): **at most
        /// once**. An item popped is gone from Redis; if the process dies before handling it, or
        /// the connection breaks before the pop's reply arrives, it is lost. (Popped items the
        /// pipeline never took, when it is stopped, are pushed back to the head.) Failure
        /// dispositions `.requeue` and `.deadLetter` push the item back to the list or to the
        /// dead-letter list; `.drop` discards it.
        public static let list = Mode(.list)
        /// A list, moved atomically into a per-consumer processing list and removed from it on
        /// acknowledgement: **at least once** (the default). A consumer's liveness key expires
        /// when it dies, and a reaper returns its processing list to the source list.
        public static let reliable = Mode(.reliable)
        /// A stream read through a consumer group (`XREADGROUP`), acknowledged with `XACK`:
        /// **at least once**, with delivery counts.
        public static let stream = Mode(.stream)

        /// Reads `list`, `reliable` or `stream`.
        public init?(_ text: String) {
            guard let base = Base(rawValue: text) else { return nil }
            self.init(base)
        }

        public var description: String { self.base.rawValue }
    }

    // MARK: Connection

    /// The host name or address (ignored when ``unixSocketPath`` is set). Default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// The TCP port. Default 6379.
    public var port: Int = 6379
    /// A unix socket path to connect to instead of host and port. Default `nil`.
    public var unixSocketPath: String?
    /// The database number (`SELECT`). Default 0.
    public var database: Int = 0
    /// The ACL user for `AUTH` (`nil`: the default user). Default `nil`.
    public var username: String?
    /// The password for `AUTH` (`nil`: no `AUTH`). Never logged or shown in errors.
    public var password: String?
    /// How long connecting may take. Default 5 s.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command may wait for its reply (blocking reads get ``blockTimeout`` on
    /// top). Default 5 s.
    public var commandTimeout: Duration = .seconds(5)
    /// The first wait before reconnecting after a broken connection; it doubles (with
    /// jitter) up to ``maximumReconnectBackoff``. Default 50 ms.
    public var reconnectBackoff: Duration = .milliseconds(50)
    /// The longest wait between reconnection attempts. Default 2 s.
    public var maximumReconnectBackoff: Duration = .seconds(2)

    // MARK: Data

    /// The list key or stream name.
    public var key: String
    /// How a source reads ``key``; for a sink, ``Mode/stream`` means `XADD` and the list modes
    /// mean `RPUSH`. Default ``Mode/reliable``.
    public var mode: Mode = .reliable
    /// The most items one read takes (the read takes the smaller of this and the unmet
    /// demand). Default 1000; at most 5000.
    public var batchSize: Int = 1000
    /// The most items read and not yet settled with Redis (acknowledged, failed or given
    /// back): reading waits for settlement beyond it. Default 100 000; 1 to 10 000 000.
    public var maxInFlight: Int = 100_000
    /// The most payload bytes read and not yet settled: no read starts while this many are
    /// unsettled. Default 256 MiB; 1 KiB to 1 TiB.
    public var maxInFlightBytes: Int = 256 << 20
    /// The most payload bytes one read takes; an item larger than it comes alone. Reliable
    /// mode holds each read to it exactly (its move script counts each item's bytes); list
    /// and stream replies cannot be cut by bytes in Redis, so those modes size each read by
    /// the items seen so far.
    /// Default 4 MiB; 1 KiB to 1 GiB.
    public var maxReadBytes: Int = 4 << 20
    /// How long one blocking read waits on an empty list or stream before it looks again.
    /// New data wakes it at once and a drain ends it at once (`CLIENT UNBLOCK` from the other
    /// connection), so this only bounds a drain when that cannot reach Redis. Default 100 ms.
    public var blockTimeout: Duration = .milliseconds(100)
    /// Where `.deadLetter` sends messages: a list (list modes) or a stream (stream mode).
    /// Default `nil`: `<key>:dead`.
    public var deadLetterKey: String?
    /// The consumer's name (reliable mode: its processing list is `<key>:processing:<name>`;
    /// stream mode: the consumer within ``group``). A stable name lets a restarted consumer
    /// take its own unfinished messages back at once. Default: host name, process id and a
    /// random suffix.
    public var consumer: String = RedisConfiguration.defaultConsumerName()
    /// The consumer group (stream mode); created if missing. Default `sluice`.
    public var group: String = "sluice"
    /// Where a new consumer group starts reading (stream mode): `0` for the whole stream,
    /// `$` for entries added from now on. Default `0`.
    public var groupStartID: String = "0"
    /// The field of a stream entry that holds the payload; an entry without it gives the
    /// value of its first field. The sink writes this field. Default `payload`.
    public var payloadField: String = "payload"

    // MARK: Failure handling

    /// Reliable mode: how long a consumer's liveness key lives without refresh; it is
    /// refreshed every third of this. Default 10 s.
    public var livenessTTL: Duration = .seconds(10)
    /// Reliable mode: how often the reaper looks for dead consumers. Default 5 s.
    public var reapInterval: Duration = .seconds(5)
    /// Stream mode: how long an entry must have been pending, unacknowledged, before this
    /// consumer claims it with `XAUTOCLAIM` (its consumer is presumed dead, or the entry was
    /// given back with `.requeue`). Default 30 s.
    public var claimMinIdle: Duration = .seconds(30)
    /// Stream mode: how often to look for stale entries to claim. Default 1 s.
    public var claimInterval: Duration = .seconds(1)

    /// Creates a configuration for `key` on `127.0.0.1:6379`.
    public init(key: String) {
        self.key = key
    }

    /// The dead-letter key in effect.
    public var effectiveDeadLetterKey: String { self.deadLetterKey ?? "\(self.key):dead" }

    /// `host:port` or `unix:path`, for logs and errors.
    public var address: String {
        if let path = self.unixSocketPath { return "unix:\(path)" }
        return "\(self.host):\(self.port)"
    }

    public var description: String {
        var text = "redis \(self.address) db \(self.database) key \(self.key) mode \(self.mode)"
        if let user = self.username { text += " user \(user)" }
        if self.password != nil { text += " password ***" }
        return text
    }

    /// The default consumer name: host name, process id and a random suffix.
    public static func defaultConsumerName() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(suffix)"
    }

    /// Checks the values.
    ///
    /// - Throws: ``RedisError`` with code ``RedisError/Code-swift.struct/invalidConfiguration``.
    public func validate() throws(RedisError) {
        func fail(_ text: String) -> RedisError { RedisError(.invalidConfiguration, "invalid Redis configuration: \(text)") }
        guard !self.key.isEmpty else { throw fail("key must not be empty") }
        guard self.unixSocketPath != nil || !self.host.isEmpty else { throw fail("host must not be empty") }
        guard (1...65535).contains(self.port) else { throw fail("port \(self.port) is not between 1 and 65535") }
        guard self.database >= 0 else { throw fail("database \(self.database) must not be negative") }
        guard (1...5000).contains(self.batchSize) else { throw fail("batchSize \(self.batchSize) must be between 1 and 5000") }
        guard (1...10_000_000).contains(self.maxInFlight) else {
            throw fail("maxInFlight \(self.maxInFlight) must be between 1 and 10000000")
        }
        guard (1024...(1 << 40)).contains(self.maxInFlightBytes) else {
            throw fail("maxInFlightBytes \(self.maxInFlightBytes) must be between 1024 and 1099511627776")
        }
        guard (1024...(1 << 30)).contains(self.maxReadBytes) else {
            throw fail("maxReadBytes \(self.maxReadBytes) must be between 1024 and 1073741824")
        }
        guard self.blockTimeout >= .milliseconds(1) else { throw fail("blockTimeout must be at least 1 ms") }
        guard self.connectTimeout > .zero, self.commandTimeout > .zero else { throw fail("timeouts must be positive") }
        guard self.reconnectBackoff > .zero, self.maximumReconnectBackoff >= self.reconnectBackoff else {
            throw fail("reconnectBackoff must be positive and at most maximumReconnectBackoff")
        }
        guard !self.consumer.isEmpty, !self.group.isEmpty else { throw fail("consumer and group must not be empty") }
        guard self.livenessTTL >= .milliseconds(100) else { throw fail("livenessTTL must be at least 100 ms") }
        guard self.reapInterval > .zero, self.claimInterval > .zero, self.claimMinIdle >= .zero else {
            throw fail("reapInterval and claimInterval must be positive, claimMinIdle not negative")
        }
        guard self.effectiveDeadLetterKey != self.key else { throw fail("deadLetterKey must differ from key") }
    }
}

extension RedisConfiguration {
    /// Reads a URL: `redis://[user[:password]@]host[:port][/database]?key=…` or
    /// `unix:///path/to/socket?key=…[&db=n][&password=…]`.
    ///
    /// Query parameters: `key` (required), `mode` (`list`, `reliable`, `stream`), `group`,
    /// `consumer`, `batch`, `dead` (dead-letter key), `field` (stream payload field),
    /// `block_ms`, `claim_idle_ms`, `ttl_ms`, `max_in_flight`, `max_in_flight_bytes`, and for unix sockets `db`, `user`, `password`.
    /// User and password may be percent-encoded.
    ///
    /// - Throws: ``RedisError`` with code ``RedisError/Code-swift.struct/invalidURL`` naming
    ///   what is wrong (the password is never repeated).
    public init(url: String) throws(RedisError) {
        let shown = Self.redacted(url)
        func fail(_ text: String) -> RedisError {
            RedisError(.invalidURL, "invalid Redis URL \(shown): \(text); expected redis://[user:password@]host[:port][/db]?key=NAME[&mode=list|reliable|stream]")
        }
        guard let components = URLComponents(string: url) else { throw fail("not a URL") }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] {
            guard query[item.name] == nil else { throw fail("parameter \(item.name) given twice") }
            query[item.name] = item.value ?? ""
        }
        guard let key = query.removeValue(forKey: "key"), !key.isEmpty else { throw fail("missing key=NAME") }
        self.init(key: key)
        switch components.scheme?.lowercased() {
        case "redis":
            guard let host = components.host, !host.isEmpty else { throw fail("missing host") }
            self.host = host
            if let port = components.port { self.port = port }
            let path = components.path.drop { $0 == "/" }
            if !path.isEmpty {
                guard let database = Int(path), database >= 0 else { throw fail("the path must be a database number") }
                self.database = database
            }
            if let user = components.user, !user.isEmpty { self.username = user }
            if let password = components.password { self.password = password }
        case "unix":
            guard components.host == nil || components.host == "" else {
                throw fail("a unix URL has no host: write unix:///path/to/socket")
            }
            guard !components.path.isEmpty else { throw fail("missing the socket path") }
            self.unixSocketPath = components.path
            if let database = query.removeValue(forKey: "db") {
                guard let number = Int(database), number >= 0 else { throw fail("db must be a database number") }
                self.database = number
            }
            if let user = query.removeValue(forKey: "user") { self.username = user }
            if let password = query.removeValue(forKey: "password") { self.password = password }
        case let scheme:
            throw fail("the scheme must be redis or unix, not \(scheme ?? "missing")")
        }
        if let mode = query.removeValue(forKey: "mode") {
            guard let parsed = Mode(mode) else { throw fail("mode must be list, reliable or stream, not \(mode)") }
            self.mode = parsed
        }
        if let group = query.removeValue(forKey: "group") { self.group = group }
        if let consumer = query.removeValue(forKey: "consumer") { self.consumer = consumer }
        if let dead = query.removeValue(forKey: "dead") { self.deadLetterKey = dead }
        if let field = query.removeValue(forKey: "field") { self.payloadField = field }
        func integer(_ name: String) throws(RedisError) -> Int? {
            guard let text = query.removeValue(forKey: name) else { return nil }
            guard let value = Int(text), value >= 0 else { throw fail("\(name) must be a whole number, not \(text)") }
            return value
        }
        if let batch = try integer("batch") { self.batchSize = batch }
        if let block = try integer("block_ms") { self.blockTimeout = .milliseconds(block) }
        if let idle = try integer("claim_idle_ms") { self.claimMinIdle = .milliseconds(idle) }
        if let ttl = try integer("ttl_ms") { self.livenessTTL = .milliseconds(ttl) }
        if let window = try integer("max_in_flight") { self.maxInFlight = window }
        if let bytes = try integer("max_in_flight_bytes") { self.maxInFlightBytes = bytes }
        if let unknown = query.keys.sorted().first { throw fail("unknown parameter \(unknown)") }
        do {
            try self.validate()
        } catch {
            throw RedisError(.invalidURL, "invalid Redis URL \(shown): \(error.message)")
        }
    }

    /// The URL with any password replaced by `***`.
    static func redacted(_ url: String) -> String {
        var text = url
        if let at = text.range(of: "@"), let schemeEnd = text.range(of: "://"), schemeEnd.upperBound <= at.lowerBound {
            let credentials = text[schemeEnd.upperBound..<at.lowerBound]
            if let colon = credentials.firstIndex(of: ":") {
                text.replaceSubrange(text.index(after: colon)..<at.lowerBound, with: "***")
            }
        }
        if let range = text.range(of: "password=") {
            let end = text[range.upperBound...].firstIndex(of: "&") ?? text.endIndex
            text.replaceSubrange(range.upperBound..<end, with: "***")
        }
        return text
    }
}
