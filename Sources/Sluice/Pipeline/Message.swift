//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// What every source's metadata can tell the pipeline.
public protocol MessageMetadata: Sendable {
    /// How many times the broker has delivered this message, counting this delivery, if the
    /// broker tracks it (AMQP redelivery, Redis stream pending count). Used to cap poison
    /// messages with ``FailurePolicy/maxDeliveries``.
    var deliveryCount: Int? { get }
}

extension MessageMetadata {
    /// Default: the broker does not count deliveries.
    @inlinable
    public var deliveryCount: Int? { nil }
}

/// What happens to a message that failed for good.
public struct FailureDisposition: Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Base: Hashable, Sendable { case deadLetter, requeue, drop }
    @usableFromInline
    let base: Base

    /// Hand the message to the source's dead-letter mechanism (AMQP dead-letter exchange,
    /// Redis dead-letter stream, Kafka dead-letter topic) and acknowledge it.
    public static let deadLetter = FailureDisposition(base: .deadLetter)
    /// Give the message back to the broker for another delivery (AMQP requeue, Redis list
    /// push-back; Kafka: not committed).
    public static let requeue = FailureDisposition(base: .requeue)
    /// Acknowledge and discard the message; it is counted.
    public static let drop = FailureDisposition(base: .drop)

    @inlinable
    public var description: String {
        switch self.base {
        case .deadLetter: return "deadLetter"
        case .requeue: return "requeue"
        case .drop: return "drop"
        }
    }
}

/// A message from a broker: payload bytes, typed metadata, and its state in the pipeline.
///
/// A processor may change the payload, mark the message failed, or route it to a batcher.
/// The pipeline acknowledges it once, after the last stage that handles it.
public struct Message<Metadata: Sendable>: Sendable {
    // The generic metadata comes last, so the other fields lie at fixed offsets in every
    // specialization (and in the generic code that destroys messages).

    /// The payload bytes, usually a view of the buffer of the fetch the message came in.
    public var payload: Payload
    /// How many times this pipeline ran the processor for this message (1 on the first run).
    public var attempts: Int = 0
    /// Routing and failure, rarely set: kept out of line so a message stays small to copy.
    @usableFromInline
    var extras: MessageExtras?
    /// What the source knows about the message (topic, offset, delivery tag, stream id, …).
    ///
    /// Constant: the source's acknowledger finds the message in its broker by it.
    public let metadata: Metadata

    /// The batcher the message goes to after its processor (`nil`: the first batcher).
    @inlinable
    public var batcher: String? {
        get { self.extras?.batcher }
        set { self.updateExtras { $0.batcher = newValue } }
    }

    /// Messages with the same batch key are batched together (`nil`: one common batch).
    @inlinable
    public var batchKey: String? {
        get { self.extras?.batchKey }
        set { self.updateExtras { $0.batchKey = newValue } }
    }

    /// Why the message failed, if it did; a failed message goes to no batcher.
    @inlinable
    public var failure: MessageFailure? {
        get { self.extras?.failure }
        set { self.updateExtras { $0.failure = newValue } }
    }

    @inlinable
    mutating func updateExtras(_ update: (MessageExtras) -> Void) {
        if self.extras == nil {
            self.extras = MessageExtras()
        } else if !isKnownUniquelyReferenced(&self.extras) {
            self.extras = self.extras!.copy()
        }
        update(self.extras!)
    }

    /// Creates a message.
    @inlinable
    public init(payload: Payload, metadata: Metadata) {
        self.payload = payload
        self.metadata = metadata
    }

    /// Creates a message with these payload bytes (shared, not copied).
    @inlinable
    public init(payload: [UInt8], metadata: Metadata) {
        self.payload = Payload(payload)
        self.metadata = metadata
    }

    /// The message as it arrived, kept while a handler runs in case it needs another attempt:
    /// its payload (held by a ``PayloadAnchor``, not by itself) and extras. The metadata cannot
    /// change, and attempts are counted by the processor.
    @usableFromInline
    struct Snapshot {
        @usableFromInline var payload: UnretainedPayload
        @usableFromInline var extras: MessageExtras?

