//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import SluiceConnector

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
    /// The database number (`SELECT`). Default 0; 0 to 2147483647.
    public var database: Int = 0
    /// The ACL user for `AUTH` (`nil`: the default user). Default `nil`.
    public var username: String?
    /// The password for `AUTH` (`nil`: no `AUTH`). Never logged or shown in errors.
    public var password: String?
    /// How long connecting may take. Default 5 s; 1 ms to 1 hour (URL `connect_timeout_ms`).
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command may wait for its reply (blocking reads get ``blockTimeout`` on
    /// top). Default 5 s; 1 ms to 1 hour (URL `command_timeout_ms`).
    public var commandTimeout: Duration = .seconds(5)
    /// The first wait before reconnecting after a broken connection; it doubles (with
    /// jitter) up to ``maximumReconnectBackoff``. Default 50 ms; 1 ms to 1 hour.
    public var reconnectBackoff: Duration = .milliseconds(50)
    /// The longest wait between reconnection attempts. Default 2 s; ``reconnectBackoff`` to 1 hour.
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
    /// back): reading waits for settlement beyond it, so a consumer killed with `kill -9` has
    /// at most this many delivered again (reliable and stream modes). Default `nil`: the
    /// pipeline's window (`SourceContext/window`: Σ processor concurrency × maxDemand plus
    /// the batches being built), as much as the stages can hold; 1 to 10 000 000 when set
    /// (URL `max_in_flight`).
    public var maxInFlight: Int?
    /// The most payload bytes read and not yet settled: no read starts while this many are
    /// unsettled. Default 256 MiB; 1 KiB to 1 TiB.
    public var maxInFlightBytes: Int = 256 << 20
    /// The most items the source takes in all (`nil`: no limit). It never reads more (reads
    /// ask for no more than what is still missing), so nothing has to be given back; once it
    /// took them all it ends by itself, as after a drain. For `sluice drain --count`. Default
    /// `nil`; 1 or more when set.
    public var limit: Int?
    /// The most payload bytes one read takes; an item larger than it comes alone. Reliable
    /// mode holds each read to it exactly (its move script counts each item's bytes); list
    /// and stream replies cannot be cut by bytes in Redis, so those modes size each read by
    /// the largest item of the read before (the first read asks for at most 64 items).
    /// Default 4 MiB; 1 KiB to 1 GiB.
    public var maxReadBytes: Int = 4 << 20
    /// How long one blocking read waits on an empty list or stream before it looks again.
    /// New data wakes it at once and a drain ends it at once (`CLIENT UNBLOCK` from the other
    /// connection), so this only bounds a drain when that cannot reach Redis. Default 100 ms; 1 ms to 60 s (URL `block_ms`).
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

    // Documented vars with defaults, the same shape as RabbitMQConfiguration's connection options:
    // each adapter's configuration lists its own options (STYLE habit 7); only the shape repeats.
    /// Reliable mode: how long a consumer's liveness key lives without refresh; it is
    /// refreshed every third of this. Default 10 s; 100 ms to 1 day (URL `ttl_ms`).
    public var livenessTTL: Duration = .seconds(10)
    /// Reliable mode: how often the reaper looks for dead consumers. Default 5 s; 10 ms to 1
    /// hour (URL `reap_ms`).
    public var reapInterval: Duration = .seconds(5)
    /// Stream mode: how long an entry must have been pending, unacknowledged, before this
    /// consumer claims it with `XAUTOCLAIM` (its consumer is presumed dead, or the entry was
    /// given back with `.requeue`). Default 30 s; 0 to 7 days (URL `claim_idle_ms`).
    public var claimMinIdle: Duration = .seconds(30)
    /// Stream mode: how often to look for stale entries to claim. Default 1 s; 10 ms to 1 hour
    /// (URL `claim_interval_ms`).
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
        guard (1...5000).contains(self.batchSize) else { throw fail("batchSize \(self.batchSize) must be between 1 and 5000") }
        if let window = self.maxInFlight, !(1...10_000_000).contains(window) {
            throw fail("maxInFlight \(window) must be between 1 and 10000000")
        }
        guard (1024...(1 << 40)).contains(self.maxInFlightBytes) else {
            throw fail("maxInFlightBytes \(self.maxInFlightBytes) must be between 1024 and 1099511627776")
        }
        if let limit = self.limit, limit < 1 { throw fail("limit \(limit) must be at least 1") }
        guard (1024...(1 << 30)).contains(self.maxReadBytes) else {
            throw fail("maxReadBytes \(self.maxReadBytes) must be between 1024 and 1073741824")
        }
        func within(_ name: String, _ value: Duration, _ range: ClosedRange<Duration>, _ text: String) throws(RedisError) {
            guard range.contains(value) else { throw fail("\(name) must be from \(text)") }
        }
        try within("blockTimeout", self.blockTimeout, .milliseconds(1) ... .seconds(60), "1 ms to 60 s")
        try within("connectTimeout", self.connectTimeout, .milliseconds(1) ... .seconds(3600), "1 ms to 1 hour")
        try within("commandTimeout", self.commandTimeout, .milliseconds(1) ... .seconds(3600), "1 ms to 1 hour")
        try within("reconnectBackoff", self.reconnectBackoff, .milliseconds(1) ... .seconds(3600), "1 ms to 1 hour")
        try within("maximumReconnectBackoff", self.maximumReconnectBackoff, self.reconnectBackoff ... .seconds(3600), "reconnectBackoff to 1 hour")
        guard !self.consumer.isEmpty, !self.group.isEmpty else { throw fail("consumer and group must not be empty") }
        try within("livenessTTL", self.livenessTTL, .milliseconds(100) ... .seconds(86_400), "100 ms to 1 day")
        try within("reapInterval", self.reapInterval, .milliseconds(10) ... .seconds(3600), "10 ms to 1 hour")
        try within("claimInterval", self.claimInterval, .milliseconds(10) ... .seconds(3600), "10 ms to 1 hour")
        try within("claimMinIdle", self.claimMinIdle, .zero ... .seconds(604_800), "0 to 7 days")
        guard Self.databaseRange.contains(self.database) else { throw fail("database \(self.database) must be from 0 to \(Self.databaseRange.upperBound)") }
        guard self.effectiveDeadLetterKey != self.key else { throw fail("deadLetterKey must differ from key") }
    }
}

