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

@Suite("RabbitMQ secrets in logs", .timeLimit(.minutes(1)))
struct RabbitMQSecretLogTests {
    /// A user of its own with a password nothing else contains: a source that logs in with it
    /// consumes, loses its connection (closed by the broker) and reconnects, a second source
    /// with a wrong password is refused; nothing logged at any level, message or metadata, and
    /// no error contains either password.
    @Test func noPasswordReachesALogLineOrAnError() async throws {
        let user = "sluice-secret-\(UUID().uuidString.prefix(8).lowercased())"
        let password = "pw-\(UUID().uuidString)"
        let wrong = "wrong-\(UUID().uuidString)"
        _ = try await RabbitControl.run(["add_user", user, password])
        do {
            _ = try await RabbitControl.run(["set_permissions", "-p", "/", user, ".*", ".*", ".*"])
            try await self.consumeReconnectAndBeRefused(user: user, password: password, wrong: wrong)
        } catch {
            _ = try? await RabbitControl.run(["delete_user", user])
            throw error
        }
        _ = try await RabbitControl.run(["delete_user", user])
    }

    private func consumeReconnectAndBeRefused(user: String, password: String, wrong: String) async throws {
        let plain = try RabbitTestEnvironment.configuration("secret-log")
        let url = "amqp://\(user):\(password)@127.0.0.1:\(plain.port)/?queue=\(plain.queue)&declare=true&durable=false"
        var reconnecting = try RabbitMQConfiguration(url: url)
        reconnecting.reconnectBackoff = .milliseconds(50)
        let configuration = reconnecting
        let queue = configuration.queue
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        try await client.publish((0..<100).map { Array("secret-\($0)".utf8) })

        var (logger, log) = RecordingLogHandler.logger("sluice.test.amqp.secret")
        logger.logLevel = .trace
        let handled = Recorder<String>()
        let pipeline = Pipeline(
            "secret-log",
            source: CapturingSource(base: RabbitMQSource(configuration: configuration)),
            configuration: PipelineConfiguration(logger: logger)
        ) {
            Processors(concurrency: 2, maxDemand: 5) { message in
                handled.append(String(decoding: message.payload, as: UTF8.self))
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("some handled") { handled.count >= 20 }
            try await RabbitControl.closeConsumerConnection(of: queue)
            try await waitUntilAllHandledAndAcknowledged(100, handled: handled, pipeline: pipeline) {
                try await RabbitControl.counts(queue)
            }
            try await group.waitForAll()
        }
        #expect(log.all.contains { $0.message.contains("reconnect") }, "the reconnect was not logged: \(log.all.map(\.message))")

        var refused = try RabbitMQConfiguration(url: "amqp://\(user):\(wrong)@127.0.0.1:\(plain.port)/?queue=\(plain.queue)")
        refused.connectTimeout = .seconds(5)
        let refusedPipeline = Pipeline("secret-refused", source: RabbitMQSource(configuration: refused), configuration: PipelineConfiguration(logger: logger)) {
            Processors { _ in }
        }
        let error = await #expect(throws: RabbitMQError.self) { try await refusedPipeline.run() }
        #expect(error?.code == .accessRefused, "\(String(describing: error))")

        for entry in log.all {
            let text = entry.message + " " + entry.metadata
            #expect(!text.contains(password) && !text.contains(wrong), "a password in a log line: \(text)")
        }
        let described = "\(String(describing: error)) \(configuration) \(refused)"
        #expect(!described.contains(password) && !described.contains(wrong), "\(described)")
        #expect(log.all.count > 0)
        try await client.delete(queue: configuration.queue)
        await client.close()
    }
}
