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
final class TLSFrontEnd: Sendable {
    let directory: URL
    let port: Int
    private let process: Process

    /// The CA that signed the listener's certificate.
    var caPath: String { self.directory.appendingPathComponent("ca.pem").path }
    /// Another CA, which signed nothing the listener shows.
    var otherCAPath: String { self.directory.appendingPathComponent("other-ca.pem").path }

    init(upstreamPort: Int) throws {
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
            try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(ca).key", "-out", "\(ca).pem", "-days", "1", "-subj", "/CN=Sluice test \(ca)"])
        }
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"])
        try "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n".write(
            to: directory.appendingPathComponent("ext.cnf"), atomically: true, encoding: .utf8
        )
        try openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
            "-days", "1", "-extfile", "ext.cnf",
        ])
        let script = directory.appendingPathComponent("terminator.py")
        try Self.script.write(to: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            script.path, directory.appendingPathComponent("server.pem").path, directory.appendingPathComponent("server.key").path,
            "\(upstreamPort)", directory.appendingPathComponent("port").path,
        ]
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        self.process = process
        let portFile = directory.appendingPathComponent("port")
        var port: Int?
        for _ in 0..<500 where port == nil {
            port = (try? String(contentsOf: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if port == nil { usleep(10_000) }
        }
        guard let port else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the TLS terminator did not start listening within 5 s")
        }
        self.port = port
    }

    /// Kills the terminator and removes its folder; waiting for its exit happens on a thread
    /// of its own, never on the cooperative pool.
    func stop() async {
        // The terminator is this test's own child; SIGTERM does not reach it through
        // Foundation's spawn (its signal mask), so it is killed outright.
        kill(self.process.processIdentifier, SIGKILL)
        let process = self.process
        _ = try? await offPool { process.waitUntilExit() }
        try? FileManager.default.removeItem(at: self.directory)
    }

    /// Runs `body` with a new terminator in front of `upstreamPort` (made on a thread of its
    /// own: openssl and the start take seconds) and stops it afterwards, also when `body` throws.
    static func with<T>(upstreamPort: Int, _ body: (TLSFrontEnd) async throws -> T) async throws -> T {
        let front = try await offPool { try TLSFrontEnd(upstreamPort: upstreamPort) }
        return try await withStopping(front, stop: { await $0.stop() }, body)
    }

    private static let script = """
        import asyncio, ssl, sys

        cert, key, upstream, port_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

        async def pipe(reader, writer):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            except Exception:
                pass
            finally:
                try:
                    writer.close()
                except Exception:
                    pass

        async def handle(reader, writer):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
            except Exception:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def main():
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
            with open(port_file + ".tmp", "w") as f:
                f.write(str(server.sockets[0].getsockname()[1]))
            import os
            os.rename(port_file + ".tmp", port_file)
            async with server:
                await server.serve_forever()

        asyncio.run(main())
        """
}

@Suite("RabbitMQ over TLS", .timeLimit(.minutes(1)))
struct RabbitMQTLSTests {
    let logger = Logger(label: "sluice.test.amqp.tls")

    /// Consumes and acknowledges over `amqps://` through a TLS listener whose certificate the
    /// test's CA signed.
    @Test func consumesOverTLS() async throws {
        let plain = try RabbitTestEnvironment.configuration("tls")
        let port = plain.port
        try await TLSFrontEnd.with(upstreamPort: port) { front in
            let client = RabbitMQClient(configuration: plain)
            try await client.declare(plain)
            try await client.publish(payloads(100))
            let url = "amqps://guest:guest@localhost:\(front.port)/?queue=\(plain.queue)&cacertfile=\(front.caPath)"
            let configuration = try RabbitMQConfiguration(url: url)
            #expect(configuration.tls?.caCertificatePath == front.caPath)
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
