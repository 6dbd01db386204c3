//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
public import Logging
import Sluice

/// Raw librdkafka loops the benchmark compares the adapter with, on the same broker and data.
@_spi(Internal)
public enum KafkaRawBaseline {
    /// Consumes `count` messages of `configuration`'s first topic in `group` with
    /// `rd_kafka_consume_batch_queue(…, 1000)` and an asynchronous commit per batch, on a
    /// thread of its own. Returns the seconds from the first message to the last (joining
    /// the group is not timed).
    public static func consume(_ configuration: KafkaConfiguration, group: String, count: Int, logger: Logger) async throws -> Double {
        try await KafkaAdmin.onThread {
            let context = RDKafkaContext(logger: logger)
            var properties = configuration.librdkafkaProperties(window: 0, consumer: false)
            properties += [
                ("group.id", group), ("enable.auto.commit", "false"), ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "\(KafkaConfiguration.milliseconds(configuration.sessionTimeout))"),
            ]
            let handle = try context.makeHandle(RD_KAFKA_CONSUMER, properties: properties)
            defer { rd_kafka_destroy_flags(handle, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE) }
            rd_kafka_poll_set_consumer(handle)
            let list = rd_kafka_topic_partition_list_new(1)
            rd_kafka_topic_partition_list_add(list, configuration.topics[0], sluice_rd_kafka_partition_ua())
            _ = rd_kafka_subscribe(handle, list)
            rd_kafka_topic_partition_list_destroy(list)
            guard let queue = rd_kafka_queue_get_consumer(handle) else { throw KafkaError(.clientFailed, "no consumer queue") }
            defer { rd_kafka_queue_destroy(queue) }
            let buffer = UnsafeMutablePointer<UnsafeMutablePointer<rd_kafka_message_t>?>.allocate(capacity: 1000)
            defer { buffer.deallocate() }
            var consumed = 0
            var first: ContinuousClock.Instant?
            let deadline = ContinuousClock.now + .seconds(120)
            while consumed < count && ContinuousClock.now < deadline {
                let got = rd_kafka_consume_batch_queue(queue, 100, buffer, 1000)
                guard got > 0 else { continue }
                for index in 0..<Int(got) {
                    if buffer[index]!.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR { consumed += 1 }
                    rd_kafka_message_destroy(buffer[index])
                }
                if first == nil { first = .now }
                _ = rd_kafka_commit(handle, nil, 1)
            }
            guard consumed >= count, let first else { throw KafkaError(.clientFailed, "the raw loop consumed \(consumed) of \(count)") }
            return (ContinuousClock.now - first).inSeconds
        }
    }

    /// Produces `count` copies of `value` to `configuration`'s first topic with
    /// `rd_kafka_producev` (keyed by index, so every partition gets some), polling delivery
    /// reports as it goes, and flushes. Returns the seconds it took.
    public static func produce(_ configuration: KafkaConfiguration, value: [UInt8], count: Int, logger: Logger) async throws -> Double {
        try await KafkaAdmin.onThread {
            let producer = try RDKafkaProducer(configuration: configuration, wakeFD: nil, logger: logger)
            let start = ContinuousClock.now
            var confirmed = 0
            func confirm(_ deliveries: [RDKafkaProducer.Delivery]) throws(KafkaError) {
                if let failure = deliveries.lazy.compactMap(\.error).first { throw failure }
                confirmed += deliveries.count
            }
            // As a C loop would: the topic's name is converted once.
            let topic = configuration.topics[0].utf8CString
            try topic.withUnsafeBufferPointer { topic in
                try value.withUnsafeBytes { value in
                    for index in 0..<count {
                        var key = UInt64(index)
                        while true {
                            let error = withUnsafeBytes(of: &key) { key in
                                producer.produce(topic: topic.baseAddress!, partition: nil, key: key, value: value, headers: [], token: 1)
                            }
                            if error == RD_KAFKA_RESP_ERR_NO_ERROR { break }
                            guard error == RD_KAFKA_RESP_ERR__QUEUE_FULL else {
                                throw KafkaError(.deliveryFailed, "raw produce failed: \(RDKafkaConfig.describe(error))")
                            }
                            try confirm(producer.poll(timeoutMilliseconds: 1))
                        }
                        if index % 1000 == 0 { try confirm(producer.poll()) }
                    }
                }
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while confirmed < count && ContinuousClock.now < deadline { try confirm(producer.poll(timeoutMilliseconds: 10)) }
            guard confirmed == count else { throw KafkaError(.deliveryFailed, "raw produce: \(confirmed) of \(count) confirmed") }
            return (ContinuousClock.now - start).inSeconds
        }
    }
}