extension RedisConfiguration {
    /// The numeric URL parameters: name, range, and what each sets.
    ///
    /// | parameter | range | sets |
    /// |---|---|---|
    /// | `db` (unix URLs; the path of redis URLs) | 0 to 2147483647 | ``database`` |
    /// | `batch` | 1 to 5000 | ``batchSize`` |
    /// | `block_ms` | 1 to 60000 | ``blockTimeout`` |
    /// | `claim_idle_ms` | 0 to 604800000 (7 days) | ``claimMinIdle`` |
    /// | `claim_interval_ms` | 10 to 3600000 (1 hour) | ``claimInterval`` |
    /// | `ttl_ms` | 100 to 86400000 (1 day) | ``livenessTTL`` |
    /// | `reap_ms` | 10 to 3600000 (1 hour) | ``reapInterval`` |
    /// | `connect_timeout_ms`, `command_timeout_ms` | 1 to 3600000 (1 hour) | ``connectTimeout``, ``commandTimeout`` |
    /// | `max_in_flight` | 1 to 10000000 | ``maxInFlight`` |
    /// | `max_in_flight_bytes` | 1024 to 1099511627776 (1 TiB) | ``maxInFlightBytes`` |
    /// | `max_read_bytes` | 1024 to 1073741824 (1 GiB) | ``maxReadBytes`` |
    static let numericParameters: [(name: String, range: ClosedRange<Int>)] = [
        ("batch", 1...5000),
        ("block_ms", 1...60_000),
        ("claim_idle_ms", 0...604_800_000),
        ("claim_interval_ms", 10...3_600_000),
        ("ttl_ms", 100...86_400_000),
        ("reap_ms", 10...3_600_000),
        ("connect_timeout_ms", 1...3_600_000),
        ("command_timeout_ms", 1...3_600_000),
        ("max_in_flight", 1...10_000_000),
        ("max_in_flight_bytes", 1024...(1 << 40)),
        ("max_read_bytes", 1024...(1 << 30)),
    ]

    /// The range of a database number.
    static let databaseRange = 0...Int(Int32.max)

