//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// An error of a ``Flow``'s input: a file that cannot be opened or read.
///
/// Invalid options (a stage count or demand out of range) are ``SluiceError``s with code
/// ``SluiceError/Code-swift.struct/invalidOption``, like everywhere else in the engine. Input
/// failures are a type of their own, shaped like ``SluiceError`` as every module's error is, so
/// that the engine's codes stay about stages and subscriptions.
public struct FlowError: Error, Sendable, Hashable, CustomStringConvertible {
    // Same shape as RabbitMQError (and SluiceError, KafkaError, RedisError): a module's own error
    // type with its own extensible Code; only the shape repeats.
    /// What kind of failure this is; more codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case cannotOpenFile
            case readFailed
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A file could not be opened (missing, a directory, no permission).
        public static let cannotOpenFile = Code(.cannotOpenFile)
        /// Reading an open file failed.
        public static let readFailed = Code(.readFailed)

        /// The code's name.
        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// What failed, naming the file and the system's reason.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The code and the message.
    public var description: String { "FlowError.\(self.code): \(self.message)" }
}
