//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// An error raised by the Sluice engine.
///
/// The ``code`` says what kind of failure happened; ``message`` says what exactly failed and,
/// where it helps, what to do about it. New codes may be added in future releases, so switch
/// over codes with a `default` branch.
public struct SluiceError: Error, Sendable, Hashable, CustomStringConvertible {
    // Same shape as RedisError, KafkaError, RabbitMQError and FlowError: each module owns its
    // error type, whose Code grows with that module alone (STYLE habit 7), so they are not one
    // generic error; what repeats (base, init, code, message, description) is that shape.
    /// A kind of ``SluiceError``.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidOption
            case stageEnded
            case unknownPartition
            case partitionTaken
            case duplicateSubscription
            case unknownSubscription
            case restartIntensityExceeded
            case notSupported
            case notAConsumer
            case notAProducer
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// An option has a value outside its allowed range (for example `maxDemand <= 0`).
        public static let invalidOption = Code(.invalidOption)
        /// The stage addressed has already ended.
        public static let stageEnded = Code(.stageEnded)
        /// A subscription named a partition the partition dispatcher does not have.
        public static let unknownPartition = Code(.unknownPartition)
        /// A subscription asked for a partition another subscriber already holds.
        public static let partitionTaken = Code(.partitionTaken)
        /// The same consumer subscribed twice to the same producer (and partition).
        public static let duplicateSubscription = Code(.duplicateSubscription)
        /// An operation named a subscription that does not exist (or no longer exists).
        public static let unknownSubscription = Code(.unknownSubscription)
        /// A supervisor's children crashed more often than its restart intensity allows.
        public static let restartIntensityExceeded = Code(.restartIntensityExceeded)
        /// The operation is not supported by this stage or dispatcher.
        public static let notSupported = Code(.notSupported)
        /// A stage that takes no input (a producer) was asked to subscribe to another stage.
        public static let notAConsumer = Code(.notAConsumer)
        /// A stage that emits nothing (a consumer) was subscribed to, or asked for its demand mode.
        public static let notAProducer = Code(.notAProducer)

        /// The code's name, as in messages ("invalidOption").
        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A human-readable explanation naming the option, value or stage involved.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The code and the message, for logs.
    public var description: String { "SluiceError.\(self.code): \(self.message)" }

    @usableFromInline
    static func invalidOption(_ name: String, _ value: some CustomStringConvertible, _ rule: String) -> SluiceError {
        SluiceError(.invalidOption, "invalid option \(name)=\(value): \(rule)")
    }
}
