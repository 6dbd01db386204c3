//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
import Logging

/// One librdkafka producer handle (`rd_kafka_t`). Used from one thread only (its owner's
/// connection loop); delivery reports come back from ``poll(timeoutMilliseconds:)`` with the
/// token each message was produced with.
final class RDKafkaProducer {
    /// A delivery report: the token a message was produced with and its error, if any.
    struct Delivery {
        var token: UInt64
        var error: KafkaError?
    }

    private let context: RDKafkaContext
    private let handle: OpaquePointer
    private var deliveries: [Delivery] = []

    /// Creates a producer; `wakeFD` (if any) receives a byte when a delivery report waits.
    init(configuration: KafkaConfiguration, extra: [(String, String)] = [], wakeFD: Int32?, logger: Logger) throws(KafkaError) {
        try RDKafkaConfig.checkRuntime()
        let context = RDKafkaContext(logger: logger)
        self.context = context
        self.handle = try context.makeHandle(RD_KAFKA_PRODUCER, properties: configuration.librdkafkaProperties(window: 0, consumer: false) + extra)
        context.onDelivery = { [unowned self] token, error in
            let failure = error == RD_KAFKA_RESP_ERR_NO_ERROR
                ? nil : KafkaError(.deliveryFailed, "the broker did not take the message: \(RDKafkaConfig.describe(error))")
            self.deliveries.append(Delivery(token: token, error: failure))
        }
        if let wakeFD, let queue = rd_kafka_queue_get_main(self.handle) {
            rd_kafka_queue_io_event_enable(queue, wakeFD, "p", 1)
            rd_kafka_queue_destroy(queue)
        }
    }

    deinit {
        rd_kafka_destroy(self.handle)
    }

    /// Queues one message (copied). Returns librdkafka's error: `_QUEUE_FULL` when the local
    /// queue is full (poll and try again), other errors for a message that cannot be sent.
    func produce(
        topic: String,
        partition: Int32?,
        key: UnsafeRawBufferPointer?,
        value: UnsafeRawBufferPointer,
        headers: [KafkaHeader],
        token: UInt64
    ) -> rd_kafka_resp_err_t {
        topic.withCString { self.produce(topic: $0, partition: partition, key: key, value: value, headers: headers, token: token) }
    }

    /// ``produce(topic:partition:key:value:headers:token:)`` to a topic named by a C string
    /// (a loop producing to one topic converts its name once, not once per message).
    func produce(
        topic: UnsafePointer<CChar>,
        partition: Int32?,
        key: UnsafeRawBufferPointer?,
        value: UnsafeRawBufferPointer,
        headers: [KafkaHeader],
        token: UInt64
    ) -> rd_kafka_resp_err_t {
        var list: OpaquePointer?
        if !headers.isEmpty {
            list = rd_kafka_headers_new(headers.count)
            for header in headers {
                if let value = header.value {
                    value.withUnsafeBytes { bytes in _ = rd_kafka_header_add(list, header.name, -1, bytes.baseAddress, bytes.count) }
                } else {
                    _ = rd_kafka_header_add(list, header.name, -1, nil, 0)
                }
            }
        }
        let error = sluice_rd_kafka_produce_headers(
            self.handle, topic, partition ?? sluice_rd_kafka_partition_ua(),
            key?.baseAddress, key?.count ?? 0, value.baseAddress, value.count,
            list, UnsafeMutableRawPointer(bitPattern: UInt(token))
        )
        if error != RD_KAFKA_RESP_ERR_NO_ERROR, let list { rd_kafka_headers_destroy(list) }
        return error
    }

    /// Serves delivery reports (waiting at most `timeoutMilliseconds`) and returns them.
    func poll(timeoutMilliseconds: Int32 = 0) -> [Delivery] {
        _ = rd_kafka_poll(self.handle, timeoutMilliseconds)
        defer { self.deliveries.removeAll(keepingCapacity: true) }
        return self.deliveries
    }

    /// Messages queued or in flight to the broker.
    var outstanding: Int { Int(rd_kafka_outq_len(self.handle)) }

    /// Checks within `timeout` that the cluster answers and has `topics`.
    func checkReachable(topics: [String], configuration: KafkaConfiguration) throws(KafkaError) {
        try RDKafkaMetadata.check(self.handle, topics: topics, configuration: configuration)
    }
}

@available(*, unavailable)
extension RDKafkaProducer: Sendable {}
