//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import CKafka
import Foundation

/// A message read by a consumer, copied out of librdkafka's `rd_kafka_message_t`.
struct KafkaRecord: Equatable, Sendable {
    var partition: Int32
    var offset: Int64
    var key: String
    var value: String
}

/// One librdkafka client handle (`rd_kafka_t`), producer or consumer. Not for concurrent use:
/// call it from one thread.
final class RDKafkaHandle {
    private let handle: OpaquePointer
    /// Set when a bounded consumer close gave up: the closing thread may still use the handle,
    /// so it must never be destroyed (destroying would also try to close again, and hang).
    private var abandoned = false

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        if !self.abandoned {
            rd_kafka_destroy(self.handle)
        }
    }

    /// The librdkafka runtime the process loaded, e.g. "2.16.1".
    static var runtimeVersion: String {
        String(cString: rd_kafka_version_str())
    }

    /// Tansu needs librdkafka 2.1 or later at run time (2.0.2 fails to parse its ApiVersions
    /// reply). `scripts/brokers env` puts a 2.16 runtime on LD_LIBRARY_PATH for that.
    static func requireRuntimeThatTalksToTansu() throws {
        guard rd_kafka_version() >= 0x0201_0000 else {
            throw BrokerSmokeError(
                """
                the loaded librdkafka runtime is \(Self.runtimeVersion), which cannot talk to Tansu. \
                Run the tests with the LD_LIBRARY_PATH that `scripts/brokers env` prints \
                (eval "$(scripts/brokers env)"), which loads librdkafka 2.16 instead; see docs/brokers.md.
                """
            )
        }
    }

    static func make(_ type: rd_kafka_type_t, configuration: [String: String]) throws -> RDKafkaHandle {
        guard let conf = rd_kafka_conf_new() else {
            throw BrokerSmokeError("librdkafka could not allocate a configuration")
        }
        var errorText = [CChar](repeating: 0, count: 512)
        for (name, value) in configuration.sorted(by: { $0.key < $1.key }) {
            guard rd_kafka_conf_set(conf, name, value, &errorText, errorText.count) == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                throw BrokerSmokeError("cannot set \(name)=\(value): \(Self.string(errorText))")
            }
        }
        guard let handle = rd_kafka_new(type, conf, &errorText, errorText.count) else {
            rd_kafka_conf_destroy(conf)
            throw BrokerSmokeError("rd_kafka_new failed: \(Self.string(errorText))")
        }
        return RDKafkaHandle(handle: handle)
    }

    // MARK: Admin

    /// Creates a topic through the Admin API (CreateTopics), which Tansu and Apache Kafka serve.
    func createTopic(_ name: String, partitions: Int32, timeoutMilliseconds: Int32) throws {
        var errorText = [CChar](repeating: 0, count: 512)
        guard let newTopic = rd_kafka_NewTopic_new(name, partitions, 1, &errorText, errorText.count) else {
            throw BrokerSmokeError("cannot describe topic \(name): \(Self.string(errorText))")
        }
        defer { rd_kafka_NewTopic_destroy(newTopic) }
        guard let queue = rd_kafka_queue_new(self.handle) else {
            throw BrokerSmokeError("librdkafka could not allocate a queue")
        }
        defer { rd_kafka_queue_destroy(queue) }

        var newTopics: [OpaquePointer?] = [newTopic]
        rd_kafka_CreateTopics(self.handle, &newTopics, newTopics.count, nil, queue)
        guard let event = rd_kafka_queue_poll(queue, timeoutMilliseconds) else {
            throw BrokerSmokeError("creating topic \(name) got no answer within \(timeoutMilliseconds) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        guard rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR else {
            let reason = String(cString: rd_kafka_event_error_string(event))
            throw BrokerSmokeError("creating topic \(name) failed: \(reason)")
        }
        guard let result = rd_kafka_event_CreateTopics_result(event) else {
            throw BrokerSmokeError("creating topic \(name): the answer was not a CreateTopics result")
        }
        var count = 0
        guard let topics = rd_kafka_CreateTopics_result_topics(result, &count) else { return }
        for index in 0..<count {
            guard let topic = topics[index] else { continue }
            let error = rd_kafka_topic_result_error(topic)
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                let text = rd_kafka_topic_result_error_string(topic).map { String(cString: $0) } ?? ""
                throw BrokerSmokeError("creating topic \(name) failed: \(Self.describe(error)) \(text)")
            }
        }
    }

    // MARK: Producing

    /// Enqueues one message (copied) for the partitioner to place by key.
    func produce(topic: String, key: String, value: String) throws {
        let error = key.withCString { key in
            value.withCString { value in
                sluice_rd_kafka_produce(
                    self.handle, topic, sluice_rd_kafka_partition_ua(),
                    key, strlen(key), value, strlen(value), nil
                )
            }
        }
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw BrokerSmokeError("producing to \(topic) failed: \(Self.describe(error))")
        }
    }

    /// Waits until every enqueued message was delivered (or failed).
    func flush(timeoutMilliseconds: Int32) throws {
        let error = rd_kafka_flush(self.handle, timeoutMilliseconds)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_outq_len(self.handle) == 0 else {
            throw BrokerSmokeError(
                "flush: \(rd_kafka_outq_len(self.handle)) messages undelivered after \(timeoutMilliseconds) ms: \(Self.describe(error))"
            )
        }
    }

    // MARK: Consuming

    func subscribe(to topic: String) throws {
        rd_kafka_poll_set_consumer(self.handle)
        let list = rd_kafka_topic_partition_list_new(1)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, topic, sluice_rd_kafka_partition_ua())
        let error = rd_kafka_subscribe(self.handle, list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw BrokerSmokeError("subscribing to \(topic) failed: \(Self.describe(error))")
        }
    }

    enum PollResult {
        case record(KafkaRecord)
        case error(String)
        case nothing
    }

    /// Serves the consumer queue for up to `timeoutMilliseconds`: a message, an error event
    /// (librdkafka reports transient ones this way and recovers by itself), or nothing.
    func poll(timeoutMilliseconds: Int32) -> PollResult {
        guard let message = rd_kafka_consumer_poll(self.handle, timeoutMilliseconds) else { return .nothing }
        defer { rd_kafka_message_destroy(message) }
        let fields = message.pointee
        guard fields.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            return .error(Self.describe(fields.err))
        }
        return .record(
            KafkaRecord(
                partition: fields.partition,
                offset: fields.offset,
                key: Self.string(fields.key, count: fields.key_len),
                value: Self.string(fields.payload, count: fields.len)
            )
        )
    }

    /// Commits the positions of the current assignment and waits for the broker to confirm.
    func commit() throws {
        let error = rd_kafka_commit(self.handle, nil, 0)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw BrokerSmokeError("commit failed: \(Self.describe(error))")
        }
    }

    /// The group's committed offsets of partitions `0..<partitions`, asked of the broker
    /// (`RD_KAFKA_OFFSET_INVALID`, -1001, where nothing was committed).
    func committedOffsets(topic: String, partitions: Int32, timeoutMilliseconds: Int32) throws -> [Int64] {
        let list = rd_kafka_topic_partition_list_new(partitions)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for partition in 0..<partitions {
            rd_kafka_topic_partition_list_add(list, topic, partition)
        }
        let error = rd_kafka_committed(self.handle, list, timeoutMilliseconds)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR, let list else {
            throw BrokerSmokeError("reading committed offsets failed: \(Self.describe(error))")
        }
        return (0..<Int(list.pointee.cnt)).map { list.pointee.elems[$0].offset }
    }

    /// Leaves the consumer group, waiting at most `timeoutSeconds`.
    ///
    /// `rd_kafka_consumer_close` was seen to hang for over a minute against Tansu, so it runs on
    /// a thread of its own; when it does not finish in time the handle is given up (leaked) and
    /// this returns false. Call it last: the handle must not be used afterwards.
    func closeConsumer(timeoutSeconds: Double) -> Bool {
        let handle = SendableOpaquePointer(pointer: self.handle)
        let finished = DispatchSemaphore(value: 0)
        let closer = Thread {
            _ = rd_kafka_consumer_close(handle.pointer)
            finished.signal()
        }
        closer.name = "kafka-smoke-close"
        closer.start()
        if finished.wait(timeout: .now() + timeoutSeconds) == .success {
            return true
        }
        self.abandoned = true
        return false
    }

    // MARK: Text

    private static func describe(_ error: rd_kafka_resp_err_t) -> String {
        "\(String(cString: rd_kafka_err2name(error))) (\(String(cString: rd_kafka_err2str(error))))"
    }

    private static func string(_ buffer: [CChar]) -> String {
        buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func string(_ bytes: UnsafeRawPointer?, count: Int) -> String {
        guard let bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}

@available(*, unavailable)
extension RDKafkaHandle: Sendable {}
