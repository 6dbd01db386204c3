//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// What a consumer stage knows about one of its upstream subscriptions.
public struct SubscriptionInfo: Hashable, Sendable {
    /// The subscription's identifier.
    public let id: SubscriptionID
    /// The producer's identity.
    public let producer: StageID
    /// The subscription's maximum demand.
    public let maxDemand: Int
    /// The subscription's (effective) minimum demand.
    public let minDemand: Int
    /// The demand mode the subscriber asked for.
    public let demand: DemandMode
    /// What happens to the consumer when the producer ends.
    public let cancel: CancelMode

    @usableFromInline
    init(id: SubscriptionID, producer: StageID, maxDemand: Int, minDemand: Int, demand: DemandMode, cancel: CancelMode) {
        self.id = id
        self.producer = producer
        self.maxDemand = maxDemand
        self.minDemand = minDemand
        self.demand = demand
        self.cancel = cancel
    }
}

/// What a producer knows about one of its subscribers (a consumer or producer-consumer that
/// subscribed to it).
public struct SubscriberInfo<Event: Sendable>: Sendable {
    /// The subscription's identifier (the one ``Stage/handleCancel(_:reason:context:)`` names).
    public let id: SubscriptionID
    /// The subscribing stage's identity.
    public let consumer: StageID
    /// The options the subscriber subscribed with.
    public let options: SubscriptionOptions<Event>

    @usableFromInline
    init(id: SubscriptionID, consumer: StageID, options: SubscriptionOptions<Event>) {
        self.id = id
        self.consumer = consumer
        self.options = options
    }
}

/// The role of a stage in a pipeline.
public enum StageRole: Hashable, Sendable {
    // With SubscriberInfo's init above, this looks like ReadCredit.Window's init and Phase
    // (SluiceConnector) by shape only: assignments followed by a three-case enum.
    /// Receives demand and emits at most that many events.
    case producer
    /// Receives events, emits transformed events; demand flows through it.
    case producerConsumer
    /// Receives events and asks for more.
    case consumer
}

/// The behaviour of a stage: its state and the callbacks that run, one message at a time, in
/// the stage's own task.
///
/// Do not conform to `Stage` directly; conform to ``Producer``, ``ProducerConsumer`` or
/// ``Consumer``, implement the callbacks your role needs, and start the stage with
/// ``StageHandle/start(_:options:subscribeTo:)``.
///
/// ```swift
/// struct Counter: Producer {
///     var next = 0
///     mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
///         context.emit(Array(next..<next + demand))
///         next += demand
///     }
/// }
/// ```
public protocol Stage: SendableMetatype {
    /// The events this stage consumes (`Never` for producers).
    associatedtype Input: Sendable = Never
    /// The events this stage emits (`Never` for consumers).
    associatedtype Output: Sendable = Never
    /// Information other code may send to the stage with ``StageHandle/send(_:)``.
    associatedtype Info: Sendable = Never

    /// The stage's role; provided by ``Producer``, ``ProducerConsumer`` and ``Consumer``.
    static var role: StageRole { get }

    /// The stage started; `handle` refers to the stage itself. Keep it to let other tasks send
    /// this stage messages (for example a task that finished work the stage started).
    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) async throws

    /// Producers: subscribers asked for `demand` more events. Emit at most that many, now or
    /// later, with ``StageContext/emit(_:)-(Output)``. Demand that is not satisfied now remains
    /// the producer's to satisfy later (for example when an ``Info`` brings events).
    mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) async throws

    /// Consumers and producer-consumers: a slice of events arrived on `subscription`.
    ///
    /// The batch belongs to the stage. Declare the parameter `consuming` to change it in place
    /// or emit it onward without copying its events.
    mutating func handleEvents(
        _ events: consuming [Input],
        from subscription: SubscriptionID,
        context: inout StageContext<Output>
    ) async throws

    /// Information sent with ``StageHandle/send(_:)`` or ``StageHandle/call(_:)`` arrived.
    mutating func handleInfo(_ info: Info, context: inout StageContext<Output>) async throws

    /// Consumer side: the stage is subscribing to a producer. Return the demand mode for this subscription
    /// (by default the one asked for in ``SubscriptionOptions/demand``). In manual mode, ask for
    /// the first events here with ``StageContext/ask(_:on:)``.
    mutating func handleSubscribe(
        _ subscription: SubscriptionInfo,
        context: inout StageContext<Output>
    ) async throws -> DemandMode

    /// Producer side (producers and producer-consumers): a consumer subscribed to this stage.
    ///
    /// Called once the dispatcher accepted the subscriber, before it receives any event. Events
    /// emitted here are dispatched like any others. Together with
    /// ``handleCancel(_:reason:context:)`` this tells a producer whether anyone listens.
    mutating func handleSubscribe(
        consumer subscriber: SubscriberInfo<Output>,
        context: inout StageContext<Output>
    ) async throws

    /// One of the stage's subscriptions ended; `reason` says whether it was cancelled (by either
    /// side, ``CancelReason/cancelled(_:)``) or the stage at the other end ended
    /// (``CancelReason/down(_:)``).
    ///
    /// Consumer side (an upstream subscription): called after every event already received on
    /// it was handled; whether the stage then ends depends on the subscription's
    /// ``CancelMode``. A subscription that was never established (the producer had ended, or
    /// refused it) is not reported here.
    ///
    /// Producer side (a subscriber of this stage): the subscriber was removed and told before
    /// this runs; events emitted here are dispatched, and only then is the demand the
    /// dispatcher held for that subscriber released.
    mutating func handleCancel(
        _ subscription: SubscriptionID,
        reason: CancelReason,
        context: inout StageContext<Output>
    ) async throws

    /// The stage is ending for `reason`; release resources here.
    mutating func terminate(reason: StopReason) async
}

extension Stage {
    /// Default: does nothing.
    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) async throws {}

    /// Default: does nothing (consumers receive no demand).
    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) async throws {}

    /// Default: does nothing (producers receive no events).
    public mutating func handleEvents(
        _ events: [Input],
        from subscription: SubscriptionID,
        context: inout StageContext<Output>
    ) async throws {}

    /// Default: ignores the information.
    public mutating func handleInfo(_ info: Info, context: inout StageContext<Output>) async throws {}

    /// Default: the demand mode the subscription asked for.
    public mutating func handleSubscribe(
        _ subscription: SubscriptionInfo,
        context: inout StageContext<Output>
    ) async throws -> DemandMode {
        subscription.demand
    }

    /// Default: does nothing.
    public mutating func handleSubscribe(
        consumer subscriber: SubscriberInfo<Output>,
        context: inout StageContext<Output>
    ) async throws {}

    /// Default: does nothing.
    public mutating func handleCancel(
        _ subscription: SubscriptionID,
        reason: CancelReason,
        context: inout StageContext<Output>
    ) async throws {}

    /// Default: does nothing.
    public mutating func terminate(reason: StopReason) async {}
}

/// A stage that emits events on demand; it consumes nothing.
public protocol Producer: Stage where Input == Never {}

extension Producer {
    /// Producers have the role ``StageRole/producer``.
    public static var role: StageRole { .producer }
}

/// A stage that consumes events, transforms them and emits the results; demand flows through it.
public protocol ProducerConsumer: Stage {}

extension ProducerConsumer {
    /// Producer-consumers have the role ``StageRole/producerConsumer``.
    public static var role: StageRole { .producerConsumer }
}

/// A stage that consumes events and emits nothing.
public protocol Consumer: Stage where Output == Never {}

extension Consumer {
    /// Consumers have the role ``StageRole/consumer``.
    public static var role: StageRole { .consumer }
}
