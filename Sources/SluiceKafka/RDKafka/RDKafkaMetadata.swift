//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka

/// Asks the cluster about topics (`rd_kafka_metadata`), turning its answer into typed errors.
enum RDKafkaMetadata {
    /// Checks that the cluster answers within ``KafkaConfiguration/connectTimeout`` and holds
    /// every topic of `topics`; returns their partition counts.
    @discardableResult
    static func check(_ handle: OpaquePointer, topics: [String], configuration: KafkaConfiguration) throws(KafkaError) -> [String: Int] {
        let servers = configuration.bootstrapServers.joined(separator: ",")
        let deadline = ContinuousClock.now + configuration.connectTimeout
        var counts: [String: Int] = [:]
        for name in topics {
            let remaining = max(1, KafkaConfiguration.milliseconds(deadline - .now))
            guard let topic = rd_kafka_topic_new(handle, name, nil) else {
                throw KafkaError(.clientFailed, "librdkafka could not create a handle for topic \(name)")
            }
            defer { rd_kafka_topic_destroy(topic) }
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let error = rd_kafka_metadata(handle, 0, topic, &metadata, Int32(clamping: remaining))
            defer { if let metadata { rd_kafka_metadata_destroy(metadata) } }
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let answer = metadata?.pointee else {
                if error == RD_KAFKA_RESP_ERR__TIMED_OUT || error == RD_KAFKA_RESP_ERR__TRANSPORT || error == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN {
                    throw KafkaError(
                        .connectionFailed,
                        "no Kafka broker of \(servers) answered within \(configuration.connectTimeout) (\(RDKafkaConfig.describe(error))); "
                            + "check bootstrapServers and that the brokers run"
                    )
                }
                throw KafkaError(.clientFailed, "asking \(servers) about topic \(name) failed: \(RDKafkaConfig.describe(error))")
            }
            for index in 0..<Int(answer.topic_cnt) {
                let entry = answer.topics[index]
                guard String(cString: entry.topic) == name else { continue }
                if entry.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || (entry.err == RD_KAFKA_RESP_ERR_NO_ERROR && entry.partition_cnt == 0) {
                    throw KafkaError(.unknownTopic, "topic \(name) does not exist on \(servers); create it first (or fix the topic name)")
                }
                guard entry.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw KafkaError(.clientFailed, "the cluster \(servers) answered for topic \(name): \(RDKafkaConfig.describe(entry.err))")
                }
                counts[name] = Int(entry.partition_cnt)
            }
            guard counts[name] != nil else {
                throw KafkaError(.unknownTopic, "topic \(name) does not exist on \(servers); create it first (or fix the topic name)")
            }
        }
        return counts
    }
}
