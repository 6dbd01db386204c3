//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice

/// A record for a ``KafkaSink`` to produce.
public struct KafkaRecord: Sendable {
    /// The value.
    public var value: Payload
    /// The key (`nil`: none; the partitioner then spreads records).
    public var key: Payload?
    /// The headers.
    public var headers: [KafkaHeader]
    /// The partition (`nil`: the partitioner picks one, by key when there is one).
    public var partition: Int32?
    /// The topic (`nil`: the sink's first configured topic).
    public var topic: String?

    /// Creates a record.
    public init(value: Payload, key: Payload? = nil, headers: [KafkaHeader] = [], partition: Int32? = nil, topic: String? = nil) {
        self.value = value
        self.key = key
        self.headers = headers
        self.partition = partition
        self.topic = topic
    }

    /// Creates a record from bytes.
    public init(value: [UInt8], key: [UInt8]? = nil, headers: [KafkaHeader] = [], partition: Int32? = nil, topic: String? = nil) {
        self.init(value: Payload(value), key: key.map(Payload.init), headers: headers, partition: partition, topic: topic)
    }
}
