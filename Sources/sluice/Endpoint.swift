//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceKafka
import SluiceRabbitMQ
import SluiceConnector
import SluiceRedis

/// The URLs every `sluice` subcommand reads, as the help texts show them.
enum EndpointHelp {
    static let urls = """
        URLs: redis://[user:password@]host[:port][/db]?key=KEY[&mode=list|reliable|stream][&group=G][&consumer=C] \
        and unix:///path/to/redis.sock?key=KEY; amqp://[user:password@]host[:port][/vhost]?queue=QUEUE[&prefetch=P] \
        (amqps:// for TLS); kafka://host:port[,host:port]/topic?group=G[&offset=earliest|latest][&librdkafka.property=value]; \
        stdin: (the lines of standard input), stdout: (one line per message), file:PATH (a file's lines; as a \
        sink, lines appended).
        """
}

/// A URL's scheme, as far as `sluice` cares: which connector handles it.
enum EndpointScheme {
    case redis, rabbitMQ, kafka, standardInput, standardOutput, file

    /// The scheme of `url`, or ``UnsupportedURL`` naming it.
    init(url: String) throws(UnsupportedURL) {
        let scheme = url.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first.map { $0.lowercased() } ?? ""
        switch scheme {
        case "redis", "unix": self = .redis
        case "amqp", "amqps": self = .rabbitMQ
        case "kafka": self = .kafka
        case "stdin": self = .standardInput
        case "stdout": self = .standardOutput
        case "file": self = .file
        default: throw UnsupportedURL(scheme: String(Redaction.redact(scheme).prefix(40)))
        }
    }

    /// The path of a `file:PATH` (or `file://PATH`) URL.
    static func filePath(_ url: String) throws(EndpointError) -> String {
        var path = Substring(url.dropFirst("file:".count))
        if path.hasPrefix("//") { path = path.dropFirst(2) }
        guard !path.isEmpty else { throw EndpointError("invalid file URL \(Redaction.shown(url)): expected file:PATH") }
        return String(path)
    }
}

/// Redacts secrets from anything `sluice` prints: every connector's passwords and secrets.
enum Redaction {
    /// `text` with passwords of any `scheme://user:password@`, and the values of parameters
    /// named like a password, a secret or a private key (Redis, AMQP and Kafka URLs alike),
    /// replaced by `***`.
    static func redact(_ text: String) -> String {
        // Redis passwords (URL credentials and password= parameters, also those of AMQP URLs),
        // then Kafka's secret librdkafka properties (sasl.oauthbearer.client.secret, ssl.key.pem, …).
        SecretParameters.redacting(RedisConfiguration.redacting(text)) { name in
            KafkaConfiguration.isSecret(String(name.split(separator: "=").last ?? ""))
        }
    }

    /// A URL as errors show it: redacted and at most 200 characters long.
    static func shown(_ url: String) -> String {
        let redacted = Self.redact(url)
        return redacted.count > 200 ? String(redacted.prefix(200)) + "…" : redacted
    }
}

/// A value of a message's metadata, as `tail` prints it.
enum MetadataValue {
    case text(String)
    case number(Int64)
    case flag(Bool)
    case bytes([UInt8])
}

/// Metadata that `tail` can print: name and value pairs, in order.
protocol MetadataFields: MessageMetadata {
    /// The fields, in the order they are printed.
    var fields: [(name: String, value: MetadataValue)] { get }
}

extension LineMetadata: MetadataFields {
    var fields: [(name: String, value: MetadataValue)] { [("line", .number(Int64(self.line)))] }
}

extension RedisMetadata: MetadataFields {
    var fields: [(name: String, value: MetadataValue)] {
        var fields: [(name: String, value: MetadataValue)] = [("key", .text(self.key))]
        if let id = self.entryID { fields.append(("id", .text("\(id)"))) }
        if let count = self.deliveryCount { fields.append(("deliveries", .number(Int64(count)))) }
        return fields
    }
}

extension RabbitMQMetadata: MetadataFields {
    var fields: [(name: String, value: MetadataValue)] {
        var fields: [(name: String, value: MetadataValue)] = [
            ("exchange", .text(self.exchange)), ("routing_key", .text(self.routingKey)),
            ("delivery_tag", .number(Int64(truncatingIfNeeded: self.deliveryTag))), ("redelivered", .flag(self.redelivered)),
        ]
        if let type = self.contentType { fields.append(("content_type", .text(type))) }
        if let id = self.messageID { fields.append(("message_id", .text(id))) }
        if let timestamp = self.timestamp { fields.append(("timestamp", .number(Int64(truncatingIfNeeded: timestamp)))) }
        for (name, value) in self.headers.sorted(by: { $0.key < $1.key }) { fields.append(("header.\(name)", .text(value))) }
        return fields
    }
}

extension KafkaMetadata: MetadataFields {
    var fields: [(name: String, value: MetadataValue)] {
        var fields: [(name: String, value: MetadataValue)] = [
            ("topic", .text(self.topic)), ("partition", .number(Int64(self.partition))), ("offset", .number(self.offset)),
        ]
        if let key = self.key { fields.append(("key", .bytes(key.bytes))) }
        if let timestamp = self.timestampMilliseconds { fields.append(("timestamp_ms", .number(timestamp))) }
        for header in self.headers { fields.append(("header.\(header.name)", header.value.map { .bytes($0) } ?? .text(""))) }
        return fields
    }
}

/// Something that runs with a source, whichever connector's it is (Swift has no generic
/// closures, so the source is handed to a method).
protocol SourceUser {
    /// What the use returns.
    associatedtype Value
    /// Runs with `source`.
    func use<Source: PipelineSource>(_ source: Source) async throws -> Value where Source.Metadata: MetadataFields
}

