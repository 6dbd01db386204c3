//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Metadata keys of the Kafka adapter's log messages.
public enum KafkaLogKey {
    // Same shape as RabbitMQLogKey and RedisLogKey: each adapter keeps its own sluice.<module>.*
    // keys in one enum of its own (STYLE habit 8).
    /// The bootstrap servers.
    public static let brokers = "sluice.kafka.brokers"
    /// The topic or topics.
    public static let topic = "sluice.kafka.topic"
    /// The consumer group.
    public static let group = "sluice.kafka.group"
    /// A partition.
    public static let partition = "sluice.kafka.partition"
    /// An offset.
    public static let offset = "sluice.kafka.offset"
    /// An error.
    public static let error = "sluice.kafka.error"
    /// A count of messages.
    public static let count = "sluice.kafka.count"
}
