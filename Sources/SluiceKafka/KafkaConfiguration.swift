//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Where and how a ``KafkaSource`` or ``KafkaSink`` talks to Kafka.
///
/// ```swift
/// var configuration = KafkaConfiguration(bootstrapServers: ["127.0.0.1:9092"], topics: ["orders"], group: "etl")
/// configuration.offsetReset = .earliest
/// configuration.properties["partition.assignment.strategy"] = "cooperative-sticky"
/// let source = KafkaSource(configuration: configuration)
/// ```
///
/// or from a URL: `KafkaConfiguration(url: "kafka://127.0.0.1:9092/orders?group=etl&offset=earliest")`.
/// ``description`` never shows passwords or other secrets.
public struct KafkaConfiguration: Sendable, CustomStringConvertible {
    // OffsetReset and SASLMechanism have the same shape as RabbitMQConfiguration.Topology's QueueType
    // and ExchangeType and as RedisConfiguration.Mode: extensible enums (a struct over a private base
    // with static members, STYLE habit 7), each with its own cases.
    /// Where a group starts reading a partition that has no committed offset.
    public struct OffsetReset: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable { case earliest, latest }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// From the oldest message the partition still holds.
        public static let earliest = OffsetReset(.earliest)
        /// Only messages produced from now on.
        public static let latest = OffsetReset(.latest)

        /// Reads `earliest` or `latest`.
        public init?(_ text: String) {
            guard let base = Base(rawValue: text) else { return nil }
            self.init(base)
        }