        @inlinable
        init(payload: UnretainedPayload, extras: MessageExtras?) {
            self.payload = payload
            self.extras = extras
        }
    }

    /// Takes a snapshot before a handler runs; `anchor` keeps the payload's buffer alive
    /// (retaining it only when the buffer differs from the previous message's).
    @inlinable
    mutating func snapshot(anchor: inout PayloadAnchor) -> Snapshot {
        // Extras are nearly always nil; testing first skips a call to retain nothing.
        Snapshot(payload: anchor.hold(&self.payload), extras: self.extras == nil ? nil : self.extras)
    }

    /// This message as it was when `snapshot` was taken, for a retry; the anchor must still
    /// hold the payload's buffer.
    @inlinable
    func arrived(_ snapshot: Snapshot) -> Message {
        var original = self
        original.payload = snapshot.payload.payload
        original.extras = snapshot.extras
        return original
    }

    /// Whether the message was marked failed.
    @inlinable
    public var isFailed: Bool { self.extras?.failure != nil }

    /// Marks the message failed. With `disposition` `nil` the pipeline's failure policy decides
    /// (retry, then its final disposition); otherwise the message goes that way at once.
    @inlinable
    public mutating func fail(_ error: any Error, disposition: FailureDisposition? = nil) {
        self.failure = MessageFailure(error: error, disposition: disposition)
    }

    /// The payload as UTF-8 text.
    ///
    /// - Throws: ``DecodingFailure`` if the payload is not valid UTF-8; thrown from a handler it
    ///   fails the message (it never crashes the pipeline).
    @inlinable
    public func string() throws(DecodingFailure) -> String {
        guard let text = self.payload.withUnsafeBytes({ String(validating: $0, as: UTF8.self) }) else {
            throw DecodingFailure("payload of \(self.payload.count) bytes is not valid UTF-8")
        }
        return text
    }
}

/// The rarely used parts of a message, shared copy-on-write between copies of the message.
///
/// `@unchecked Sendable`: a box is written only through ``Message/updateExtras(_:)``, which
/// first copies it unless the writing message holds the only reference, so a box visible to
/// more than one message (or task) is never written.
@usableFromInline
final class MessageExtras: @unchecked Sendable {
    @usableFromInline var batcher: String?
    @usableFromInline var batchKey: String?
    @usableFromInline var failure: MessageFailure?

    @inlinable
    init() {}

    @inlinable
    func copy() -> MessageExtras {
        let copy = MessageExtras()
        copy.batcher = self.batcher
        copy.batchKey = self.batchKey
        copy.failure = self.failure
        return copy
    }
}

/// Why a message failed.
public struct MessageFailure: Sendable, CustomStringConvertible {
    /// The error.
    public var error: any Error
    /// A disposition chosen by the handler, or `nil` to let the failure policy decide.
    public var disposition: FailureDisposition?

    /// Creates a failure.
    @inlinable
    public init(error: any Error, disposition: FailureDisposition? = nil) {
        self.error = error
        self.disposition = disposition
    }

    @inlinable
    public var description: String { "\(self.error)" }
}

/// A payload that could not be decoded.
public struct DecodingFailure: Error, Sendable, CustomStringConvertible {
    /// What was wrong with the payload.
    public let message: String

    /// Creates a decoding failure.
    @inlinable
    public init(_ message: String) { self.message = message }

    @inlinable
    public var description: String { "DecodingFailure: \(self.message)" }
}

/// Metadata of messages that carry none beyond an identifier (in-memory sources, tests).
public struct BasicMetadata: MessageMetadata, Hashable {
    /// An identifier unique within its source.
    public var id: UInt64
    /// The delivery count, if known.
    public var deliveryCount: Int?

    /// Creates metadata.
    @inlinable
    public init(id: UInt64, deliveryCount: Int? = nil) {
        self.id = id
        self.deliveryCount = deliveryCount
    }
}
