//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
import Foundation
public import Logging

/// A record read back by ``KafkaAdmin/read(topic:partitions:count:timeout:)``.
@_spi(Internal)
public struct KafkaAdminRecord: Sendable {
    /// The value.
    public var value: [UInt8]
    /// The key.
    public var key: [UInt8]?
    /// The partition.
    public var partition: Int32
    /// The headers.
    public var headers: [KafkaHeader]
}

/// Topic creation, bulk producing and committed-offset reads, for tests and benchmarks.
///
/// Every call blocks in librdkafka, so each runs on a thread of its own, never on the
/// cooperative pool.
@_spi(Internal)
public struct KafkaAdmin: Sendable {
    /// The cluster and its client settings (topics and group are ignored unless named).
    public let configuration: KafkaConfiguration
    private let logger: Logger

    /// Creates an admin client for the cluster of `configuration`.
    public init(configuration: KafkaConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Creates `topic` with `partitions` partitions.
    public func createTopic(_ topic: String, partitions: Int) async throws {
        try await self.request("creating topic \(topic)") { handle, queue in
            var text = [CChar](repeating: 0, count: 512)
            guard let newTopic = rd_kafka_NewTopic_new(topic, Int32(partitions), 1, &text, text.count) else {
                throw KafkaError(.clientFailed, "cannot describe topic \(topic): \(RDKafkaConfig.string(text))")
            }
            defer { rd_kafka_NewTopic_destroy(newTopic) }
            var topics: [OpaquePointer?] = [newTopic]
            rd_kafka_CreateTopics(handle, &topics, 1, nil, queue)
        } inspect: { event in
            guard let result = rd_kafka_event_CreateTopics_result(event) else { return }
            var count = 0
            if let results = rd_kafka_CreateTopics_result_topics(result, &count), count > 0, let first = results[0] {
                let error = rd_kafka_topic_result_error(first)
                guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw KafkaError(.clientFailed, "creating topic \(topic) failed: \(RDKafkaConfig.describe(error))")
                }
            }
        }
    }

    /// Deletes `topic` (benchmarks free the broker's memory after a run).
    public func deleteTopic(_ topic: String) async throws {
        try await self.request("deleting topic \(topic)") { handle, queue in
            guard let deleted = rd_kafka_DeleteTopic_new(topic) else { throw KafkaError(.clientFailed, "cannot describe topic \(topic)") }
            defer { rd_kafka_DeleteTopic_destroy(deleted) }
            var topics: [OpaquePointer?] = [deleted]
            rd_kafka_DeleteTopics(handle, &topics, 1, nil, queue)
        }
    }