        public var description: String { self.base.rawValue }
    }

    /// The SASL mechanism of ``SASL``.
    public struct SASLMechanism: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(name: String) { self.name = name }

        /// `PLAIN`: user name and password sent as they are (use it with TLS).
        public static let plain = SASLMechanism(name: "PLAIN")
        /// `SCRAM-SHA-256`.
        public static let scramSHA256 = SASLMechanism(name: "SCRAM-SHA-256")
        /// `SCRAM-SHA-512`.
        public static let scramSHA512 = SASLMechanism(name: "SCRAM-SHA-512")

        public var description: String { self.name }
    }

    /// SASL authentication.
    public struct SASL: Sendable {
        /// The mechanism.
        public var mechanism: SASLMechanism
        /// The user name.
        public var username: String
        /// The password. Never logged or shown in errors.
        public var password: String

        /// Creates SASL credentials.
        public init(mechanism: SASLMechanism, username: String, password: String) {
            self.mechanism = mechanism
            self.username = username
            self.password = password
        }
    }

    /// TLS to the brokers.
    public struct TLS: Sendable {
        /// A file of CA certificates that verify the brokers (`nil`: the system's).
        public var caLocation: String?
        /// The client certificate file, for brokers that ask for one.
        public var certificateLocation: String?
        /// The client key file.
        public var keyLocation: String?
        /// The client key's password. Never logged or shown in errors.
        public var keyPassword: String?
        /// Whether the broker's host name must match its certificate. Default `true`.
        public var verifyHostname: Bool = true

        /// Creates TLS settings.
        public init(caLocation: String? = nil, certificateLocation: String? = nil, keyLocation: String? = nil, keyPassword: String? = nil) {
            self.caLocation = caLocation
            self.certificateLocation = certificateLocation
            self.keyLocation = keyLocation
            self.keyPassword = keyPassword
        }
    }

    // MARK: Cluster

    /// `host:port` of one or more brokers to bootstrap from.
    public var bootstrapServers: [String]
    /// The topics a source reads (a sink writes to the first unless a message names another).
    public var topics: [String]
    /// The consumer group id (sources). Default `sluice`.
    public var group: String
    /// The client id the brokers see. Default `sluice`.
    public var clientID: String = "sluice"
    /// Where a partition without a committed offset starts. Default ``OffsetReset/latest``
    /// (Kafka's default).
    public var offsetReset: OffsetReset = .latest
    /// TLS (`nil`: plaintext).
    public var tls: TLS?
    /// SASL (`nil`: none).
    public var sasl: SASL?
    /// Any librdkafka property (`session.timeout.ms`, `partition.assignment.strategy`, …),
    /// applied after the ones Sluice sets, so it overrides them. librdkafka checks each one
    /// (``validate()``). Values of secret properties are never shown.
    public var properties: [String: String] = [:]

    // MARK: Timeouts

    /// How long the first contact with the cluster may take before the source or sink gives
    /// up with ``KafkaError/Code-swift.struct/connectionFailed``. Default 10 s; 100 ms to 5 min.
    public var connectTimeout: Duration = .seconds(10)
    /// The group session timeout (`session.timeout.ms`). Default 6 s (Tansu holds a join for
    /// half of it; Kafka's own default is 45 s); 1 s to 1 h.
    public var sessionTimeout: Duration = .seconds(6)
    /// How long a revoke waits for the revoked partitions' messages in flight to settle before
    /// committing what settled and letting the rebalance go on. Default 3 s; at most
    /// ``sessionTimeout``.
    public var revokeTimeout: Duration = .seconds(3)
    /// How long leaving the group may take on shutdown before the client is abandoned
    /// (`rd_kafka_consumer_close` can hang against some brokers). Default 5 s; 10 ms to 5 min.
    public var closeTimeout: Duration = .seconds(5)
    /// How long the broker may hold a fetch that found no data (`fetch.wait.max.ms`). Short,
    /// so that a message produced to an idle topic arrives at once even on a broker that
    /// waits out the whole time. Default 5 ms; 1 ms to 10 s.
    public var fetchMaxWait: Duration = .milliseconds(5)

    // MARK: Flow

    /// The most messages one read takes from librdkafka (the read takes the smaller of this
    /// and the unmet demand). Default 1000; 1 to 100 000.
    public var batchSize: Int = 1000
    /// The most messages taken from librdkafka and not yet settled by the pipeline (`nil`:
    /// the pipeline's window). 1 to 10 000 000.
    public var maxInFlight: Int?
    /// The most payload bytes taken and not yet settled: no read starts while this many are
    /// unsettled. Default 64 MiB; 1 KiB to 1 TiB.
    public var maxInFlightBytes: Int = 64 << 20
    /// librdkafka's prefetch per partition in messages (`queued.min.messages`; `nil`: the
    /// window, at least ``batchSize``). 1 to 10 000 000.
    public var prefetchMessages: Int?
    /// librdkafka's prefetch per partition in KiB (`queued.max.messages.kbytes`; `nil`: a
    /// sixty-fourth of ``maxInFlightBytes``, 1 MiB to 16 MiB: 1 MiB by default). One fetch
    /// response holds at most twice this much (`fetch.max.bytes`, at least
    /// `message.max.bytes`). See ``prefetchBound(window:)``. 1 to 2 097 151.
    public var prefetchKilobytes: Int?
    /// Settled offsets are committed (asynchronously) once this many messages settled since
    /// the last commit, or after ``commitInterval``. Default 1000; 1 to 1 000 000.
    public var commitEvery: Int = 1000
    /// The longest a settled offset waits to be committed. Default 200 ms; 1 ms to 1 min.
    public var commitInterval: Duration = .milliseconds(200)
    /// Where `.deadLetter` sends failed messages (`nil`: `<topic>.dead`, per source topic).
    public var deadLetterTopic: String?

    /// Creates a configuration.
    public init(bootstrapServers: [String], topics: [String], group: String = "sluice") {
        self.bootstrapServers = bootstrapServers
        self.topics = topics
        self.group = group
    }

    /// The dead-letter topic for messages of `topic`.
    public func deadLetterTopic(for topic: String) -> String { self.deadLetterTopic ?? "\(topic).dead" }

    public var description: String {
        var text = "kafka \(self.bootstrapServers.joined(separator: ",")) topics \(self.topics.joined(separator: ",")) group \(self.group)"
        if let sasl = self.sasl { text += " sasl \(sasl.mechanism) user \(sasl.username) password ***" }
        if self.tls != nil { text += " tls" }
        for (name, value) in self.properties.sorted(by: { $0.key < $1.key }) {
            text += " \(name)=\(Self.isSecret(name) ? "***" : value)"
        }
        return text
    }

    /// Whether the value of librdkafka property `name` is a secret (never shown).
    package static func isSecret(_ name: String) -> Bool {
        let lowered = name.lowercased()
        return lowered.contains("password") || lowered.contains("secret") || lowered.hasSuffix(".pem")
            || lowered == "sasl.oauthbearer.config" || lowered == "ssl.key.pem"
    }

    /// Checks the values, and has librdkafka check every property (its own explanation is
    /// in the error).
    ///
    /// - Throws: ``KafkaError`` with code `invalidConfiguration` or `invalidProperty`.
    public func validate() throws(KafkaError) {
        func fail(_ text: String) -> KafkaError { KafkaError(.invalidConfiguration, "invalid Kafka configuration: \(text)") }
        guard !self.bootstrapServers.isEmpty, self.bootstrapServers.allSatisfy({ !$0.isEmpty && !$0.contains(",") }) else {
            throw fail("bootstrapServers must name at least one host:port")
        }
        guard !self.topics.isEmpty, self.topics.allSatisfy({ !$0.isEmpty && !$0.contains(",") }) else {
            throw fail("topics must name at least one topic")
        }
        guard !self.group.isEmpty else { throw fail("group must not be empty") }
        guard !self.clientID.isEmpty else { throw fail("clientID must not be empty") }
        try Self.check("connectTimeout", self.connectTimeout, .milliseconds(100), .seconds(300))
        try Self.check("sessionTimeout", self.sessionTimeout, .seconds(1), .seconds(3600))
        try Self.check("revokeTimeout", self.revokeTimeout, .zero, self.sessionTimeout)
        try Self.check("closeTimeout", self.closeTimeout, .milliseconds(10), .seconds(300))
        try Self.check("fetchMaxWait", self.fetchMaxWait, .milliseconds(1), .seconds(10))
        try Self.check("commitInterval", self.commitInterval, .milliseconds(1), .seconds(60))
        try Self.check("batchSize", self.batchSize, 1, 100_000)
        if let window = self.maxInFlight { try Self.check("maxInFlight", window, 1, 10_000_000) }
        try Self.check("maxInFlightBytes", self.maxInFlightBytes, 1024, 1 << 40)
        if let messages = self.prefetchMessages { try Self.check("prefetchMessages", messages, 1, 10_000_000) }
        if let kilobytes = self.prefetchKilobytes { try Self.check("prefetchKilobytes", kilobytes, 1, 2_097_151) }
        try Self.check("commitEvery", self.commitEvery, 1, 1_000_000)
        if let dead = self.deadLetterTopic, dead.isEmpty || self.topics.contains(dead) {
            throw fail("deadLetterTopic must be a topic other than those read")
        }
        if let sasl = self.sasl, sasl.username.isEmpty { throw fail("sasl.username must not be empty") }
        // librdkafka checks every property, with its own explanation.
        _ = try RDKafkaConfig.check(self.librdkafkaProperties(window: self.maxInFlight ?? 1000, consumer: true))
    }

    private static func check(_ name: String, _ value: Int, _ lower: Int, _ upper: Int) throws(KafkaError) {
        guard (lower...upper).contains(value) else {
            throw KafkaError(.invalidConfiguration, "invalid Kafka configuration: \(name) \(value) must be between \(lower) and \(upper)")
        }
    }

    private static func check(_ name: String, _ value: Duration, _ lower: Duration, _ upper: Duration) throws(KafkaError) {
        guard value >= lower && value <= upper else {
            throw KafkaError(.invalidConfiguration, "invalid Kafka configuration: \(name) \(value) must be between \(lower) and \(upper)")
        }
    }

    /// What librdkafka may hold fetched ahead of a pipeline: the bound of its own prefetch,
    /// which sits in front of the source's (``maxInFlight``, ``maxInFlightBytes``).
    public struct PrefetchBound: Sendable, Equatable {
        /// librdkafka fetches a partition while it holds fewer of its messages than this
        /// (`queued.min.messages`).
        public var messagesPerPartition: Int
        /// … and fewer of its payload bytes than this (`queued.max.messages.kbytes` × 1024).
        public var bytesPerPartition: Int
        /// The most payload bytes one fetch response asks for (`fetch.max.bytes`), on top of
        /// what the partitions hold when it was sent.
        public var bytesPerFetch: Int

        /// The most payload bytes librdkafka holds with `partitions` partitions assigned,
        /// when the largest record batch the producers write holds `recordBatch` bytes: per
        /// partition, less than ``bytesPerPartition`` when a fetch is sent, plus what the
        /// response brings for it, ``bytesPerFetch``, which a broker may exceed by one record
        /// batch (Kafka sends a first batch larger than the limit whole; Tansu, the test
        /// broker, applies the limit to each partition of the response, not to the whole).
        public func bytes(partitions: Int, recordBatch: Int) -> Int {
            partitions * (self.bytesPerPartition + self.bytesPerFetch + recordBatch)
        }
    }

    /// The bound of librdkafka's prefetch for a pipeline window of `window` messages: per
    /// partition ``prefetchMessages`` (default: the window, at least ``batchSize``) and
    /// ``prefetchKilobytes`` (default: ``maxInFlightBytes`` / 64, 1 MiB to 16 MiB), and one
    /// fetch response of at most twice that many bytes (at least `message.max.bytes`, which
    /// a response must be able to hold). A value set in ``properties`` wins and is returned.
    ///
    /// Measured against the local broker (Tansu) with 100-byte messages, 4 partitions and a
    /// slow consumer: with 4 MiB per partition and per response (an earlier default)
    /// librdkafka's queues held up to 13 MB of payload and resident memory grew 64–70 MB
    /// from the start, mostly librdkafka's few hundred bytes of bookkeeping per queued
    /// message; with 1 MiB per partition and per response they held 4.6 MB and memory grew
    /// 7–25 MB; with 1 MiB per partition and 2 MiB per response (the default) about 8 MB and
    /// 25–44 MB. A response twice the partition's bound halves the fetches a fast consumer
    /// waits for (this broker answers each with a fixed overhead): in consume-only runs the
    /// median went from 0.83× the raw loop's speed to 0.89×. ``prefetchKilobytes`` trades
    /// memory for speed.
    public func prefetchBound(window: Int) -> PrefetchBound {
        func property(_ name: String) -> Int? { self.properties[name].flatMap { Int($0) } }
        let messages = property("queued.min.messages") ?? self.prefetchMessages ?? max(self.batchSize, window)
        let kilobytes = property("queued.max.messages.kbytes") ?? self.prefetchKilobytes ?? min(16 * 1024, max(1024, self.maxInFlightBytes / 1024 / 64))
        // librdkafka refuses a fetch.max.bytes below message.max.bytes (default 1 000 000).
        let fetch = property("fetch.max.bytes") ?? max(2 * kilobytes * 1024, property("message.max.bytes") ?? 1_000_000)
        return PrefetchBound(messagesPerPartition: messages, bytesPerPartition: kilobytes * 1024, bytesPerFetch: fetch)
    }

    /// Every librdkafka property, in the order they are set: Sluice's own first, then
    /// ``properties``.
    func librdkafkaProperties(window: Int, consumer: Bool) -> [(String, String)] {
        var list: [(String, String)] = [
            ("bootstrap.servers", self.bootstrapServers.joined(separator: ",")),
            ("client.id", self.clientID),
        ]
        if consumer {
            let prefetch = self.prefetchBound(window: window)
            list += [
                ("group.id", self.group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", self.offsetReset.description),
                ("session.timeout.ms", "\(Self.milliseconds(self.sessionTimeout))"),
                ("heartbeat.interval.ms", "\(max(1, Self.milliseconds(self.sessionTimeout) / 3))"),
                ("fetch.wait.max.ms", "\(Self.milliseconds(self.fetchMaxWait))"),
                ("queued.min.messages", "\(prefetch.messagesPerPartition)"),
                ("queued.max.messages.kbytes", "\(prefetch.bytesPerPartition / 1024)"),
                ("fetch.max.bytes", "\(prefetch.bytesPerFetch)"),
                // A partition whose queue is at its bound is looked at again after 1 ms, not
                // 10: with a small bound a fast consumer drains it in a few milliseconds.
                ("fetch.queue.backoff.ms", "1"),
            ]
        }
        if let tls = self.tls {
            list.append(("security.protocol", self.sasl == nil ? "ssl" : "sasl_ssl"))
            if let ca = tls.caLocation { list.append(("ssl.ca.location", ca)) }
            if let certificate = tls.certificateLocation { list.append(("ssl.certificate.location", certificate)) }
            if let key = tls.keyLocation { list.append(("ssl.key.location", key)) }
            if let password = tls.keyPassword { list.append(("ssl.key.password", password)) }
            list.append(("ssl.endpoint.identification.algorithm", tls.verifyHostname ? "https" : "none"))
        } else if self.sasl != nil {
            list.append(("security.protocol", "sasl_plaintext"))
        }
        if let sasl = self.sasl {
            list += [("sasl.mechanisms", sasl.mechanism.description), ("sasl.username", sasl.username), ("sasl.password", sasl.password)]
        }
        list += self.properties.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return list
    }

    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
