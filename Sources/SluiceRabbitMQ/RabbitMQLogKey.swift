//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Metadata keys of the RabbitMQ adapter's log messages.
public enum RabbitMQLogKey {
    /// The broker address (`host:port/vhost`).
    public static let address = "sluice.amqp.address"
    /// The queue.
    public static let queue = "sluice.amqp.queue"
    /// The channel generation.
    public static let generation = "sluice.amqp.generation"
    /// An error.
    public static let error = "sluice.amqp.error"
    /// A retry attempt number.
    public static let attempt = "sluice.amqp.attempt"
    /// A count of messages.
    public static let count = "sluice.amqp.count"
}
