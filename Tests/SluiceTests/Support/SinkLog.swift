//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

@testable import Sluice

/// Records what a dispatcher delivers, for state-machine tests without tasks.
final class SinkLog<Event: Sendable>: Sendable {
    private let deliveries = Mutex<[(SubscriptionID, [Event])]>([])
    private let endings = Mutex<[(SubscriptionID, String)]>([])

    init() {}

    /// A new sink (with its own stage identity) that records into this log.
    func makeSink() -> EventSink<Event> {
        EventSink(
            stageID: StageID.next(),
            deliver: { events, subscription in self.deliveries.withLock { $0.append((subscription, events)) } },
            ended: { subscription, reason in self.endings.withLock { $0.append((subscription, "\(reason)")) } },
            rejected: { subscription, error in self.endings.withLock { $0.append((subscription, "rejected(\(error))")) } }
        )
    }

    /// Every delivery, in order.
    var batches: [(subscription: SubscriptionID, events: [Event])] {
        self.deliveries.withLock { $0.map { (subscription: $0.0, events: $0.1) } }
    }

    /// The batches delivered on `subscription`, in order.
    func batches(for subscription: SubscriptionID) -> [[Event]] {
        self.deliveries.withLock { $0.filter { $0.0 == subscription }.map(\.1) }
    }

    /// Every event delivered on `subscription`, in order.
    func events(for subscription: SubscriptionID) -> [Event] {
        self.batches(for: subscription).flatMap { $0 }
    }

    func clear() {
        self.deliveries.withLock { $0 = [] }
    }
}