    /// One admin request, on a thread of its own: `send` issues it with a new client and the
    /// queue its answer arrives on (within 10 s); an answer with an error throws (`doing`
    /// names the request), any other goes to `inspect`.
    private func request(
        _ doing: String,
        send: @escaping @Sendable (OpaquePointer, OpaquePointer) throws -> Void,
        inspect: @escaping @Sendable (OpaquePointer) throws -> Void = { _ in }
    ) async throws {
        try await Self.onThread { [configuration, logger] in
            let context = RDKafkaContext(logger: logger)
            let handle = try context.makeHandle(RD_KAFKA_PRODUCER, properties: configuration.librdkafkaProperties(window: 0, consumer: false))
            defer { rd_kafka_destroy(handle) }
            guard let queue = rd_kafka_queue_new(handle) else { throw KafkaError(.clientFailed, "no queue") }
            defer { rd_kafka_queue_destroy(queue) }
            try send(handle, queue)
            guard let event = rd_kafka_queue_poll(queue, 10_000) else {
                throw KafkaError(.connectionFailed, "\(doing) got no answer within 10 s")
            }
            defer { rd_kafka_event_destroy(event) }
            guard rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError(.clientFailed, "\(doing) failed: \(String(cString: rd_kafka_event_error_string(event)))")
            }
            try inspect(event)
        }
    }

    /// Produces `values` to `topic` (with `keys[i]` when given, else on `partition`, else by
    /// the partitioner), and waits until the broker confirmed every one.
    public func produce(topic: String, values: [[UInt8]], keys: [[UInt8]]? = nil, partition: Int32? = nil, headers: [KafkaHeader] = []) async throws {
        try await Self.onThread { [configuration, logger] in
            let producer = try RDKafkaProducer(configuration: configuration, extra: [("linger.ms", "5")], wakeFD: nil, logger: logger)
            var failures: [KafkaError] = []
            var confirmed = 0
            for (index, value) in values.enumerated() {
                while true {
                    let error = value.withUnsafeBytes { value in
                        if let keys {
                            return keys[index].withUnsafeBytes { key in
                                producer.produce(topic: topic, partition: partition, key: key, value: value, headers: headers, token: UInt64(index + 1))
                            }
                        }
                        return producer.produce(topic: topic, partition: partition, key: nil, value: value, headers: headers, token: UInt64(index + 1))
                    }
                    if error == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                        for delivery in producer.poll(timeoutMilliseconds: 10) {
                            confirmed += 1
                            if let failure = delivery.error { failures.append(failure) }
                        }
                        continue
                    }
                    guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                        throw KafkaError(.deliveryFailed, "producing to \(topic) failed: \(RDKafkaConfig.describe(error))")
                    }
                    break
                }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while confirmed < values.count && ContinuousClock.now < deadline {
                for delivery in producer.poll(timeoutMilliseconds: 50) {
                    confirmed += 1
                    if let failure = delivery.error { failures.append(failure) }
                }
            }
            if let failure = failures.first { throw failure }
            guard confirmed == values.count else {
                throw KafkaError(.deliveryFailed, "only \(confirmed) of \(values.count) messages to \(topic) were confirmed within 30 s")
            }
        }
    }

    /// The committed offsets of `group` for partitions `0..<partitions` of `topic` (-1001
    /// where nothing was committed).
    public func committed(group: String, topic: String, partitions: Int) async throws -> [Int64] {
        try await Self.onThread { [configuration, logger] in
            let context = RDKafkaContext(logger: logger)
            var properties = configuration.librdkafkaProperties(window: 0, consumer: false)
            properties.append(("group.id", group))
            let handle = try context.makeHandle(RD_KAFKA_CONSUMER, properties: properties)
            defer { rd_kafka_destroy_flags(handle, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE) }
            let list = rd_kafka_topic_partition_list_new(Int32(partitions))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for partition in 0..<partitions { rd_kafka_topic_partition_list_add(list, topic, Int32(partition)) }
            let error = rd_kafka_committed(handle, list, 10_000)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                throw KafkaError(.commitFailed, "reading committed offsets of \(group) failed: \(RDKafkaConfig.describe(error))")
            }
            return (0..<partitions).map { list.pointee.elems[$0].offset }
        }
    }

    /// Reads up to `count` records of `topic` from the start, without a group, for at most
    /// `timeout`: their values, keys, partitions and headers.
    public func read(topic: String, partitions: Int, count: Int, timeout: Duration = .seconds(15)) async throws -> [KafkaAdminRecord] {
        try await Self.onThread { [configuration, logger] in
            let context = RDKafkaContext(logger: logger)
            var properties = configuration.librdkafkaProperties(window: 0, consumer: false)
            properties.append(("group.id", "sluice-admin-read"))
            properties.append(("enable.auto.commit", "false"))
            let handle = try context.makeHandle(RD_KAFKA_CONSUMER, properties: properties)
            defer { rd_kafka_destroy_flags(handle, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE) }
            let list = rd_kafka_topic_partition_list_new(Int32(partitions))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for partition in 0..<partitions {
                rd_kafka_topic_partition_list_add(list, topic, Int32(partition))!.pointee.offset = Int64(RD_KAFKA_OFFSET_BEGINNING)
            }
            _ = rd_kafka_assign(handle, list)
            var records: [KafkaAdminRecord] = []
            let deadline = ContinuousClock.now + timeout
            while records.count < count && ContinuousClock.now < deadline {
                guard let message = rd_kafka_consumer_poll(handle, 50) else { continue }
                defer { rd_kafka_message_destroy(message) }
                guard message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
                let value = Array(UnsafeRawBufferPointer(start: message.pointee.payload, count: message.pointee.len))
                var headers: [KafkaHeader] = []
                var headerList: OpaquePointer?
                if rd_kafka_message_headers(message, &headerList) == RD_KAFKA_RESP_ERR_NO_ERROR, let headerList {
                    var index = 0
                    var name: UnsafePointer<CChar>?
                    var bytes: UnsafeRawPointer?
                    var size = 0
                    while rd_kafka_header_get_all(headerList, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                        headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
                        index += 1
                    }
                }
                let key = message.pointee.key.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) }
                records.append(KafkaAdminRecord(value: value, key: key, partition: message.pointee.partition, headers: headers))
            }
            return records
        }
    }

    /// Runs `body` (which may block) on a new thread, off the cooperative pool, and returns its result.
    public static func onThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                do {
                    continuation.resume(returning: try body())
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.name = "sluice-kafka-admin"
            thread.start()
        }
    }
}
