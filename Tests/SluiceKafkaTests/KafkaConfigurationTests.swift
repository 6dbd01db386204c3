//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceKafka
import Testing

/// URLs, ranges, librdkafka's own checks, redaction and the prefetch bound's defaults, without a broker.
@Suite struct KafkaConfigurationTests {
    @Test func readsAURL() throws {
        let configuration = try KafkaConfiguration(url: "kafka://127.0.0.1:9092,10.0.0.2:9093/orders,refunds?group=etl&offset=earliest&session.timeout.ms=6000&batch=500&fetch.min.bytes=1")
        #expect(configuration.bootstrapServers == ["127.0.0.1:9092", "10.0.0.2:9093"])
        #expect(configuration.topics == ["orders", "refunds"])
        #expect(configuration.group == "etl")
        #expect(configuration.offsetReset == .earliest)
        #expect(configuration.sessionTimeout == .seconds(6))
        #expect(configuration.batchSize == 500)
        #expect(configuration.properties == ["fetch.min.bytes": "1"])
    }

    @Test func refusesMalformedURLs() {
        let bad = [
            "http://127.0.0.1:9092/orders": "scheme",
            "kafka://127.0.0.1:9092": "missing /topic",
            "kafka://127.0.0.1/orders": "host:port",
            "kafka://127.0.0.1:9092/": "missing topic",
            "kafka://127.0.0.1:9092/orders?offset=middle": "earliest or latest",
            "kafka://127.0.0.1:9092/orders?batch=0": "batchSize 0",
            "kafka://127.0.0.1:9092/orders?batch=x": "whole number",
            "kafka://127.0.0.1:9092/orders?group=": "group must not be empty",
            "kafka://127.0.0.1:9092/orders?group=a&group=b": "twice",
        ]
        for (url, reason) in bad {
            #expect {
                try KafkaConfiguration(url: url)
            } throws: { error in
                guard let error = error as? KafkaError else { return false }
                return error.code == .invalidURL && error.message.contains(reason)
            }
        }
    }

    @Test func anInvalidPropertyIsRefusedWithLibrdkafkasExplanation() {
        #expect {
            try KafkaConfiguration(url: "kafka://127.0.0.1:9092/orders?no.such.property=1")
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .invalidProperty && error.message.contains("No such configuration property")
        }
        #expect {
            try KafkaConfiguration(url: "kafka://127.0.0.1:9092/orders?fetch.wait.max.ms=banana")
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .invalidProperty && error.message.contains("fetch.wait.max.ms") && error.message.contains("banana")
        }
    }

    @Test func outOfRangeValuesAreTypedErrors() {
        var configuration = KafkaConfiguration(bootstrapServers: ["127.0.0.1:9092"], topics: ["t"])
        configuration.maxInFlight = 0
        #expect(throws: KafkaError.self) { try configuration.validate() }
        configuration.maxInFlight = nil
        configuration.revokeTimeout = .seconds(60)
        #expect { try configuration.validate() } throws: { ($0 as? KafkaError)?.message.contains("revokeTimeout") == true }
        configuration.revokeTimeout = .seconds(1)
        configuration.deadLetterTopic = "t"
        #expect { try configuration.validate() } throws: { ($0 as? KafkaError)?.message.contains("deadLetterTopic") == true }
        configuration.deadLetterTopic = nil
        configuration.group = ""
        #expect { try configuration.validate() } throws: { ($0 as? KafkaError)?.code == .invalidConfiguration }
    }

    @Test func secretsNeverShow() throws {
        let url = "kafka://alice:s3cret@127.0.0.1:9092/orders?sasl=scram-sha-256&ssl.key.password=hunter2"
        let configuration = try KafkaConfiguration(url: url)
        #expect(configuration.sasl?.password == "s3cret")
        #expect(!configuration.description.contains("s3cret"))
        #expect(!configuration.description.contains("hunter2"))
        #expect(KafkaConfiguration.redacted(url) == "kafka://alice:***@127.0.0.1:9092/orders?sasl=scram-sha-256&ssl.key.password=***")
        // A refused secret property does not echo its value.
        #expect {
            try KafkaConfiguration(url: "kafka://alice:s3cret@127.0.0.1:9092/orders?sasl=plain&sasl.password=&zzz.secret=hunter2")
        } throws: { error in
            let text = "\(error)"
            return !text.contains("hunter2") && !text.contains("s3cret")
        }
    }

    @Test func aTooOldRuntimeIsReportedWithWhatToDo() {
        #expect {
            try RDKafkaConfig.checkRuntime(version: 0x0200_02ff, text: "2.0.2")
        } throws: { error in
            guard let error = error as? KafkaError else { return false }
            return error.code == .runtimeTooOld && error.message.contains("2.0.2") && error.message.contains("LD_LIBRARY_PATH")
        }
        #expect(throws: Never.self) { try RDKafkaConfig.checkRuntime(version: 0x0210_01ff, text: "2.16.1") }
    }

    @Test func oneResponseAsksForTwiceThePartitionsBound() {
        var configuration = KafkaConfiguration(bootstrapServers: ["127.0.0.1:9092"], topics: ["t"])
        let bound = configuration.prefetchBound(window: 500)
        #expect(bound.bytesPerPartition == 1024 * 1024)
        #expect(bound.bytesPerFetch == 2 * 1024 * 1024)
        #expect(bound.messagesPerPartition == 1000)
        configuration.prefetchKilobytes = 100
        // At least message.max.bytes (1 000 000 by default), which one response must hold.
        #expect(configuration.prefetchBound(window: 500).bytesPerFetch == 1_000_000)
        configuration.properties["fetch.max.bytes"] = "3000000"
        #expect(configuration.prefetchBound(window: 500).bytesPerFetch == 3_000_000)
        let properties = Dictionary(configuration.librdkafkaProperties(window: 500, consumer: true), uniquingKeysWith: { $1 })
        #expect(properties["fetch.max.bytes"] == "3000000")
        #expect(properties["queued.max.messages.kbytes"] == "100")
    }
}
