//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import Synchronization

/// A Kafka record header: a name and an optional value.
public struct KafkaHeader: Sendable, Hashable {
    /// The header's name.
    public var name: String
    /// The header's value (`nil`: a header without value).
    public var value: [UInt8]?

    /// Creates a header.
    public init(name: String, value: [UInt8]?) {
        self.name = name
        self.value = value
    }

    /// Creates a header with a UTF-8 text value.
    public init(name: String, text: String) {
        self.init(name: name, value: Array(text.utf8))
    }
}

/// What a ``KafkaSource`` knows about a message.
public struct KafkaMetadata: MessageMetadata {
    /// The topic.
    ///
    /// Names are interned: each distinct name is kept once for the life of the process (a
    /// process names few topics), so that a message refers to its topic without counting
    /// references.
    public var topic: String {
        get { self.topicName.name }
        set { self.topicName = KafkaTopicName.interned(newValue) }
    }
    /// The topic, interned: copying the metadata (every move of a message between stages)
    /// costs no reference count for it, and topics compare by identity.
    unowned(unsafe) var topicName: KafkaTopicName
    /// The partition.
    public var partition: Int32
    /// The offset within the partition.
    public var offset: Int64
    /// The key (`nil`: the record has none); a view of the fetch's buffer.
    public var key: Payload?
    /// The headers, in order.
    public var headers: [KafkaHeader]
    /// The record's timestamp in milliseconds since 1970 (`nil`: the broker gave none).
    public var timestampMilliseconds: Int64?
    /// The assignment of the partition the message was taken in: settlements of an older
    /// assignment (the partition was revoked meanwhile) are dropped, never committed.
    let assignment: UInt64
    /// The payload's size as taken, for the in-flight byte window (a processor may change the
    /// payload).
    let size: UInt32

    /// Creates metadata.
    public init(topic: String, partition: Int32, offset: Int64, key: Payload? = nil, headers: [KafkaHeader] = [], timestampMilliseconds: Int64? = nil) {
        self.init(topic: topic, partition: partition, offset: offset, key: key, headers: headers, timestampMilliseconds: timestampMilliseconds, assignment: 0, size: 0)
    }

    init(topic: String, partition: Int32, offset: Int64, key: Payload?, headers: [KafkaHeader], timestampMilliseconds: Int64?, assignment: UInt64, size: UInt32) {
        self.init(topic: KafkaTopicName.interned(topic), partition: partition, offset: offset, key: key, headers: headers, timestampMilliseconds: timestampMilliseconds, assignment: assignment, size: size)
    }

    init(topic: KafkaTopicName, partition: Int32, offset: Int64, key: Payload?, headers: [KafkaHeader], timestampMilliseconds: Int64?, assignment: UInt64, size: UInt32) {
        self.topicName = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.headers = headers
        self.timestampMilliseconds = timestampMilliseconds
        self.assignment = assignment
        self.size = size
    }

    /// The value of the first header named `name`.
    public func header(_ name: String) -> [UInt8]? {
        self.headers.first { $0.name == name }?.value ?? nil
    }
}

/// A topic's name, interned: one object per distinct name, kept for the life of the process
/// (a process sees few topic names: those its sources subscribe to and its users name), so
/// that ``KafkaMetadata`` can refer to it without counting references.
final class KafkaTopicName: Sendable {
    /// The name.
    let name: String

    private init(_ name: String) { self.name = name }

    private static let table = Mutex<[String: KafkaTopicName]>([:])

    /// The one object for `name`.
    static func interned(_ name: String) -> KafkaTopicName {
        Self.table.withLock { table in
            if let known = table[name] { return known }
            let made = KafkaTopicName(name)
            table[name] = made
            return made
        }
    }
}
