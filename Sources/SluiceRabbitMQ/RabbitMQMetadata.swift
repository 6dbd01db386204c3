//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice

/// What a ``RabbitMQSource`` knows about a message: the delivery and its basic properties.
public struct RabbitMQMetadata: MessageMetadata {
    /// The delivery tag, unique on its channel.
    public var deliveryTag: UInt64
    /// The channel generation the message was delivered on: it grows with every (re)opened
    /// channel. Settlements of an older generation are dropped, never sent (the broker
    /// already requeued those deliveries when the channel closed).
    public var channelGeneration: UInt64
    /// Whether the broker delivered the message before (and it was not acknowledged).
    public var redelivered: Bool
    /// The exchange the message was published to (`""`: the default exchange).
    public var exchange: String
    /// The routing key it was published with.
    public var routingKey: String
    /// The message's headers, each value as text (numbers and booleans written out).
    public var headers: [String: String]
    /// The content type property, if set.
    public var contentType: String?
    /// The message id property, if set.
    public var messageID: String?
    /// The timestamp property (seconds since 1970), if set.
    public var timestamp: UInt64?
    /// How many times the broker delivered the message, this delivery included: from
    /// `x-delivery-count` (quorum queues) plus one, otherwise 2 for a redelivery (at least)
    /// and 1 for a first delivery.
    ///
    /// It feeds ``Sluice/FailurePolicy/maxDeliveries``. On a quorum queue it counts every
    /// delivery that was rejected with requeue or left unacknowledged when its channel closed,
    /// so any cap works. A classic queue carries only the redelivered flag, which tells a first
    /// delivery from a later one and nothing more: the count is 1 or 2, so only
    /// `maxDeliveries: 1` caps there (the first redelivery is dead-lettered without running
    /// the handler again), and a larger cap is never reached, however often a message comes
    /// back. The flag is also set for a message that was never handled but was requeued
    /// because its channel or connection closed (a reconnect, a consumer timeout, another
    /// consumer that stopped), so with `maxDeliveries: 1` such a message is dead-lettered too.
    /// Use a quorum queue to cap poison messages at more than one delivery.
    public var deliveryCount: Int?

    /// Creates metadata.
    public init(
        deliveryTag: UInt64,
        channelGeneration: UInt64,
        redelivered: Bool = false,
        exchange: String = "",
        routingKey: String = "",
        headers: [String: String] = [:],
        contentType: String? = nil,
        messageID: String? = nil,
        timestamp: UInt64? = nil
    ) {
        self.deliveryTag = deliveryTag
        self.channelGeneration = channelGeneration
        self.redelivered = redelivered
        self.exchange = exchange
        self.routingKey = routingKey
        self.headers = headers
        self.contentType = contentType
        self.messageID = messageID
        self.timestamp = timestamp
        // Most deliveries carry no headers: no lookup (and no hashing) for them.
        if !headers.isEmpty, let count = headers["x-delivery-count"].flatMap(Int.init) {
            self.deliveryCount = count + 1
        } else {
            self.deliveryCount = redelivered ? 2 : 1
        }
    }
}
