//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// An error of the RabbitMQ adapter.
///
/// The ``code`` says what kind of failure happened; ``message`` says what failed, where, and
/// what to do. Messages never contain passwords. New codes may be added in future releases,
/// so switch over codes with a `default` branch.
public struct RabbitMQError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A kind of ``RabbitMQError``.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidURL
            case invalidConfiguration
            case prefetchTooSmall
            case connectionFailed
            case accessRefused
            case notFound
            case notAllowed
            case preconditionFailed
            case connectionLost
            case channelClosed
            case unroutable
            case nacked
            case serverError
            case shutDown
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A URL could not be read as an AMQP URL.
        public static let invalidURL = Code(.invalidURL)
        /// A configuration value is out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// An explicit prefetch is smaller than the pipeline's in-flight window.
        public static let prefetchTooSmall = Code(.prefetchTooSmall)
        /// The broker could not be reached (refused, unknown host, timeout).
        public static let connectionFailed = Code(.connectionFailed)
        /// The broker refused the user name or password, or the user's permissions
        /// (`ACCESS_REFUSED`, 403).
        public static let accessRefused = Code(.accessRefused)
        /// A queue or exchange does not exist (`NOT_FOUND`, 404).
        public static let notFound = Code(.notFound)
        /// The virtual host does not exist or the user may not use it (`NOT_ALLOWED`, 530).
        public static let notAllowed = Code(.notAllowed)
        /// The broker refused a declaration or an acknowledgement (`PRECONDITION_FAILED`, 406),
        /// for example a queue declared with other arguments, or an unknown delivery tag.
        public static let preconditionFailed = Code(.preconditionFailed)
        /// An established connection broke (I/O error, missed heartbeats, closed by the broker).
        public static let connectionLost = Code(.connectionLost)
        /// The broker closed the channel.
        public static let channelClosed = Code(.channelClosed)
        /// A published message could not be routed to any queue (a `mandatory` return).
        public static let unroutable = Code(.unroutable)
        /// The broker refused to take responsibility for a published message (`basic.nack`).
        public static let nacked = Code(.nacked)
        /// The broker answered with another error.
        public static let serverError = Code(.serverError)
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

    /// The code of an AMQP reply code the broker closed a channel or connection with.
    static func code(forReply replyCode: UInt16, connection: Bool) -> Code {
        switch replyCode {
        case 403: return .accessRefused
        case 404: return .notFound
        case 530: return .notAllowed
        case 406: return .preconditionFailed
        case 320: return .connectionLost
        default: return connection ? .serverError : .channelClosed
        }
    }

    /// Whether retrying on a new connection may succeed.
    public var isTransient: Bool {
        self.code == .connectionLost || self.code == .connectionFailed || self.code == .channelClosed
    }

    /// Whether the broker closed the channel because a delivery was not acknowledged within
    /// its `consumer_timeout`.
    package var isConsumerTimeout: Bool {
        self.code == .preconditionFailed && self.message.contains("delivery acknowledgement on channel")
            && self.message.contains("timed out")
    }

    public var description: String { "RabbitMQError.\(self.code): \(self.message)" }
}
