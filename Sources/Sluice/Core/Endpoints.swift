//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The producer end of subscriptions: what a consumer talks to.
///
/// Every method only posts a message to the producer and returns at once.
@usableFromInline
protocol EventSource<Output>: AnyObject, Sendable {
    associatedtype Output: Sendable

    var stageID: StageID { get }
    var stageName: String { get }

    /// Posts a subscription request; `false` if the producer has already ended.
    func subscribe(
        _ subscription: SubscriptionID,
        sink: any EventSink<Output>,
        options: SubscriptionOptions<Output>,
        reply: Reply<SubscriptionID>?
    ) -> Bool

    /// Asks for `count` more events on `subscription`.
    func ask(_ count: Int, on subscription: SubscriptionID)

    /// Cancels `subscription` from the consumer side.
    func cancel(_ subscription: SubscriptionID, reason: StopReason)
}

/// The consumer end of subscriptions: what a producer or dispatcher delivers to.
@usableFromInline
protocol EventSink<Input>: AnyObject, Sendable {
    associatedtype Input: Sendable

    var stageID: StageID { get }

    /// Delivers a batch of events on `subscription`; never more than was asked.
    func deliver(_ events: [Input], on subscription: SubscriptionID)

    /// The producer of `subscription` ended, or rejected the subscription.
    func subscriptionEnded(_ subscription: SubscriptionID, reason: StopReason)
}
