//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// An error of the Redis adapter.
///
/// The ``code`` says what kind of failure happened; ``message`` says what failed, where, and
/// what to do. Messages never contain passwords. New codes may be added in future releases,
/// so switch over codes with a `default` branch.
///
/// Its shape is ``Sluice/SluiceError``'s on purpose (DESIGN §5: one error struct per module with
/// an extensible code); the two share no code because each module's codes are its own.
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    // Same shape as RabbitMQError and FlowError (see SluiceError and KafkaError): one error type per
    // module with its own extensible Code; only the shape repeats.
    /// A kind of ``RedisError``.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidURL
            case invalidConfiguration
            case connectionFailed
            case authenticationFailed
            case connectionLost
            case wrongType
            case loading
            case noScript
            case noGroup
            case serverError
            case unexpectedReply
            case shutDown
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A URL could not be read as a Redis URL.
        public static let invalidURL = Code(.invalidURL)
        /// A configuration value is out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// Redis could not be reached (refused, unknown host, timeout).
        public static let connectionFailed = Code(.connectionFailed)
        /// Redis refused the password or ACL user.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// An established connection broke (I/O error or timeout).
        public static let connectionLost = Code(.connectionLost)
        /// The key holds a value of another type than the mode needs (`WRONGTYPE`).
        public static let wrongType = Code(.wrongType)
        /// Redis is still loading its data set after a restart (`LOADING`).
        public static let loading = Code(.loading)
        /// A script is not in Redis's script cache (`NOSCRIPT`); handled internally.
        public static let noScript = Code(.noScript)
        /// The stream or its consumer group does not exist (`NOGROUP`).
        public static let noGroup = Code(.noGroup)
        /// Redis answered with another error.
        public static let serverError = Code(.serverError)
        /// Redis answered with a reply of an unexpected shape.
        public static let unexpectedReply = Code(.unexpectedReply)
        /// The connection was shut down before the operation ran.
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

    /// Classifies an error reply of Redis.
    init(serverReply text: String, command: String) {
        let code: Code
        if text.hasPrefix("WRONGTYPE") || text.contains("WRONGTYPE") {
            code = .wrongType
        } else if text.hasPrefix("NOSCRIPT") {
            code = .noScript
        } else if text.hasPrefix("LOADING") || text.hasPrefix("MASTERDOWN") || text.hasPrefix("BUSY ") {
            code = .loading
        } else if text.hasPrefix("NOGROUP") {
            code = .noGroup
        } else if text.hasPrefix("NOAUTH") || text.hasPrefix("WRONGPASS") || text.hasPrefix("NOPERM") {
            code = .authenticationFailed
        } else {
            code = .serverError
        }
        self.init(code, "Redis answered \(command) with: \(text)")
    }

    /// Whether retrying on a new connection may succeed (the connection broke, or Redis is
    /// loading its data after a restart).
    public var isTransient: Bool {
        self.code == .connectionLost || self.code == .connectionFailed || self.code == .loading
    }

    public var description: String { "RedisError.\(self.code): \(self.message)" }
}
