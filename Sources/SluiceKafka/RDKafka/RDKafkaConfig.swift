//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka

/// Builds librdkafka configuration objects (`rd_kafka_conf_t`) from property lists, with
/// librdkafka's own explanation when it refuses one.
enum RDKafkaConfig {
    /// The oldest librdkafka runtime the adapter works with: 2.1.0 (2.0 cannot read the
    /// ApiVersions v3 reply some brokers send, and lacks `fetch.queue.backoff.ms`).
    static let minimumVersion: Int32 = 0x0201_0000

    /// The librdkafka runtime the process loaded, e.g. "2.16.1".
    static var runtimeVersion: String { String(cString: rd_kafka_version_str()) }

    /// Checks that the loaded runtime is recent enough.
    static func checkRuntime() throws(KafkaError) {
        try Self.checkRuntime(version: rd_kafka_version(), text: Self.runtimeVersion)
    }

    /// Checks `version` (librdkafka's `0xMMmmrrxx` form), named `text` in the error.
    static func checkRuntime(version: Int32, text: String) throws(KafkaError) {
        guard version >= Self.minimumVersion else {
            throw KafkaError(
                .runtimeTooOld,
                "the loaded librdkafka is \(text), but Sluice needs 2.1.0 or later; install a newer librdkafka, "
                    + "or put a folder holding a newer librdkafka.so.1 on LD_LIBRARY_PATH (`eval \"$(scripts/brokers env)\"` does this)"
            )
        }
    }

    /// Creates a configuration holding `properties`; the caller owns it.
    static func make(_ properties: [(String, String)]) throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else { throw KafkaError(.clientFailed, "librdkafka could not allocate a configuration") }
        var text = [CChar](repeating: 0, count: 512)
        for (name, value) in properties {
            guard rd_kafka_conf_set(conf, name, value, &text, text.count) == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(conf)
                var explanation = Self.string(text)
                if KafkaConfiguration.isSecret(name), !value.isEmpty {
                    explanation = explanation.replacingAll(value, with: "***")
                }
                let shown = KafkaConfiguration.isSecret(name) ? "***" : value
                throw KafkaError(.invalidProperty, "librdkafka refused property \(name)=\(shown): \(explanation)")
            }
        }
        return conf
    }

    /// Checks `properties` with librdkafka without keeping anything.
    static func check(_ properties: [(String, String)]) throws(KafkaError) {
        let conf = try Self.make(properties)
        rd_kafka_conf_destroy(conf)
    }

    /// A C string buffer as text.
    static func string(_ buffer: [CChar]) -> String {
        buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// An error code's name and description.
    static func describe(_ error: rd_kafka_resp_err_t) -> String {
        "\(String(cString: rd_kafka_err2name(error))): \(String(cString: rd_kafka_err2str(error)))"
    }
}

extension String {
    /// Every occurrence of `target` replaced with `replacement`.
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        return self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
