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

@Suite("RabbitMQ bad input", .timeLimit(.minutes(1)))
struct RabbitMQBadInputTests {
    let logger = Logger(label: "sluice.test.amqp.bad")

    /// Starts a pipeline on `configuration` and returns the error it ends with.
    func startError(_ configuration: RabbitMQConfiguration, maxDemand: Int = 10) async -> RabbitMQError? {
        let pipeline = Pipeline("bad", source: RabbitMQSource(configuration: configuration), configuration: PipelineConfiguration(logger: self.logger)) {
            Processors(concurrency: 1, maxDemand: maxDemand) { _ in }
        }
        do {
            try await pipeline.run()
            return nil
        } catch let error as RabbitMQError {
            return error
        } catch {
            Issue.record("not a RabbitMQError: \(error)")
            return nil
        }
    }

    @Test func anUnreachableBrokerFailsAtStartWithinTheTimeout() async throws {
        var configuration = try RabbitTestEnvironment.configuration("unreachable")
        configuration.port = 1
        configuration.connectTimeout = .seconds(2)
        let started = ContinuousClock.now
        let error = await self.startError(configuration)
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("cannot connect to RabbitMQ at 127.0.0.1:1") == true)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func wrongCredentialsAreAccessRefused() async throws {
        var configuration = try RabbitTestEnvironment.configuration("credentials")
        configuration.password = "not-the-password"
        let error = await self.startError(configuration)
        #expect(error?.code == .accessRefused, "\(String(describing: error))")
        #expect(error?.message.contains("not-the-password") == false)
    }

    @Test func aMissingQueueIsNotFound() async throws {
        var configuration = try RabbitTestEnvironment.configuration("missing")
        configuration.topology.declare = false
        let error = await self.startError(configuration)
        #expect(error?.code == .notFound, "\(String(describing: error))")
        #expect(error?.message.contains(configuration.queue) == true)
    }

    @Test func aWrongVhostIsNotAllowed() async throws {
        var configuration = try RabbitTestEnvironment.configuration("vhost")
        configuration.virtualHost = "no-such-vhost"
        let error = await self.startError(configuration)
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
