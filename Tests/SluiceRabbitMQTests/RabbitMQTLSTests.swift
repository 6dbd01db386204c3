//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Logging
import Sluice
import SluiceRabbitMQ
import Testing

/// A TLS listener in front of the test broker, private to one test: a CA and a certificate for
/// `localhost` made with openssl, and a small Python TLS terminator forwarding to the broker's
/// plain port (the shared broker itself is not reconfigured).
///
/// With `requireClientCertificate` the listener verifies its peer as a RabbitMQ listener with
/// `ssl_options.verify = verify_peer` and `ssl_options.fail_if_no_peer_cert = true` does: the
/// handshake fails unless the client shows a certificate the test's CA signed
/// (``clientCertificatePath`` with ``clientKeyPath``).
final class TLSFrontEnd: Sendable {
    let directory: URL
    private let relay: BrokerRelay
    /// The listener's port.
    var port: Int { self.relay.port }

    /// The CA that signed the listener's certificate.
    var caPath: String { self.directory.appendingPathComponent("ca.pem").path }
    /// Another CA, which signed nothing the listener shows.
    var otherCAPath: String { self.directory.appendingPathComponent("other-ca.pem").path }
    /// A client certificate the CA signed, and its key.
    var clientCertificatePath: String { self.directory.appendingPathComponent("client.pem").path }
    var clientKeyPath: String { self.directory.appendingPathComponent("client.key").path }
    /// A private key that does not belong to the client certificate.
    var otherKeyPath: String { self.directory.appendingPathComponent("other-ca.key").path }

    init(upstreamPort: Int, requireClientCertificate: Bool = false) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.currentDirectoryURL = directory
            process.standardOutput = Pipe()
            process.standardError = Pipe()
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw TestFailure("openssl \(arguments.first ?? "") failed") }
        }
        for ca in ["ca", "other-ca"] {
            try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(ca).key", "-out", "\(ca).pem", "-days", "1", "-subj", "/CN=Sluice test \(ca)"])
        }
        /// A key `name.key` and a certificate `name.pem` for `subject` that the CA signed with
        /// the X.509 extensions `extensions`.
        func signed(_ name: String, subject: String, extensions: String) throws {
            try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject])
            try extensions.write(to: directory.appendingPathComponent("\(name).cnf"), atomically: true, encoding: .utf8)
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "\(name).pem",
                "-days", "1", "-extfile", "\(name).cnf",
            ])
        }
        try signed("server", subject: "/CN=localhost", extensions: "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
        try signed("client", subject: "/CN=sluice-test-client", extensions: "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        let files = ["server.pem", "server.key"] + (requireClientCertificate ? ["ca.pem"] : [])
        self.relay = try BrokerRelay(upstreamPort: upstreamPort, directory: directory, tls: files.map { directory.appendingPathComponent($0).path })
    }

    /// Stops the terminator and removes its folder.
    func stop() async {
        await self.relay.stop()
    }

    /// Runs `body` with a new terminator in front of `upstreamPort` (made on a thread of its
    /// own: openssl and the start take seconds) and stops it afterwards, also when `body` throws.
    static func with<T>(
        upstreamPort: Int,
        requireClientCertificate: Bool = false,
        _ body: (TLSFrontEnd) async throws -> T
    ) async throws -> T {
        let front = try await offPool { try TLSFrontEnd(upstreamPort: upstreamPort, requireClientCertificate: requireClientCertificate) }
        return try await withStopping(front, stop: { await $0.stop() }, body)
    }
}

@Suite("RabbitMQ over TLS", .timeLimit(.minutes(1)))
struct RabbitMQTLSTests {
    let logger = Logger(label: "sluice.test.amqp.tls")

