//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// An error of the Kafka adapter.
///
/// The ``code`` says what kind of failure happened; ``message`` says what failed, where, and
/// what to do. Messages never contain passwords or other secrets. New codes may be added in
/// future releases, so switch over codes with a `default` branch.
public struct KafkaError: Error, Sendable, Hashable, CustomStringConvertible {
    // Same shape as RabbitMQError, RedisError and FlowError (and SluiceError): one error type per
    // module with its own extensible Code (STYLE habit 7); the repeated base/init/code/message/
    // description lines are that shape, not shared logic.
    /// A kind of ``KafkaError``.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidURL
            case invalidConfiguration
            case invalidProperty
            case runtimeTooOld
            case connectionFailed
            case unknownTopic
            case groupFailed
            case commitFailed
            case deliveryFailed
            case clientFailed
            case shutDown
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A URL could not be read as a Kafka URL.
        public static let invalidURL = Code(.invalidURL)
        /// A configuration value is out of range or missing.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// librdkafka refused a property (its own explanation is in the message).
        public static let invalidProperty = Code(.invalidProperty)
        /// The librdkafka library loaded at run time is older than the adapter needs.
        public static let runtimeTooOld = Code(.runtimeTooOld)
        /// No bootstrap server answered within the connect timeout.
        public static let connectionFailed = Code(.connectionFailed)
        /// A topic does not exist on the cluster.
        public static let unknownTopic = Code(.unknownTopic)
        /// The consumer group failed (refused group id, fatal coordinator error).
        public static let groupFailed = Code(.groupFailed)
        /// Committing offsets failed.
        public static let commitFailed = Code(.commitFailed)
        /// The broker did not confirm a produced message.
        public static let deliveryFailed = Code(.deliveryFailed)
        /// librdkafka reported another failure (client creation, fatal error).
        public static let clientFailed = Code(.clientFailed)
        /// The client was shut down before the operation ran.
        public static let shutDown = Code(.shutDown)

        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// What failed, where, and what to do.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "KafkaError.\(self.code): \(self.message)" }
}
