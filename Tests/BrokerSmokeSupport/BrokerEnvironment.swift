//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// The broker addresses the integration tests read, as printed by `scripts/brokers env`.
///
/// A missing variable fails the test (it never skips it): a run that silently tested nothing
/// against real brokers must not look green.
package enum BrokerEnvironment {
    /// `redis://127.0.0.1:16379` by default.
    package static let redisURL = "SLUICE_REDIS_URL"
    /// `amqp://guest:guest@127.0.0.1:16672/` by default.
    package static let rabbitMQURL = "SLUICE_RABBITMQ_URL"
    /// The RabbitMQ node name, for `rabbitmqctl -n`.
    package static let rabbitMQNode = "SLUICE_RABBITMQ_NODE"
    /// `127.0.0.1:19092` by default (Tansu, or any Kafka).
    package static let kafkaBrokers = "SLUICE_KAFKA_BROKERS"
    /// The tansu binary when the Kafka broker is Tansu; absent or empty for a real Kafka.
    package static let tansu = "SLUICE_TANSU"

    /// The value of a variable that `scripts/brokers env` prints, or an error that says how to
    /// start the brokers.
    package static func require(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw BrokerSmokeError(
                """
                \(name) is not set, so this integration test has no broker to talk to. \
                Start the brokers and export their addresses in the shell that runs the tests: \
                `scripts/brokers up` and then `eval "$(scripts/brokers env)"` \
                (or run `scripts/test`, which does both; see docs/brokers.md).
                """
            )
        }
        return value
    }

    package static func optional(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    /// A queue, key, topic or group name that no other test or run uses.
    package static func uniqueName(_ purpose: String) -> String {
        "sluice-smoke-\(purpose)-\(UUID().uuidString.lowercased())"
    }
}

/// A failed step of a smoke test, with what went wrong in words.
package struct BrokerSmokeError: Error, CustomStringConvertible {
    package var description: String

    package init(_ description: String) {
        self.description = description
    }
}
