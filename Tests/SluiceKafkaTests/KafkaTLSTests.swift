//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import Testing

/// A Kafka broker reachable only over TLS, private to one test: Tansu has no working TLS of
/// its own, so a second Tansu listens on a plain loopback port and advertises the port of a
/// Debian `stunnel4` in front of it, whose certificate (for `localhost`) a CA made here with
/// openssl signed. Clients bootstrap through the terminator and are sent back to it.
final class KafkaTLSBroker: Sendable {
    let directory: URL
    /// The terminator's port (the only one clients use).
    let port: Int
    private let processes: [Process]

    /// The CA that signed the terminator's certificate.
    var caPath: String { self.directory.appendingPathComponent("ca.pem").path }
    /// Another CA, which signed nothing the terminator shows.
    var otherCAPath: String { self.directory.appendingPathComponent("other-ca.pem").path }

    /// Makes the certificates and starts Tansu and stunnel (blocking: call it off the pool).
    init(tansu: String) throws {
        let stunnel = try ["/usr/bin/stunnel4", "/usr/bin/stunnel", "/usr/local/bin/stunnel"].first { FileManager.default.isExecutableFile(atPath: $0) }
            ?? { throw TestFailure("stunnel4 is not installed; `scripts/brokers up` installs it (apt-get install stunnel4)") }()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-kafka-tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        for ca in ["ca", "other-ca"] {
            try Self.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(ca).key", "-out", "\(ca).pem", "-days", "1", "-subj", "/CN=Sluice Kafka test \(ca)"], in: directory)
        }
        try Self.run("/usr/bin/openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], in: directory)
        try "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n".write(to: directory.appendingPathComponent("ext.cnf"), atomically: true, encoding: .utf8)
        try Self.run(
            "/usr/bin/openssl",
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf"],
            in: directory
        )
        let plain = try Self.freePort()
        let port = try Self.freePort()
        self.port = port
        try """
            foreground = yes
            pid =
            [kafka]
            accept = 127.0.0.1:\(port)
            connect = 127.0.0.1:\(plain)
            cert = \(directory.appendingPathComponent("server.pem").path)
            key = \(directory.appendingPathComponent("server.key").path)

            """.write(to: directory.appendingPathComponent("stunnel.conf"), atomically: true, encoding: .utf8)
        var processes: [Process] = []
        do {
            // Tansu reads options from the environment too: only the ones given here count.
            var environment = ProcessInfo.processInfo.environment
            for name in ["SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID", "STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL"] {
                environment[name] = nil
            }
            processes.append(try Self.start(tansu, [
                "broker", "--listener-url", "tcp://127.0.0.1:\(plain)", "--advertised-listener-url", "tcp://localhost:\(port)",
                "--storage-engine", "memory://tansu/",
            ], environment: environment, log: directory.appendingPathComponent("tansu.log")))
            processes.append(try Self.start(stunnel, [directory.appendingPathComponent("stunnel.conf").path], environment: nil, log: directory.appendingPathComponent("stunnel.log")))
            for (name, wanted) in [("Tansu", plain), ("stunnel", port)] {
                let deadline = ContinuousClock.now + .seconds(10)
                while !Self.answers(wanted) {
                    guard ContinuousClock.now < deadline, processes.allSatisfy(\.isRunning) else {
                        throw TestFailure("\(name) did not listen on 127.0.0.1:\(wanted) within 10 s (logs in \(directory.path))")
                    }
                    usleep(20_000)
                }
            }
        } catch {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            throw error
        }
        self.processes = processes
    }

    /// Kills Tansu and stunnel and removes the folder; their exits are awaited on a thread of
    /// its own, never on the cooperative pool.
    func stop() async {
        let processes = self.processes
        for process in processes { kill(process.processIdentifier, SIGKILL) }
        _ = try? await KafkaAdmin.onThread { for process in processes { process.waitUntilExit() } }
        try? FileManager.default.removeItem(at: self.directory)
    }

    /// Runs `body` with a new TLS broker and stops it afterwards, also when `body` throws.
    static func with<T: Sendable>(_ body: (KafkaTLSBroker) async throws -> T) async throws -> T {
        guard let tansu = ProcessInfo.processInfo.environment["SLUICE_TANSU"], !tansu.isEmpty else {
            throw TestFailure("SLUICE_TANSU is not set: run `scripts/brokers up` and `eval \"$(scripts/brokers env)\"` first")
        }
        let broker = try await KafkaAdmin.onThread { try KafkaTLSBroker(tansu: tansu) }
        do {
            let result = try await body(broker)
            await broker.stop()
            return result
        } catch {
            await broker.stop()
            throw error
        }
    }

    private static func run(_ executable: String, _ arguments: [String], in directory: URL) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("\(executable) \(arguments.first ?? "") failed") }
    }

    static func start(_ executable: String, _ arguments: [String], environment: [String: String]?, log: URL) throws -> Process {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return process
    }

    /// A loopback port nobody listens on now.
    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw TestFailure("no socket for a free port") }
        defer { close(socket) }
        var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw TestFailure("cannot bind a loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on 127.0.0.1:`port`.
    static func answers(_ port: Int) -> Bool {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var address = sockaddr_in(
            sin_family: sa_family_t(AF_INET), sin_port: UInt16(port).bigEndian, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0)
        )
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

@Suite("Kafka over TLS", .serialized, .timeLimit(.minutes(1)))
struct KafkaTLSTests {
    static func configuration(_ broker: KafkaTLSBroker, ca: String, purpose: String) -> KafkaConfiguration {
        var configuration = KafkaConfiguration(
            bootstrapServers: ["localhost:\(broker.port)"],
            topics: [KafkaTestEnvironment.unique(purpose)],
            group: KafkaTestEnvironment.unique("\(purpose)-group")
        )
        configuration.offsetReset = .earliest
        configuration.tls = KafkaConfiguration.TLS(caLocation: ca)
        configuration.connectTimeout = .seconds(5)
        return configuration
    }

    /// Produces through the sink and consumes through the source with
    /// `security.protocol=ssl`, verifying the terminator's certificate with the test's CA.
    @Test func producesAndConsumesOverTLS() async throws {
        try await KafkaTLSBroker.with { broker in
            let configuration = Self.configuration(broker, ca: broker.caPath, purpose: "tls")
            try await KafkaTestEnvironment.admin(configuration).createTopic(configuration.topics[0], partitions: 2)
            let sink = try KafkaSink(configuration: configuration, logger: KafkaTestEnvironment.logger)
            try await sink.connect()
            try await sink.send((0..<100).map { KafkaRecord(value: Array("tls-\($0)".utf8), key: Array("key-\($0)".utf8)) })
            await sink.close()
            let handled = Recorder<String>()
            let pipeline = Pipeline("kafka-tls", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
                Processors(ordering: .perPartition, concurrency: 2, maxDemand: 20) { message in handled.add(text(message)) }
            }
            try await withPipeline(pipeline) {
                try await waitUntil("100 messages consumed over TLS") { handled.count >= 100 }
            }
            #expect(Set(handled.all) == Set((0..<100).map { "tls-\($0)" }))
        }
    }

    /// A CA that did not sign the terminator's certificate: the source fails at start with a
    /// typed error instead of talking to an unverified broker.
    @Test func anUnknownCertificateFailsAtStart() async throws {
        try await KafkaTLSBroker.with { broker in
            let configuration = Self.configuration(broker, ca: broker.otherCAPath, purpose: "tls-bad-ca")
            let pipeline = Pipeline("kafka-tls-bad", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
                Processors(concurrency: 1, maxDemand: 10) { _ in }
            }
            await #expect(throws: KafkaError.self) { try await pipeline.run() }
        }
    }
}