    /// Consumes and acknowledges over `amqps://` through a TLS listener whose certificate the
    /// test's CA signed.
    @Test func consumesOverTLS() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls")
        try await TLSFrontEnd.with(upstreamPort: plain.port) { front in
            let url = "amqps://guest:guest@localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.caPath)"
            let configuration = try RabbitMQConfiguration(url: url)
            #expect(configuration.tls?.caCertificatePath == front.caPath)
            #expect(configuration.tls?.certificatePath == nil)
            try await self.consumesAHundred(configuration, plain: plain)
        }
    }

    /// A listener that requires a client certificate (`verify_peer` with
    /// `fail_if_no_peer_cert`): `certfile` and `keyfile` make the session, and messages flow
    /// and are acknowledged through it.
    @Test func aClientCertificateMakesTheSessionWithAListenerThatRequiresOne() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls-client-cert")
        try await TLSFrontEnd.with(upstreamPort: plain.port, requireClientCertificate: true) { front in
            let url = "amqps://guest:guest@localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.caPath)"
                + "&certfile=\(front.clientCertificatePath)&keyfile=\(front.clientKeyPath)"
            let configuration = try RabbitMQConfiguration(url: url)
            #expect(configuration.tls?.certificatePath == front.clientCertificatePath)
            #expect(configuration.tls?.keyPath == front.clientKeyPath)
            try await self.consumesAHundred(configuration, plain: plain)
        }
    }

    /// The same listener without a client certificate: the start fails within the connect
    /// timeout with a typed error that names TLS and the missing client certificate.
    @Test func withoutAClientCertificateAListenerThatRequiresOneFailsAtStart() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls-no-client-cert")
        try await TLSFrontEnd.with(upstreamPort: plain.port, requireClientCertificate: true) { front in
            var configuration = try RabbitMQConfiguration(url: "amqps://localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.caPath)")
            configuration.connectTimeout = .seconds(3)
            let started = ContinuousClock.now
            let error = await rabbitStartError(configuration, logger: self.logger)
            #expect(error?.code == .connectionFailed, "\(String(describing: error))")
            #expect(error?.message.contains("TLS") == true, "\(String(describing: error))")
            #expect(error?.message.contains("client certificate") == true, "\(String(describing: error))")
            #expect(ContinuousClock.now - started < .seconds(6))
        }
    }

    /// A key file that does not exist, or one that does not belong to the certificate, is an
    /// `invalidConfiguration` error at start naming both files.
    @Test func aWrongClientKeyIsATypedErrorAtStart() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls-wrong-key")
        try await TLSFrontEnd.with(upstreamPort: plain.port, requireClientCertificate: true) { front in
            let missing = front.directory.appendingPathComponent("no-such.key").path
            for key in [missing, front.otherKeyPath] {
                let url = "amqps://localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.caPath)"
                    + "&certfile=\(front.clientCertificatePath)&keyfile=\(key)"
                let error = await rabbitStartError(try RabbitMQConfiguration(url: url), logger: self.logger)
                #expect(error?.code == .invalidConfiguration, "\(String(describing: error))")
                #expect(error?.message.contains(key) == true, "\(String(describing: error))")
                #expect(error?.message.contains(front.clientCertificatePath) == true, "\(String(describing: error))")
            }
        }
    }

    /// Publishes 100 messages to `plain`'s queue, consumes them through `configuration` and
    /// checks that every one was handled and acknowledged.
    private func consumesAHundred(_ configuration: RabbitMQConfiguration, plain: RabbitMQConfiguration) async throws {
        let client = RabbitMQClient(configuration: plain)
        try await client.declare(plain)
        try await client.publish(payloads(100))
        let seen = Recorder<String>()
        let pipeline = Pipeline("tls", source: RabbitMQSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 1, maxDemand: 20) { message in seen.append(message.text) }
        }
        let queue = plain.queue
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("100 handled") { seen.count >= 100 }
            try await waitUntil("every message acknowledged") {
                let counts = try await RabbitControl.counts(queue)
                return counts.ready == 0 && counts.unacknowledged == 0
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        #expect(Set(seen.all) == Set((0..<100).map { "m\($0)" }))
        try await client.delete(queue: queue)
        await client.close()
    }

    /// A certificate another CA signed is refused at start, with a typed error.
    @Test func anUntrustedCertificateFailsAtStart() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls-untrusted")
        let port = plain.port
        try await TLSFrontEnd.with(upstreamPort: port) { front in
            var configuration = try RabbitMQConfiguration(url: "amqps://localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.otherCAPath)")
            configuration.topology.declare = true
            let source = RabbitMQSource(configuration: configuration)
            await #expect {
                _ = try await source.makeParts(context: SourceContext(pipelineName: "tls", window: 10, logger: self.logger))
            } throws: { error in
                (error as? RabbitMQError)?.code == .connectionFailed && "\(error)".contains("over TLS")
            }
        }
    }
}
