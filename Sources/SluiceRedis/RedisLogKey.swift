//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Metadata keys of the Redis adapter's log messages.
public enum RedisLogKey {
    // Same shape as RabbitMQLogKey (and KafkaLogKey): each adapter keeps its own sluice.<module>.*
    // keys in one enum of its own (STYLE habit 8).
    /// The Redis address (`host:port` or `unix:path`).
    public static let address = "sluice.redis.address"
    /// The key or stream.
    public static let key = "sluice.redis.key"
    /// The read mode.
    public static let mode = "sluice.redis.mode"
    /// The consumer name.
    public static let consumer = "sluice.redis.consumer"
    /// An error.
    public static let error = "sluice.redis.error"
    /// A retry attempt number.
    public static let attempt = "sluice.redis.attempt"
    /// A count of items.
    public static let count = "sluice.redis.count"
}
