//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice

/// Where and how a ``RabbitMQSource`` or ``RabbitMQSink`` talks to RabbitMQ.
///
/// ```swift
/// var configuration = RabbitMQConfiguration(queue: "orders")
/// configuration.port = 16672
/// configuration.topology.declare = true
/// configuration.topology.queueType = .quorum
/// let source = RabbitMQSource(configuration: configuration)
/// ```
///
/// or from a URL: `RabbitMQConfiguration(url: "amqp://user:secret@127.0.0.1:5672/vhost?queue=orders&prefetch=500")`.
/// ``description`` never shows the password.
public struct RabbitMQConfiguration: Sendable, CustomStringConvertible {
    // MARK: Connection

    /// The host name or address. Default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// The TCP port. Default 5672; 1 to 65535.
    public var port: Int = 5672
    /// The virtual host. Default `/`.
    public var virtualHost: String = "/"
    /// The user name (PLAIN login). Default `guest`.
    public var username: String = "guest"
    /// The password. Never logged or shown in errors. Default `guest`.
    public var password: String = "guest"
    /// How long connecting, logging in and each setup call (declare, qos, consume) may take.
    /// Default 5 s; 1 ms to 10 minutes.
    public var connectTimeout: Duration = .seconds(5)
    /// The heartbeat interval asked of the broker (0: none). The connection's thread keeps
    /// servicing the socket at zero demand, so heartbeats flow while the pipeline is idle.
    /// Default 10 s; 0 to 600 s in whole seconds.
    public var heartbeat: Duration = .seconds(10)
    /// The first wait before reconnecting after a lost connection; it doubles (with jitter) up
    /// to ``maximumReconnectBackoff``. Default 100 ms.
    public var reconnectBackoff: Duration = .milliseconds(100)
    /// The longest wait between reconnection attempts. Default 5 s.
    public var maximumReconnectBackoff: Duration = .seconds(5)

    /// TLS settings for an `amqps://` connection (librabbitmq's OpenSSL socket).
    public struct TLS: Sendable, Hashable {
        /// A PEM file with the certificate authorities that may sign the broker's certificate.
        public var caCertificatePath: String
        /// A PEM client certificate, for brokers that ask for one (with ``keyPath``).
        public var certificatePath: String?
        /// The PEM private key of ``certificatePath``.
        public var keyPath: String?
        /// Whether the broker's certificate chain is checked against the CA. Default `true`.
        public var verifyPeer: Bool = true
        /// Whether the broker's certificate must name ``RabbitMQConfiguration/host``. Default `true`.
        public var verifyHostname: Bool = true

        /// TLS that trusts the CAs in `caCertificatePath`.
        public init(caCertificatePath: String) {
            self.caCertificatePath = caCertificatePath
        }
    }

    /// TLS settings (`nil`: plain TCP). Default `nil`; `amqps://` URLs set it.
    public var tls: TLS?

    // MARK: Consuming

    /// The queue a source consumes (and, with the default exchange, the routing key a sink
    /// publishes with).
    public var queue: String
    /// The `basic.qos` prefetch count. `nil` (the default) takes the pipeline's in-flight
    /// window; set explicitly, it must be at least that window (the pipeline refuses to start
    /// otherwise, naming both numbers). 1 to 65535.
    public var prefetch: Int?
    /// The consumer tag (`nil`: the broker picks one).
    public var consumerTag: String?
    /// How long acknowledgements wait at most before they are sent: processed messages are
    /// acknowledged together, one `multiple=true` acknowledgement per half of the prefetch,
    /// and those above an unsettled tag wait for the gap to close; after this delay whatever
    /// waits is sent (the ones above a gap one by one). 0 sends every settlement at once.
    /// Default 50 ms; 0 to 10 s.
    public var ackDelay: Duration = .milliseconds(50)

    /// What a source (re)declares on every connection: the queue, an exchange and its bindings.
    public struct Topology: Sendable, Hashable {
        /// How a queue stores its messages.
        public struct QueueType: Hashable, Sendable, CustomStringConvertible {
            private enum Base: String, Hashable, Sendable { case classic, quorum }
            private let base: Base
            private init(_ base: Base) { self.base = base }

            /// A classic queue: deliveries carry only the redelivered flag.
            public static let classic = QueueType(.classic)
            /// A quorum queue: durable, replicated; redeliveries carry `x-delivery-count`.
            public static let quorum = QueueType(.quorum)

            /// Reads `classic` or `quorum`.
            public init?(_ text: String) {
                guard let base = Base(rawValue: text) else { return nil }
                self.init(base)
            }

            public var description: String { self.base.rawValue }
        }

        /// An exchange's routing kind.
        public struct ExchangeType: Hashable, Sendable, CustomStringConvertible {
            /// The AMQP name (`direct`, `fanout`, `topic`, `headers`).
            public let name: String
            private init(name: String) { self.name = name }

            /// Routes by exact routing key.
            public static let direct = ExchangeType(name: "direct")
            /// Routes to every bound queue.
            public static let fanout = ExchangeType(name: "fanout")
            /// Routes by routing-key pattern.
            public static let topic = ExchangeType(name: "topic")
            /// Routes by headers.
            public static let headers = ExchangeType(name: "headers")

            /// Reads `direct`, `fanout`, `topic` or `headers`.
            public init?(_ text: String) {
                guard ["direct", "fanout", "topic", "headers"].contains(text) else { return nil }
                self.init(name: text)
            }

            public var description: String { self.name }
        }

