//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice

/// The identifier of a Redis stream entry: milliseconds and sequence number (`1700000000000-3`).
public struct RedisEntryID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The milliseconds part.
    public var milliseconds: UInt64
    /// The sequence part.
    public var sequence: UInt64

    /// Creates an entry id.
    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Reads `ms-seq` (or `ms`, sequence 0); `nil` for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count <= 2, let milliseconds = UInt64(parts[0]) else { return nil }
        let sequence = parts.count == 2 ? UInt64(parts[1]) : 0
        guard let sequence else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    /// `0-0`, before every entry.
    public static let zero = RedisEntryID(milliseconds: 0, sequence: 0)

    public static func < (lhs: RedisEntryID, rhs: RedisEntryID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    public var description: String { "\(self.milliseconds)-\(self.sequence)" }
}

/// What a ``RedisSource`` knows about a message.
public struct RedisMetadata: MessageMetadata {
    /// The list key or stream the message came from.
    public var key: String
    /// The stream entry id (`nil` for list items).
    public var entryID: RedisEntryID?
    /// How many times Redis delivered the message, this delivery included: from the stream's
    /// pending entries list (1 for a new entry). `nil` for lists, which do not count.
    public var deliveryCount: Int?
    /// The value as read from Redis, kept (shared, not copied) so the acknowledger can find
    /// the item again even if a processor changes the payload.
    let value: Payload
    /// Reliable mode: where the item sits in the consumer's processing list, so that settling
    /// removes it by position, never by searching for its value.
    let position: RedisPosition?

    /// Creates metadata.
    public init(key: String, entryID: RedisEntryID? = nil, deliveryCount: Int? = nil) {
        self.init(key: key, entryID: entryID, deliveryCount: deliveryCount, value: Payload())
    }

    init(key: String, entryID: RedisEntryID?, deliveryCount: Int?, value: Payload, position: RedisPosition? = nil) {
        self.key = key
        self.entryID = entryID
        self.deliveryCount = deliveryCount
        self.value = value
        self.position = position
    }
}

/// Where a reliable-mode item sits in its consumer's processing list: the count of items moved
/// into the list before it in this epoch. An epoch starts whenever the list is reset (at start,
/// or after Redis lost writes); settling an item of an earlier epoch needs no command.
struct RedisPosition: Sendable, Hashable {
    var epoch: Int
    var index: Int
}
