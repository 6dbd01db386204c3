//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceRabbitMQ
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("RabbitMQ bad input", .timeLimit(.minutes(1)))
struct RabbitMQBadInputTests {
    let logger = Logger(label: "sluice.test.amqp.bad")

    @Test func anUnreachableBrokerFailsAtStartWithinTheTimeout() async throws {
        var configuration = try RabbitTestEnvironment.configuration("unreachable")
        configuration.port = 1
        configuration.connectTimeout = .seconds(2)
        let started = ContinuousClock.now
        let error = await rabbitStartError(configuration, logger: self.logger)
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("cannot connect to RabbitMQ at 127.0.0.1:1") == true)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    /// A listener that accepts the TCP connection and never answers (the kernel completes the
    /// handshake; nobody speaks AMQP): the start fails when the connect timeout runs out, typed.
    /// librabbitmq's own timer ends the login ("timed out" in the error); the wall-clock bound is
    /// loose, because the whole parallel suite on two shared cores was seen to stall for 10 s.
    @Test func aSilentBrokerFailsAtStartWhenTheTimeoutRunsOut() async throws {
        let listener = try SilentListener()
        defer { listener.close() }
        var configuration = try RabbitTestEnvironment.configuration("silent")
        configuration.port = listener.port
        configuration.connectTimeout = .seconds(1)
        let started = ContinuousClock.now
        let error = await rabbitStartError(configuration, logger: self.logger)
        #expect(error?.code == .connectionFailed, "\(String(describing: error))")
        #expect(error?.message.contains("127.0.0.1:\(listener.port)") == true, "\(String(describing: error))")
        #expect(error?.message.contains("timed out") == true, "\(String(describing: error))")
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test func wrongCredentialsAreAccessRefused() async throws {
        var configuration = try RabbitTestEnvironment.configuration("credentials")
        configuration.password = "not-the-password"
        let error = await rabbitStartError(configuration, logger: self.logger)
        #expect(error?.code == .accessRefused, "\(String(describing: error))")
        #expect(error?.message.contains("not-the-password") == false)
    }

    @Test func aMissingQueueIsNotFound() async throws {
        var configuration = try RabbitTestEnvironment.configuration("missing")
        configuration.topology.declare = false
        let error = await rabbitStartError(configuration, logger: self.logger)
        #expect(error?.code == .notFound, "\(String(describing: error))")
        #expect(error?.message.contains(configuration.queue) == true)
    }

    @Test func aWrongVhostIsNotAllowed() async throws {
        var configuration = try RabbitTestEnvironment.configuration("vhost")
        configuration.virtualHost = "no-such-vhost"
        let error = await rabbitStartError(configuration, logger: self.logger)
        #expect(error?.code == .notAllowed, "\(String(describing: error))")
        #expect(error?.message.contains("no-such-vhost") == true)
    }

    @Test func aMalformedURLIsRefused() {
        #expect(throws: RabbitMQError.self) { try RabbitMQSource(url: "amqp://127.0.0.1:16672/?prefetch=10") }
        #expect(throws: RabbitMQError.self) { try RabbitMQSource(url: "amqp://[::1?queue=x") }
    }

    /// An explicit prefetch smaller than the window: refused by the pipeline at start, and by
    /// the source itself for a window given directly; both name the two numbers.
    @Test func aPrefetchSmallerThanTheWindowIsRefused() async throws {
        var configuration = try RabbitTestEnvironment.configuration("prefetch")
        configuration.prefetch = 10
        let pipeline = Pipeline("small", source: RabbitMQSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 2, maxDemand: 50) { _ in }
        }
        await #expect {
            try await pipeline.run()
        } throws: { error in
            "\(error)".contains("100") && "\(error)".contains("at most 10")
        }
        await #expect {
            _ = try await RabbitMQSource(configuration: configuration).makeParts(
                context: SourceContext(pipelineName: "direct", window: 100, logger: self.logger)
            )
        } throws: { error in
            (error as? RabbitMQError)?.code == .prefetchTooSmall && "\(error)".contains("prefetch 10") && "\(error)".contains("100")
        }
    }
}

/// A TCP listener on a free loopback port that never accepts: connections complete in the
/// kernel's backlog and then hear nothing.
final class SilentListener: Sendable {
    let port: Int
    private let socket: Int32

    init() throws {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(fd, generic, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, generic, &length) == 0
            }
        }
        guard bound else {
            Glibc.close(fd)
            throw TestFailure("cannot listen on a loopback port")
        }
        self.socket = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        Glibc.close(self.socket)
    }
}