        /// Whether to declare the queue (and exchange and bindings). `false` (the default) only
        /// checks that the queue exists (a passive declare): a missing queue fails at start
        /// with ``RabbitMQError/Code-swift.struct/notFound``. A ``RabbitMQSink`` declares the
        /// same topology on each connection when this is `true` (and checks nothing when it is
        /// `false`: an unroutable message fails with ``RabbitMQError/Code-swift.struct/unroutable``).
        public var declare: Bool = false
        /// Whether a declared queue and exchange survive a broker restart. Default `true`.
        public var durable: Bool = true
        /// The type of a declared queue (`nil`: the broker's default, classic).
        public var queueType: QueueType?
        /// The dead-letter exchange of a declared queue (`x-dead-letter-exchange`): messages
        /// failed with ``Sluice/FailureDisposition/deadLetter`` are rejected without requeue and
        /// the broker routes them there. `nil`: none (the broker discards rejected messages
        /// unless a policy names one).
        public var deadLetterExchange: String?
        /// The routing key dead-lettered messages get (`x-dead-letter-routing-key`; `nil`:
        /// their own).
        public var deadLetterRoutingKey: String?
        /// An exchange to declare and bind the queue to (`nil`: none; the default exchange
        /// routes by queue name).
        public var exchange: String?
        /// The type of ``exchange``. Default ``ExchangeType/direct``.
        public var exchangeType: ExchangeType = .direct
        /// The binding keys of the queue to ``exchange`` (empty: the queue's name).
        public var bindingKeys: [String] = []

        /// Creates a topology that only checks that the queue exists.
        public init() {}
    }

    /// What a source declares on every (re)connection.
    public var topology = Topology()

    // MARK: Publishing

    /// The exchange a sink publishes to. Default `""`, the default exchange, which routes by
    /// queue name.
    public var publishExchange: String = ""
    /// The routing key a sink publishes with (`nil`: ``queue``).
    public var routingKey: String?
    /// Whether a sink publishes `mandatory`: a message no queue takes comes back and fails
    /// with ``RabbitMQError/Code-swift.struct/unroutable``. Default `true`.
    public var mandatory: Bool = true
    /// Whether a sink's messages are persistent (delivery mode 2). Default `false`.
    public var persistent: Bool = false

    /// Creates a configuration for `queue` on `127.0.0.1:5672`, vhost `/`, user guest.
    public init(queue: String) {
        self.queue = queue
    }

    /// `host:port/vhost`, for logs and errors.
    public var address: String { "\(self.host):\(self.port)\(self.virtualHost == "/" ? "/" : "/" + self.virtualHost)" }

    /// The routing key in effect for a sink.
    public var effectiveRoutingKey: String { self.routingKey ?? self.queue }

    public var description: String {
        var text = "\(self.tls == nil ? "amqp" : "amqps") \(self.address) queue \(self.queue) user \(self.username) password ***"
        if let prefetch = self.prefetch { text += " prefetch \(prefetch)" }
        return text
    }

    /// Checks the values.
    ///
    /// - Throws: ``RabbitMQError`` with code ``RabbitMQError/Code-swift.struct/invalidConfiguration``.
    public func validate() throws(RabbitMQError) {
        func fail(_ text: String) -> RabbitMQError {
            RabbitMQError(.invalidConfiguration, "invalid RabbitMQ configuration: \(text)")
        }
        guard !self.host.isEmpty else { throw fail("host must not be empty") }
        guard (1...65535).contains(self.port) else { throw fail("port \(self.port) is not between 1 and 65535") }
        guard !self.virtualHost.isEmpty else { throw fail("virtualHost must not be empty (the default is /)") }
        guard !self.queue.isEmpty else { throw fail("queue must not be empty") }
        guard self.queue.utf8.count <= 255 else { throw fail("queue name is longer than 255 bytes") }
        if let prefetch = self.prefetch, !(1...65535).contains(prefetch) {
            throw fail("prefetch \(prefetch) must be between 1 and 65535")
        }
        guard self.connectTimeout >= .milliseconds(1), self.connectTimeout <= .seconds(600) else {
            throw fail("connectTimeout must be between 1 ms and 600 s")
        }
        guard self.heartbeat >= .zero, self.heartbeat <= .seconds(600), self.heartbeat.components.attoseconds == 0 else {
            throw fail("heartbeat must be whole seconds between 0 and 600")
        }
        guard self.reconnectBackoff > .zero, self.maximumReconnectBackoff >= self.reconnectBackoff else {
            throw fail("reconnectBackoff must be positive and at most maximumReconnectBackoff")
        }
        guard self.ackDelay >= .zero, self.ackDelay <= .seconds(10) else { throw fail("ackDelay must be between 0 and 10 s") }
        if self.topology.deadLetterRoutingKey != nil, self.topology.deadLetterExchange == nil {
            throw fail("deadLetterRoutingKey needs a deadLetterExchange")
        }
        if let tls = self.tls {
            guard !tls.caCertificatePath.isEmpty else { throw fail("tls.caCertificatePath must not be empty") }
            guard (tls.certificatePath == nil) == (tls.keyPath == nil) else {
                throw fail("a TLS client certificate needs its key, and a key its certificate")
            }
        }
        if self.topology.exchange == "" { throw fail("the default exchange cannot be declared or bound; leave exchange nil") }
    }

    /// The reconnect backoff: ``reconnectBackoff`` doubling up to ``maximumReconnectBackoff``,
    /// each wait shortened by up to half at random.
    var reconnectSchedule: Backoff {
        Backoff(initial: self.reconnectBackoff, maximum: self.maximumReconnectBackoff, multiplier: 2, jitter: 0.5)
    }
}
