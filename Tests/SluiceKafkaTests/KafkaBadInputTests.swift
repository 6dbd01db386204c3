//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import Testing

/// What goes wrong at start is a typed error naming the cause, within the configured time.
@Suite("Kafka source bad input", .timeLimit(.minutes(1)))
struct KafkaBadInputTests {
    func run(_ configuration: KafkaConfiguration) async throws {
        let pipeline = Pipeline("kafka-bad", source: KafkaSource(configuration: configuration), configuration: PipelineConfiguration(logger: KafkaTestEnvironment.logger)) {
            Processors(concurrency: 1, maxDemand: 10) { _ in }
        }
        try await pipeline.run()
    }

    @Test func unreachableBootstrapServersFailWithinTheConnectTimeout() async throws {
        var configuration = KafkaConfiguration(bootstrapServers: ["127.0.0.1:1"], topics: ["nothing"], group: KafkaTestEnvironment.unique("unreachable"))
        configuration.connectTimeout = .seconds(2)
        let started = ContinuousClock.now
        await #expect {
            try await self.run(configuration)
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .connectionFailed && error.message.contains("127.0.0.1:1")
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(6), "gave up after \(elapsed), the connect timeout is 2 s")
    }

    @Test func anUnknownTopicIsNamed() async throws {
        let configuration = KafkaConfiguration(bootstrapServers: [try KafkaTestEnvironment.brokers()], topics: ["sluice-no-such-topic-\(KafkaTestEnvironment.unique("x"))"], group: KafkaTestEnvironment.unique("unknown"))
        await #expect {
            try await self.run(configuration)
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .unknownTopic && error.message.contains(configuration.topics[0])
        }
    }

    @Test func aBadGroupConfigurationIsRefused() async throws {
        var configuration = try await KafkaTestEnvironment.configuration("bad-group")
        configuration.properties["partition.assignment.strategy"] = "no-such-assignor"
        await #expect {
            try await self.run(configuration)
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.message.contains("no-such-assignor") || error.message.contains("assignor") || error.message.contains("partition.assignment.strategy")
        }
        configuration.properties = [:]
        configuration.group = ""
        await #expect {
            try await self.run(configuration)
        } throws: { error in
            (error as? KafkaError)?.code == .invalidConfiguration
        }
    }

    @Test func anInvalidPropertyFailsBeforeConnecting() async throws {
        var configuration = KafkaConfiguration(bootstrapServers: ["127.0.0.1:1"], topics: ["t"], group: "g")
        configuration.properties["session.timeout.ms"] = "-5"
        await #expect {
            try await self.run(configuration)
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .invalidProperty && error.message.contains("session.timeout.ms")
        }
    }
}
