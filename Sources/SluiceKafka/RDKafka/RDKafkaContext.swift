//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
import Logging

/// What librdkafka's callbacks of one handle reach: the handle's opaque points at it.
///
/// The log callback runs on librdkafka's own threads and reads only the immutable logger;
/// every other callback runs inside a poll on the owner's thread.
final class RDKafkaContext {
    let logger: Logger
    /// Delivery reports (producers): the message's token and its error.
    var onDelivery: ((UInt64, rd_kafka_resp_err_t) -> Void)?
    /// Rebalances (consumers); set before ``makeHandle(_:properties:)`` to take them over.
    var onRebalance: ((OpaquePointer, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> Void)?
    /// Results of asynchronous commits (consumers).
    var onCommit: ((rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> Void)?
    /// Errors librdkafka reports (`fatal`: the client cannot go on).
    var onError: ((rd_kafka_resp_err_t, String, Bool) -> Void)?
    /// librdkafka's statistics JSON, every `statistics.interval.ms` (only if set before
    /// ``makeHandle(_:properties:)`` and that property is set).
    var onStatistics: ((UnsafeBufferPointer<CChar>) -> Void)?

    init(logger: Logger) {
        self.logger = logger
    }

    private static func context(_ opaque: UnsafeMutableRawPointer?) -> RDKafkaContext? {
        opaque.map { Unmanaged<RDKafkaContext>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Creates a handle of `type` from `properties` with this context's callbacks. The caller
    /// keeps this context alive as long as the handle.
    func makeHandle(_ type: rd_kafka_type_t, properties: [(String, String)]) throws(KafkaError) -> OpaquePointer {
        let conf = try RDKafkaConfig.make(properties)
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(self).toOpaque())
        rd_kafka_conf_set_log_cb(conf) { handle, level, facility, text in
            guard let handle, let context = RDKafkaContext.context(rd_kafka_opaque(handle)) else { return }
            let line = "librdkafka \(facility.map { String(cString: $0) } ?? ""): \(text.map { String(cString: $0) } ?? "")"
            // librdkafka logs every failed connection attempt at level 3 and recovers by
            // itself; only critical conditions (0–2) are worth an info line.
            if level <= 2 { context.logger.info("\(line)") } else { context.logger.debug("\(line)") }
        }
        rd_kafka_conf_set_error_cb(conf) { handle, error, reason, opaque in
            guard let handle, let context = RDKafkaContext.context(opaque) else { return }
            let code = rd_kafka_resp_err_t(error)
            if code == RD_KAFKA_RESP_ERR__FATAL {
                var text = [CChar](repeating: 0, count: 512)
                _ = rd_kafka_fatal_error(handle, &text, text.count)
                context.onError?(code, RDKafkaConfig.string(text), true)
                return
            }
            context.onError?(code, reason.map { String(cString: $0) } ?? "", false)
        }
        if self.onStatistics != nil {
            rd_kafka_conf_set_stats_cb(conf) { _, json, length, opaque in
                guard let json, let context = RDKafkaContext.context(opaque) else { return 0 }
                context.onStatistics?(UnsafeBufferPointer(start: json, count: length))
                // 0: librdkafka frees the JSON.
                return 0
            }
        }
        if type == RD_KAFKA_PRODUCER {
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
                guard let message, let context = RDKafkaContext.context(opaque) else { return }
                context.onDelivery?(UInt64(UInt(bitPattern: message.pointee._private)), message.pointee.err)
            }
        } else {
            // Only a consumer that handles rebalances itself takes the callback; without one
            // librdkafka assigns by itself.
            if self.onRebalance != nil {
                rd_kafka_conf_set_rebalance_cb(conf) { handle, error, partitions, opaque in
                    guard let handle, let partitions, let context = RDKafkaContext.context(opaque) else { return }
                    context.onRebalance?(handle, error, partitions)
                }
            }
            rd_kafka_conf_set_offset_commit_cb(conf) { _, error, offsets, opaque in
                guard let context = RDKafkaContext.context(opaque) else { return }
                context.onCommit?(error, offsets)
            }
        }
        var text = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(type, conf, &text, text.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(.clientFailed, "librdkafka could not create a client: \(RDKafkaConfig.string(text))")
        }
        return handle
    }
}

@available(*, unavailable)
extension RDKafkaContext: Sendable {}
