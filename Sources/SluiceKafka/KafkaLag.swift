//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
import SluiceConnector

extension KafkaSource {
    /// How many messages of the partitions assigned to this consumer its group has not
    /// committed yet: the sum over those partitions of the partition's end (its high
    /// watermark) minus the group's committed offset, as `kafka-consumer-groups` counts it;
    /// asked from the brokers while a pipeline runs the source.
    ///
    /// A partition the group never committed counts from where this consumer starts it:
    /// the partition's oldest offset with ``KafkaConfiguration/OffsetReset/earliest``, the
    /// consumer's position (or the end) with ``KafkaConfiguration/OffsetReset/latest``.
    /// `nil` while the consumer has no partition assigned (it is still joining its group, or
    /// the group has more members than partitions).
    ///
    /// Each call runs on the consumer's own thread, between its turns, so the caller's thread
    /// never blocks: one `ListOffsets` request per partition leader for the ends and one
    /// `OffsetFetch` to the group coordinator for the committed offsets (one more `ListOffsets`
    /// when a partition has no commit and starts at the earliest offset), each answered with
    /// one entry per assigned partition and bounded by ``lagQueryTimeout``. Cheap enough to
    /// call once a second. The session started last answers when several pipelines run this
    /// value.
    ///
    /// - Throws: ``KafkaError``: `shutDown` while no pipeline runs the source (before it
    ///   connected, or after it ended); `connectionFailed` when a broker did not answer
    ///   within ``lagQueryTimeout``; `clientFailed` when one answered with an error.
    public func lag() async throws(KafkaError) -> Int? {
        let notRunning = KafkaError(.shutDown, "the Kafka source is not running: its lag is known only while a pipeline runs it")
        guard let loop = try self.running.session(orThrow: notRunning).consumerLoop else { throw notRunning }
        let result: Result<Int?, KafkaError> = await withCheckedContinuation { continuation in
            let queued = loop.enqueue(.lag { continuation.resume(returning: $0) })
            if !queued { continuation.resume(returning: .failure(KafkaError(.shutDown, "the Kafka source was shut down"))) }
        }
        return try result.get()
    }

    /// The longest each broker request of ``lag()`` waits for its answer (the consumer's
    /// thread waits meanwhile).
    public static var lagQueryTimeout: Duration { KafkaLagQuery.timeout }
}

/// The lag of a consumer's assigned partitions (``KafkaSource/lag()``), measured on the
/// consumer's thread with its handle.
enum KafkaLagQuery {
    static let timeout: Duration = .milliseconds(500)

    /// librdkafka's logical offsets: the partition end (as a `ListOffsets` timestamp: latest),
    /// its beginning (earliest), and "none" (no commit, no position).
    private static let end: Int64 = -1
    private static let beginning: Int64 = -2
    private static let invalid: Int64 = -1001

    /// The lag of `keys` on `handle` (`nil`: no partition assigned).
    static func measure(
        _ handle: OpaquePointer?,
        _ keys: [KafkaPartitionKey],
        offsetReset: KafkaConfiguration.OffsetReset
    ) -> Result<Int?, KafkaError> {
        guard let handle else { return .failure(KafkaError(.shutDown, "the Kafka consumer is closed")) }
        guard !keys.isEmpty else { return .success(nil) }
        do throws(KafkaError) {
            let ends = try Self.offsets(handle, keys, at: Self.end)
            var starts = try Self.fetch(keys, "reading the committed offsets") { list, milliseconds in
                rd_kafka_committed(handle, list, milliseconds)
            }
            let unset = keys.indices.filter { starts[$0] < 0 }
            if !unset.isEmpty {
                if offsetReset == .earliest {
                    let oldest = try Self.offsets(handle, unset.map { keys[$0] }, at: Self.beginning)
                    for (index, offset) in zip(unset, oldest) { starts[index] = offset }
                } else {
                    let positions = try Self.fetch(keys, "reading the positions") { list, _ in rd_kafka_position(handle, list) }
                    for index in unset { starts[index] = positions[index] >= 0 ? positions[index] : ends[index] }
                }
            }
            return .success(zip(ends, starts).reduce(0) { $0 + Int(max(0, $1.0 - $1.1)) })
        } catch {
            return .failure(error)
        }
    }

    /// The offsets of `keys` at `timestamp` (``end`` or ``beginning``): one `ListOffsets`
    /// request per leader.
    private static func offsets(_ handle: OpaquePointer, _ keys: [KafkaPartitionKey], at timestamp: Int64) throws(KafkaError) -> [Int64] {
        let offsets = try Self.fetch(keys, "listing the partitions' offsets", preset: timestamp) { list, milliseconds in
            rd_kafka_offsets_for_times(handle, list, milliseconds)
        }
        for (key, offset) in zip(keys, offsets) where offset < 0 {
            throw KafkaError(.clientFailed, "the broker gave no offset for \(key)")
        }
        return offsets
    }

    /// Runs `call` on a partition list of `keys` (offsets set to `preset`) and returns the
    /// offsets it filled in, in the order of `keys`.
    private static func fetch(
        _ keys: [KafkaPartitionKey],
        _ what: String,
        preset: Int64 = Self.invalid,
        _ call: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>, Int32) -> rd_kafka_resp_err_t
    ) throws(KafkaError) -> [Int64] {
        let list = rd_kafka_topic_partition_list_new(Int32(keys.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for key in keys { rd_kafka_topic_partition_list_add(list, key.topic, key.partition).pointee.offset = preset }
        let error = call(list, Int32(KafkaConfiguration.milliseconds(Self.timeout)))
        try Self.check(error, what)
        var offsets: [Int64] = []
        for index in 0..<Int(list.pointee.cnt) {
            let entry = list.pointee.elems[index]
            try Self.check(entry.err, "\(what) of \(String(cString: entry.topic))[\(entry.partition)]")
            offsets.append(entry.offset)
        }
        return offsets
    }

    private static func check(_ error: rd_kafka_resp_err_t, _ what: String) throws(KafkaError) {
        guard error != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
        let code: KafkaError.Code = error == RD_KAFKA_RESP_ERR__TIMED_OUT ? .connectionFailed : .clientFailed
        throw KafkaError(code, "\(what) failed: \(RDKafkaConfig.describe(error))")
    }
}
