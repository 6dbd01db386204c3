//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The producer end of subscriptions: what a consumer talks to.
///
/// Every operation only posts a message to the producer and returns at once. The operations
/// are closures made where the producer's concrete type is known, so calling them runs fully
/// specialized code (a protocol witness of a generic class would not be).
@usableFromInline
package final class EventSource<Output: Sendable>: Sendable {
    @usableFromInline package let stageID: StageID
    @usableFromInline package let stageName: String
    @usableFromInline let subscribeOperation:
        @Sendable (SubscriptionID, EventSink<Output>, SubscriptionOptions<Output>, Reply<SubscriptionID>?) -> Bool
    @usableFromInline let askOperation: @Sendable (Int, SubscriptionID) -> Void
    @usableFromInline let cancelOperation: @Sendable (SubscriptionID, CancelReason) -> Void

    @usableFromInline
    package init(
        stageID: StageID,
        stageName: String,
        subscribe: @escaping @Sendable (SubscriptionID, EventSink<Output>, SubscriptionOptions<Output>, Reply<SubscriptionID>?) -> Bool,
        ask: @escaping @Sendable (Int, SubscriptionID) -> Void,
        cancel: @escaping @Sendable (SubscriptionID, CancelReason) -> Void
    ) {
        // A class gets no memberwise init; RetryPolicy.init and Processors' internal init only share
        // the shape.
        self.stageID = stageID
        self.stageName = stageName
        self.subscribeOperation = subscribe
        self.askOperation = ask
        self.cancelOperation = cancel
    }

    /// Posts a subscription request; `false` if the producer has already ended.
    @inlinable
    package func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Output>,
        options: SubscriptionOptions<Output>,
        reply: Reply<SubscriptionID>?
    ) -> Bool {
        self.subscribeOperation(subscription, sink, options, reply)
    }

    /// Asks for `count` more events on `subscription`.
    @inlinable
    package func ask(_ count: Int, on subscription: SubscriptionID) {
        self.askOperation(count, subscription)
    }

    /// Ends `subscription` from the consumer side: ``CancelReason/cancelled(_:)`` when the
    /// consumer cancels it (the producer then confirms with the same reason), or
    /// ``CancelReason/down(_:)`` when the consumer ended.
    @inlinable
    package func cancel(_ subscription: SubscriptionID, reason: CancelReason) {
        self.cancelOperation(subscription, reason)
    }
}

/// The consumer end of subscriptions: what a producer or dispatcher delivers to.
@usableFromInline
package final class EventSink<Input: Sendable>: Sendable {
    @usableFromInline package let stageID: StageID
    @usableFromInline let deliverOperation: @Sendable (consuming [Input], SubscriptionID) -> Void
    @usableFromInline let endedOperation: @Sendable (SubscriptionID, CancelReason) -> Void
    @usableFromInline let rejectedOperation: @Sendable (SubscriptionID, any Error) -> Void

    @usableFromInline
    package init(
        stageID: StageID,
        deliver: @escaping @Sendable (consuming [Input], SubscriptionID) -> Void,
        ended: @escaping @Sendable (SubscriptionID, CancelReason) -> Void,
        rejected: @escaping @Sendable (SubscriptionID, any Error) -> Void
    ) {
        self.stageID = stageID
        self.deliverOperation = deliver
        self.endedOperation = ended
        self.rejectedOperation = rejected
    }

    /// Delivers a batch of events on `subscription`; never more than was asked.
    @inlinable
    package func deliver(_ events: consuming [Input], on subscription: SubscriptionID) {
        if events.count &* MemoryLayout<Input>.stride >= StageExecutor.localHandOffBytes {
            // Moved through the closure, so the consumer still gets the only reference.
            var batch: [Input]? = consume events
            StageExecutor.handingOffLarge { self.deliverOperation(batch.take()!, subscription) }
        } else {
            self.deliverOperation(consume events, subscription)
        }
    }

    /// `subscription` ended: cancelled by either side, or its producer ended.
    @inlinable
    package func subscriptionEnded(_ subscription: SubscriptionID, reason: CancelReason) {
        self.endedOperation(subscription, reason)
    }

    /// The producer refused `subscription` (it was never established).
    @inlinable
    package func subscriptionRejected(_ subscription: SubscriptionID, error: any Error) {
        self.rejectedOperation(subscription, error)
    }
}