    /// Reads a URL: `redis://[user[:password]@]host[:port][/database]?key=…` (an IPv6 host in
    /// brackets: `redis://[::1]:6379/0?key=k`) or
    /// `unix:///path/to/socket?key=…[&db=n][&password=…]`.
    ///
    /// Query parameters: `key` (required), `mode` (`list`, `reliable`, `stream`), `group`,
    /// `consumer`, `dead` (dead-letter key), `field` (stream payload field), `password_env`
    /// (the name of an environment variable holding the password, so that it need not be in
    /// the URL or `ps`), the numeric parameters below, and for unix sockets `db`, `user`,
    /// `password`. User and password may be percent-encoded.
    ///
    /// Numeric parameters and their ranges (a value outside is a one-line error):
    /// `batch` 1–5000, `block_ms` 1–60000, `claim_idle_ms` 0–604800000, `claim_interval_ms`
    /// 10–3600000, `ttl_ms` 100–86400000, `reap_ms` 10–3600000, `connect_timeout_ms` and
    /// `command_timeout_ms` 1–3600000, `max_in_flight` 1–10000000, `max_in_flight_bytes`
    /// 1024–1099511627776, `max_read_bytes` 1024–1073741824, `db` 0–2147483647.
    ///
    /// - Throws: ``RedisError`` with code ``RedisError/Code-swift.struct/invalidURL`` naming
    ///   what is wrong, in one line; the URL is shown at most 200 characters long and never
    ///   with its password.
    public init(url: String) throws(RedisError) {
        let shown = Self.shown(url)
        func fail(_ text: String) -> RedisError {
            RedisError(.invalidURL, "invalid Redis URL \(shown): \(text); expected redis://host[:port][/db]?key=NAME[&mode=list|reliable|stream], with user and password before the host if needed")
        }
        guard let components = URLComponents(string: url) else { throw fail("not a URL") }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] {
            guard query[item.name] == nil else { throw fail("parameter \(Self.shown(item.name, limit: 40)) given twice") }
            query[item.name] = item.value ?? ""
        }
        guard let key = query.removeValue(forKey: "key"), !key.isEmpty else { throw fail("missing key=NAME") }
        self.init(key: key)
        switch components.scheme?.lowercased() {
        case "redis":
            guard var host = components.host, !host.isEmpty else { throw fail("missing host") }
            if host.hasPrefix("[") && host.hasSuffix("]") {
                // An IPv6 literal: hiredis takes the address without its brackets.
                host = String(host.dropFirst().dropLast())
            }
            guard !host.isEmpty else { throw fail("missing host") }
            self.host = host
            if let port = components.port {
                guard (1...65535).contains(port) else { throw fail("port \(port) is not between 1 and 65535") }
                self.port = port
            } else if components.rangeOfPort.map({ !$0.isEmpty }) ?? false {
                throw fail("the port must be a number between 1 and 65535")
            }
            let path = components.path.drop { $0 == "/" }
            if !path.isEmpty {
                guard let database = Int(path), Self.databaseRange.contains(database) else {
                    throw fail("the path must be a database number between 0 and \(Self.databaseRange.upperBound)")
                }
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
                guard let number = Int(database), Self.databaseRange.contains(number) else {
                    throw fail("db must be a database number between 0 and \(Self.databaseRange.upperBound)")
                }
                self.database = number
            }
            if let user = query.removeValue(forKey: "user") { self.username = user }
            if let password = query.removeValue(forKey: "password") { self.password = password }
        case let scheme:
            throw fail("the scheme must be redis or unix, not \(scheme.map { Self.shown($0, limit: 20) } ?? "missing")")
        }
        if let variable = query.removeValue(forKey: "password_env") {
            guard self.password == nil else { throw fail("give the password once: in the URL or with password_env, not both") }
            guard !variable.isEmpty, let password = ProcessInfo.processInfo.environment[variable] else {
                throw fail("password_env names the environment variable \(Self.shown(variable, limit: 60)), which is not set")
            }
            self.password = password
        }
        if let mode = query.removeValue(forKey: "mode") {
            guard let parsed = Mode(mode) else { throw fail("mode must be list, reliable or stream, not \(Self.shown(mode, limit: 40))") }
            self.mode = parsed
        }
        if let group = query.removeValue(forKey: "group") { self.group = group }
        if let consumer = query.removeValue(forKey: "consumer") { self.consumer = consumer }
        if let dead = query.removeValue(forKey: "dead") { self.deadLetterKey = dead }
        if let field = query.removeValue(forKey: "field") { self.payloadField = field }
        var numbers: [String: Int] = [:]
        for (name, range) in Self.numericParameters {
            guard let text = query.removeValue(forKey: name) else { continue }
            guard let value = Int(text), range.contains(value) else {
                throw fail("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(Self.shown(text, limit: 40))")
            }
            numbers[name] = value
        }
        if let value = numbers["batch"] { self.batchSize = value }
        if let value = numbers["block_ms"] { self.blockTimeout = .milliseconds(value) }
        if let value = numbers["claim_idle_ms"] { self.claimMinIdle = .milliseconds(value) }
        if let value = numbers["claim_interval_ms"] { self.claimInterval = .milliseconds(value) }
        if let value = numbers["ttl_ms"] { self.livenessTTL = .milliseconds(value) }
        if let value = numbers["reap_ms"] { self.reapInterval = .milliseconds(value) }
        if let value = numbers["connect_timeout_ms"] { self.connectTimeout = .milliseconds(value) }
        if let value = numbers["command_timeout_ms"] { self.commandTimeout = .milliseconds(value) }
        if let value = numbers["max_in_flight"] { self.maxInFlight = value }
        if let value = numbers["max_in_flight_bytes"] { self.maxInFlightBytes = value }
        if let value = numbers["max_read_bytes"] { self.maxReadBytes = value }
        if let unknown = query.keys.sorted().first { throw fail("unknown parameter \(Self.shown(unknown, limit: 40))") }
        do {
            try self.validate()
        } catch {
            throw RedisError(.invalidURL, "invalid Redis URL \(shown): \(error.message)")
        }
    }

    /// `text` with every password of a Redis URL in it replaced by `***`, for output: the
    /// password part of any `scheme://user:password@` (up to the last `@`), all the
    /// credentials of a malformed `scheme:user:password@` or `scheme:/password@` (which way
    /// they were meant cannot be told), and the value of every `password=` parameter, however
    /// many there are and wherever they stand.
    public static func redacting(_ text: String) -> String {
        var output = ""
        var rest = Substring(text)
        while let colon = Self.schemeColon(in: rest) {
            output += rest[...colon]
            rest = rest[rest.index(after: colon)...]
            let slashes = rest.prefix { $0 == "/" }
            output += slashes
            rest = rest[slashes.endIndex...]
            // The authority runs to the next whitespace; its credentials to its last "@".
            let end = rest.firstIndex(where: \.isWhitespace) ?? rest.endIndex
            guard let at = rest[..<end].lastIndex(of: "@") else { continue }
            let credentials = rest[..<at]
            if slashes.count == 2 {
                guard let separator = credentials.firstIndex(of: ":") else { continue }
                output += credentials[...separator] + "***"
            } else {
                output += "***"
            }
            rest = rest[at...]
        }
        output += rest
        // Then every parameter whose name ends in "password" (percent-decoded, any case; also
        // inside another value, as in dead=password=…): its value up to the next & or #.
        return SecretParameters.redacting(output) { $0.hasSuffix("password") }
    }

    /// The first colon in `text` that could end a URL scheme (it follows a letter, digit, `+`,
    /// `-` or `.`; malformed input counts too, as in `9redis://`), or `nil`.
    private static func schemeColon(in text: Substring) -> Substring.Index? {
        var previous: Character?
        for index in text.indices {
            let character = text[index]
            if character == ":", let before = previous, before.isASCII, before.isLetter || before.isNumber || "+-.".contains(before) {
                return index
            }
            previous = character
        }
        return nil
    }

    /// A URL (or part of one) as errors show it: redacted (``redacting(_:)``), its percent-
    /// encoded password values too, and at most `limit` characters long.
    static func shown(_ text: String, limit: Int = 200) -> String {
        var redacted = Self.redacting(text)
        if let components = URLComponents(string: text) {
            var secrets: [String] = []
            if let password = components.percentEncodedPassword, !password.isEmpty { secrets.append(password) }
            for item in components.percentEncodedQueryItems ?? [] where item.name.removingPercentEncoding?.lowercased() == "password" {
                if let value = item.value, !value.isEmpty { secrets.append(value) }
            }
            for secret in secrets { redacted = redacted.replacingOccurrences(of: secret, with: "***") }
        }
        guard redacted.count > limit else { return redacted }
        return String(redacted.prefix(limit)) + "… (\(redacted.count) characters)"
    }
}
