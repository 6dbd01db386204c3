//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

extension RabbitMQConfiguration {
    /// Reads a URL: `amqp://[user[:password]@]host[:port][/vhost]?queue=NAME[&…]`, or
    /// `amqps://…?queue=NAME&cacertfile=PATH[&certfile=PATH&keyfile=PATH][&verify=verify_none]`
    /// for TLS (default port 5671).
    ///
    /// An empty path (`…:5672` or `…:5672/`) means the vhost `/`; `%2F` decodes to `/`. User
    /// and password may be percent-encoded.
    ///
    /// Query parameters: `queue` (required), `prefetch`, `consumer_tag`, `heartbeat` (seconds),
    /// `connect_timeout_ms`, `ack_delay_ms`, `declare` (`true`/`false`), `durable`,
    /// `queue_type` (`classic`, `quorum`), `dead_letter_exchange`, `dead_letter_routing_key`,
    /// `exchange`, `exchange_type` (`direct`, `fanout`, `topic`, `headers`), `binding_keys`
    /// (comma-separated); for a sink `publish_exchange`, `routing_key`, `mandatory`,
    /// `persistent`.
    ///
    /// - Throws: ``RabbitMQError`` with code ``RabbitMQError/Code-swift.struct/invalidURL``
    ///   naming what is wrong (the password is never repeated).
    public init(url: String) throws(RabbitMQError) {
        let shown = Self.redacted(url)
        func fail(_ text: String) -> RabbitMQError {
            RabbitMQError(.invalidURL, "invalid AMQP URL \(shown): \(text); expected amqp://[user:password@]host[:port][/vhost]?queue=NAME")
        }
        guard let components = URLComponents(string: url) else { throw fail("not a URL") }
        let secure: Bool
        switch components.scheme?.lowercased() {
        case "amqp": secure = false
        case "amqps": secure = true
        case let scheme: throw fail("the scheme must be amqp or amqps, not \(scheme ?? "missing")")
        }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] {
            guard query[item.name] == nil else { throw fail("parameter \(item.name) given twice") }
            query[item.name] = item.value ?? ""
        }
        func integer(_ name: String) throws(RabbitMQError) -> Int? {
            guard let text = query.removeValue(forKey: name) else { return nil }
            guard let value = Int(text), value >= 0 else { throw fail("\(name) must be a whole number, not \(text)") }
            return value
        }
        func boolean(_ name: String) throws(RabbitMQError) -> Bool? {
            guard let text = query.removeValue(forKey: name) else { return nil }
            switch text.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw fail("\(name) must be true or false, not \(text)")
            }
        }
        guard let queue = query.removeValue(forKey: "queue"), !queue.isEmpty else { throw fail("missing queue=NAME") }
        self.init(queue: queue)
        guard let host = components.host, !host.isEmpty else { throw fail("missing host") }
        self.host = host
        if secure {
            guard let ca = query.removeValue(forKey: "cacertfile"), !ca.isEmpty else {
                throw fail("amqps:// needs cacertfile=PATH (the CA that signed the broker's certificate)")
            }
            var tls = TLS(caCertificatePath: ca)
            tls.certificatePath = query.removeValue(forKey: "certfile")
            tls.keyPath = query.removeValue(forKey: "keyfile")
            if let verify = query.removeValue(forKey: "verify") {
                switch verify {
                case "verify_peer": tls.verifyPeer = true
                case "verify_none": tls.verifyPeer = false
                default: throw fail("verify must be verify_peer or verify_none, not \(verify)")
                }
            }
            if let check = try boolean("verify_hostname") { tls.verifyHostname = check }
            self.tls = tls
            self.port = 5671
        }
        if let port = components.port { self.port = port }
        // The percent-encoded path, so that %2F in a vhost name is not taken for a separator.
        let path = String(components.percentEncodedPath.dropFirst())
        if !path.isEmpty {
            guard !path.contains("/") else { throw fail("the path must be one vhost name (write / inside it as %2F)") }
            guard let vhost = path.removingPercentEncoding else { throw fail("the vhost is not valid percent-encoding") }
            self.virtualHost = vhost
        }
        if let user = components.user, !user.isEmpty { self.username = user }
        if let password = components.password { self.password = password }

        if let prefetch = try integer("prefetch") { self.prefetch = prefetch }
        if let heartbeat = try integer("heartbeat") { self.heartbeat = .seconds(heartbeat) }
        if let timeout = try integer("connect_timeout_ms") { self.connectTimeout = .milliseconds(timeout) }
        if let delay = try integer("ack_delay_ms") { self.ackDelay = .milliseconds(delay) }
        if let tag = query.removeValue(forKey: "consumer_tag") { self.consumerTag = tag }
        if let declare = try boolean("declare") { self.topology.declare = declare }
        if let durable = try boolean("durable") { self.topology.durable = durable }
        if let type = query.removeValue(forKey: "queue_type") {
            guard let parsed = Topology.QueueType(type) else { throw fail("queue_type must be classic or quorum, not \(type)") }
            self.topology.queueType = parsed
        }
        if let exchange = query.removeValue(forKey: "dead_letter_exchange") { self.topology.deadLetterExchange = exchange }
        if let key = query.removeValue(forKey: "dead_letter_routing_key") { self.topology.deadLetterRoutingKey = key }
        if let exchange = query.removeValue(forKey: "exchange") { self.topology.exchange = exchange }
        if let type = query.removeValue(forKey: "exchange_type") {
            guard let parsed = Topology.ExchangeType(type) else {
                throw fail("exchange_type must be direct, fanout, topic or headers, not \(type)")
            }
            self.topology.exchangeType = parsed
        }
        if let keys = query.removeValue(forKey: "binding_keys") {
            self.topology.bindingKeys = keys.split(separator: ",").map(String.init)
        }
        if let exchange = query.removeValue(forKey: "publish_exchange") { self.publishExchange = exchange }
        if let key = query.removeValue(forKey: "routing_key") { self.routingKey = key }
        if let mandatory = try boolean("mandatory") { self.mandatory = mandatory }
        if let persistent = try boolean("persistent") { self.persistent = persistent }
        if let unknown = query.keys.sorted().first { throw fail("unknown parameter \(unknown)") }
        do {
            try self.validate()
        } catch {
            throw RabbitMQError(.invalidURL, "invalid AMQP URL \(shown): \(error.message)")
        }
    }

    /// The URL with any password replaced by `***`.
    static func redacted(_ url: String) -> String {
        var text = url
        if let schemeEnd = text.range(of: "://") {
            let rest = text[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? text.endIndex
            if let at = text[schemeEnd.upperBound..<authorityEnd].lastIndex(of: "@"),
                let colon = text[schemeEnd.upperBound..<at].firstIndex(of: ":")
            {
                text.replaceSubrange(text.index(after: colon)..<at, with: "***")
            }
        }
        return text
    }
}
