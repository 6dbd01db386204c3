//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

extension KafkaConfiguration {
    /// Reads a URL: `kafka://[user:password@]host:port[,host:port…]/topic[,topic…]?group=…`.
    ///
    /// Query parameters Sluice reads: `group`, `offset` (`earliest` or `latest`), `client_id`,
    /// `batch`, `max_in_flight`, `max_in_flight_bytes`, `commit_every`, `commit_interval_ms`,
    /// `dead` (dead-letter topic), `connect_timeout_ms`, `tls` (`true`), `ca` (CA file), `sasl`
    /// (`plain`, `scram-sha-256`, `scram-sha-512`; the user and password come from the URL's
    /// user info). Every other parameter is a librdkafka property (for example
    /// `session.timeout.ms=6000`), checked by librdkafka. User and password may be
    /// percent-encoded.
    ///
    /// - Throws: ``KafkaError`` with code `invalidURL` (or `invalidProperty` for a property
    ///   librdkafka refuses), naming what is wrong; secrets are never repeated.
    public init(url: String) throws(KafkaError) {
        let shown = Self.redacted(url)
        func fail(_ text: String) -> KafkaError {
            KafkaError(.invalidURL, "invalid Kafka URL \(shown): \(text); expected kafka://host:port[,host:port]/topic?group=NAME[&offset=earliest|latest]")
        }
        guard let schemeEnd = url.range(of: "://") else { throw fail("not a URL") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "kafka" else { throw fail("the scheme must be kafka, not \(scheme)") }
        var rest = Substring(url[schemeEnd.upperBound...])
        var queryText = Substring("")
        if let question = rest.firstIndex(of: "?") {
            queryText = rest[rest.index(after: question)...]
            rest = rest[..<question]
        }
        guard let slash = rest.firstIndex(of: "/") else { throw fail("missing /topic") }
        var authority = rest[..<slash]
        let path = rest[rest.index(after: slash)...]
        var credentials: (String, String)?
        if let at = authority.lastIndex(of: "@") {
            let info = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let user = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let password = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            credentials = (user, password)
        }
        let servers = authority.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !servers.isEmpty, servers.allSatisfy({ !$0.isEmpty }) else { throw fail("missing host:port") }
        for server in servers {
            guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]),
                  (1...65535).contains(port), colon != server.startIndex
            else { throw fail("\(server) is not host:port") }
        }
        let topics = path.split(separator: ",", omittingEmptySubsequences: false).map { String($0).removingPercentEncoding ?? String($0) }
        guard !topics.isEmpty, topics.allSatisfy({ !$0.isEmpty && !$0.contains("/") }) else { throw fail("missing topic in the path") }
        var query: [String: String] = [:]
        for item in queryText.split(separator: "&") {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(pair[0]).removingPercentEncoding ?? String(pair[0])
            let value = pair.count > 1 ? (String(pair[1]).removingPercentEncoding ?? String(pair[1])) : ""
            guard !name.isEmpty else { throw fail("a query parameter has no name") }
            guard query[name] == nil else { throw fail("parameter \(name) given twice") }
            query[name] = value
        }
        self.init(bootstrapServers: servers, topics: topics)
        if let group = query.removeValue(forKey: "group") { self.group = group }
        if let offset = query.removeValue(forKey: "offset") {
            guard let reset = OffsetReset(offset) else { throw fail("offset must be earliest or latest, not \(offset)") }
            self.offsetReset = reset
        }
        if let client = query.removeValue(forKey: "client_id") { self.clientID = client }
        if let dead = query.removeValue(forKey: "dead") { self.deadLetterTopic = dead }
        func integer(_ name: String) throws(KafkaError) -> Int? {
            guard let text = query.removeValue(forKey: name) else { return nil }
            guard let value = Int(text), value >= 0 else { throw fail("\(name) must be a whole number, not \(text)") }
            return value
        }
        if let batch = try integer("batch") { self.batchSize = batch }
        if let window = try integer("max_in_flight") { self.maxInFlight = window }
        if let bytes = try integer("max_in_flight_bytes") { self.maxInFlightBytes = bytes }
        if let every = try integer("commit_every") { self.commitEvery = every }
        if let interval = try integer("commit_interval_ms") { self.commitInterval = .milliseconds(interval) }
        if let timeout = try integer("connect_timeout_ms") { self.connectTimeout = .milliseconds(timeout) }
        if let timeout = query["session.timeout.ms"].flatMap({ Int($0) }) {
            // The typed field carries it, so heartbeats and the revoke deadline follow it.
            query["session.timeout.ms"] = nil
            self.sessionTimeout = .milliseconds(timeout)
            if self.revokeTimeout > self.sessionTimeout / 2 { self.revokeTimeout = self.sessionTimeout / 2 }
        }
        if let tls = query.removeValue(forKey: "tls") {
            guard tls == "true" || tls == "false" else { throw fail("tls must be true or false, not \(tls)") }
            if tls == "true" { self.tls = TLS() }
        }
        if let ca = query.removeValue(forKey: "ca") {
            var tls = self.tls ?? TLS()
            tls.caLocation = ca
            self.tls = tls
        }
        if let mechanism = query.removeValue(forKey: "sasl") {
            let mechanisms: [String: SASLMechanism] = ["plain": .plain, "scram-sha-256": .scramSHA256, "scram-sha-512": .scramSHA512]
            guard let chosen = mechanisms[mechanism.lowercased()] else {
                throw fail("sasl must be plain, scram-sha-256 or scram-sha-512, not \(mechanism)")
            }
            guard let (user, password) = credentials else { throw fail("sasl needs user:password@ in the URL") }
            self.sasl = SASL(mechanism: chosen, username: user, password: password)
        } else if credentials != nil {
            throw fail("user:password@ needs sasl=plain|scram-sha-256|scram-sha-512")
        }
        self.properties = query
        do {
            try self.validate()
        } catch where error.code == .invalidProperty {
            throw error
        } catch {
            throw KafkaError(.invalidURL, "invalid Kafka URL \(shown): \(error.message)")
        }
    }

    /// The URL with the password of its user info, and the value of every secret parameter,
    /// replaced by `***`.
    static func redacted(_ url: String) -> String {
        var text = url
        if let schemeEnd = text.range(of: "://") {
            let authorityEnd = text[schemeEnd.upperBound...].firstIndex(where: { $0 == "/" || $0 == "?" }) ?? text.endIndex
            if let at = text[schemeEnd.upperBound..<authorityEnd].lastIndex(of: "@"),
               let colon = text[schemeEnd.upperBound..<at].firstIndex(of: ":") {
                text.replaceSubrange(text.index(after: colon)..<at, with: "***")
            }
        }
        guard let question = text.firstIndex(of: "?") else { return text }
        let items = text[text.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, Self.isSecret(String(pair[0])) else { return String(item) }
            return "\(pair[0])=***"
        }
        return String(text[...question]) + items.joined(separator: "&")
    }
}