/// Opens the source of `url` (at most `limit` messages where the connector can cap its reads)
/// and hands it to `user`.
///
/// - Throws: ``UnsupportedURL``, ``EndpointError`` or the connector's URL error.
func withSource<User: SourceUser>(_ url: String, limit: Int?, password: String? = nil, _ user: User) async throws -> User.Value {
    switch try EndpointScheme(url: url) {
    case .redis:
        var configuration = try RedisConfiguration(url: url)
        configuration.limit = limit
        if let password { configuration.password = password }
        return try await user.use(RedisSource(configuration: configuration))
    case .rabbitMQ:
        return try await user.use(RabbitMQSource(url: url))
    case .kafka:
        return try await user.use(KafkaSource(url: url))
    case .standardInput:
        guard url.lowercased() == "stdin:" else { throw EndpointError("invalid URL \(Redaction.shown(url)): expected stdin:") }
        return try await user.use(LineSource(input: .standardInput, limit: limit))
    case .file:
        return try await user.use(LineSource(input: .file(try EndpointScheme.filePath(url)), limit: limit))
    case .standardOutput:
        throw EndpointError("stdout: is a sink only; read from stdin:, file:PATH or a broker URL")
    }
}

/// Where messages go: a broker's sink, standard output or a file.
enum SinkEndpoint: Sendable {
    case redis(RedisSink)
    case rabbitMQ(RabbitMQSink)
    case kafka(KafkaSink)
    case lines(LineWriter)

    /// The sink of `url`; nothing connects yet.
    ///
    /// - Throws: ``UnsupportedURL``, ``EndpointError`` or the connector's URL error.
    init(url: String) throws {
        switch try EndpointScheme(url: url) {
        case .redis: self = .redis(try RedisSink(url: url))
        case .rabbitMQ: self = .rabbitMQ(try RabbitMQSink(url: url))
        case .kafka: self = .kafka(try KafkaSink(url: url))
        case .standardOutput:
            guard url.lowercased() == "stdout:" else { throw EndpointError("invalid URL \(Redaction.shown(url)): expected stdout:") }
            self = .lines(LineWriter.standardOutput)
        case .file: self = .lines(try LineWriter(appendingTo: try EndpointScheme.filePath(url)))
        case .standardInput: throw EndpointError("stdin: is a source only; write to stdout:, file:PATH or a broker URL")
        }
    }

    /// Connects (a broker that cannot be reached fails here, before anything is read).
    func connect() async throws {
        switch self {
        case .redis(let sink): try await sink.connect()
        case .rabbitMQ(let sink): try await sink.connect()
        case .kafka(let sink): try await sink.connect()
        case .lines: break
        }
    }

    /// Delivers `batch` and returns once the sink confirmed it: a message the sink refused is
    /// marked failed; a failure of the whole batch throws.
    func deliver<Metadata>(_ batch: inout [Message<Metadata>]) async throws {
        switch self {
        case .redis(let sink): try await sink.send(batch)
        case .rabbitMQ(let sink): try await sink.send(&batch)
        case .kafka(let sink): try await sink.send(&batch)
        case .lines(let writer):
            var bytes: [UInt8] = []
            bytes.reserveCapacity(batch.reduce(0) { $0 + $1.payload.count + 1 })
            for message in batch {
                bytes += message.payload
                bytes.append(UInt8(ascii: "\n"))
            }
            try await writer.write(bytes)
        }
    }

    /// Closes once what was sent is confirmed.
    func close() async {
        switch self {
        case .redis(let sink): await sink.close()
        case .rabbitMQ(let sink): await sink.close()
        case .kafka(let sink): await sink.close()
        case .lines: break
        }
    }
}

/// Writes bytes to a file descriptor on a serial queue of its own (a write to a full pipe
/// blocks a dispatch thread, never the cooperative pool); a write returns once all its bytes
/// were written.
final class LineWriter: Sendable {
    /// Standard output.
    static let standardOutput = LineWriter(descriptor: STDOUT_FILENO, name: "stdout")

    private let descriptor: Int32
    private let name: String
    private let queue: DispatchQueue

    private init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
        self.queue = DispatchQueue(label: "sluice-writer-\(name)")
        // A closed pipe (`sluice tail … | head`) is a write error, not the end of the process:
        // what was not written is not acknowledged.
        signal(SIGPIPE, SIG_IGN)
    }

    /// Opens `path` for appending (created if missing).
    convenience init(appendingTo path: String) throws(EndpointError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw EndpointError("cannot open \(path) for writing: \(String(cString: strerror(errno)))") }
        self.init(descriptor: descriptor, name: path)
    }

    /// Writes all of `bytes`.
    func write(_ bytes: [UInt8]) async throws {
        let descriptor = self.descriptor
        let name = self.name
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            self.queue.async {
                var written = 0
                while written < bytes.count {
                    let count = bytes.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress! + written, bytes.count - written) }
                    if count < 0 {
                        if errno == EINTR { continue }
                        continuation.resume(throwing: EndpointError("cannot write to \(name): \(String(cString: strerror(errno)))"))
                        return
                    }
                    written += count
                }
                continuation.resume()
            }
        }
    }
}

/// A URL whose scheme no connector handles.
struct UnsupportedURL: Error, CustomStringConvertible {
    let scheme: String
    var description: String {
        "unsupported URL scheme \"\(self.scheme)\"; supported: redis://, unix://, amqp://, amqps://, kafka://, stdin:, stdout:, file:PATH"
    }
}
