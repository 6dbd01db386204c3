//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A snapshot of a running stage: its role, dispatcher, subscriptions in both directions with
/// their pending demand, and what it holds.
///
/// Read with ``StageHandle/status()``, in order with the stage's other mail. Nothing here is
/// maintained per event: the stage assembles it when asked.
public struct StageStatus: Sendable {
    /// A consumer subscribed to this stage.
    public struct Subscriber: Hashable, Sendable {
        /// The subscription.
        public let id: SubscriptionID
        /// The subscribing stage.
        public let consumer: StageID
        /// Events the subscriber asked for and has not received yet.
        public let pendingDemand: Int
    }

    /// A producer this stage subscribed to.
    public struct Producer: Hashable, Sendable {
        /// The subscription.
        public let id: SubscriptionID
        /// The producer's identity.
        public let producer: StageID
        /// The producer's name.
        public let producerName: String
        /// Events asked for on this subscription and not received yet.
        public let pendingDemand: Int
        /// The subscription's maximum demand.
        public let maxDemand: Int
        /// The subscription's (effective) minimum demand.
        public let minDemand: Int
        /// Whether this stage cancelled the subscription and waits for the producer to confirm.
        public let isCancelling: Bool
    }

    /// The stage's identity.
    public let id: StageID
    /// The stage's name.
    public let name: String
    /// The stage's role.
    public let role: StageRole
    /// The dispatcher's kind ("demand", "broadcast", "partition(0, 1)"); `nil` for a consumer.
    public let dispatcher: String?
    /// The demand mode (`nil` for a consumer).
    public let demandMode: ProducerDemandMode?
    /// The stage's subscribers, with the demand each has pending.
    public let subscribers: [Subscriber]
    /// The producers the stage subscribed to, with the demand pending on each.
    public let producers: [Producer]
    /// Producer-consumers: batches of input received and waiting for downstream demand.
    public let queuedInputBatches: Int
    /// Producer-consumers: events in ``queuedInputBatches``.
    public let queuedInputEvents: Int
    /// Producers and producer-consumers: events the dispatcher holds for subscribers that have not
    /// asked for them yet (partition queues, also of partitions nobody took; broadcast backlogs).
    public let dispatcherHeld: Int
    /// Infos waiting behind buffered events (``StageHandle/sendBehindEvents(_:)``).
    public let infosBehindEvents: Int
    /// The stage's counters.
    public let statistics: StageStatistics

    /// Events in the producer buffer (``StageStatistics/buffered``).
    public var buffered: Int { self.statistics.buffered }
}
