//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The GenStage announcement's event manager: a producer that broadcasts every notified event to
// all handlers. `notify` returns once the event was dispatched. Handlers run under a
// supervisor: when one crashes, it is restarted and subscribes again.
//
// The manager buffers events only while at least one handler is subscribed: it counts its
// subscribers with `handleSubscribe(consumer:)` and `handleCancel`, so an event notified while
// nobody listens is dropped at once (notify answers `false`) instead of piling up, and events
// still queued when the last handler leaves are dropped the same way.
//
//   swift run ExampleEventManager

import Sluice

/// Queues notified events and emits them as handlers ask, while anyone listens.
struct EventManager: Producer {
    typealias Output = String

    enum Info: Sendable {
        /// Answered `true` once dispatched, `false` if nobody was subscribed to receive it.
        case notify(String, Reply<Bool>)
    }

    private var queue: [(String, Reply<Bool>)] = []
    private var demand = 0
    private var subscribers: Set<SubscriptionID> = []

    mutating func handleSubscribe(consumer subscriber: SubscriberInfo<String>, context: inout StageContext<String>) {
        self.subscribers.insert(subscriber.id)
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<String>) {
        self.subscribers.remove(subscription)
        guard self.subscribers.isEmpty else { return }
        // Nobody listens any more: what is still queued will not be delivered.
        for (_, reply) in self.queue { reply.succeed(false) }
        self.queue = []
    }

    mutating func handleInfo(_ info: Info, context: inout StageContext<String>) {
        switch info {
        case .notify(let event, let reply):
            guard !self.subscribers.isEmpty else {
                reply.succeed(false)
                return
            }
            self.queue.append((event, reply))
            self.dispatch(&context)
        }
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<String>) {
        self.demand += demand
        self.dispatch(&context)
    }

    private mutating func dispatch(_ context: inout StageContext<String>) {
        let count = min(self.demand, self.queue.count)
        guard count > 0 else { return }
        let ready = self.queue.prefix(count)
        self.queue.removeFirst(count)
        self.demand -= count
        context.emit(ready.map(\.0))
        for (_, reply) in ready { reply.succeed(true) }
    }
}

extension StageHandle where S == EventManager {
    /// Broadcasts `event`; returns once it was dispatched to the handlers (`true`), or at once
    /// with `false` if no handler is subscribed.
    @discardableResult
    func notify(_ event: String) async throws -> Bool {
        try await self.call { reply in .notify(event, reply) }
    }
}

struct HandlerCrashed: Error {}

/// Prints events; crashes on the event "crash".
struct EventHandler: Consumer {
    typealias Input = String
    let name: String

    mutating func handleEvents(_ events: [String], from subscription: SubscriptionID, context: inout StageContext<Never>) throws {
        for event in events {
            if event == "crash" && self.name == "fragile" {
                print("\(self.name): crashing on \(event)")
                throw HandlerCrashed()
            }
            print("\(self.name): \(event)")
        }
    }
}

// Nobody listens yet: the event is dropped, not buffered.
let lonely = try await StageHandle.start(EventManager(), options: .init(name: "lonely", dispatcher: .broadcast))
print("notified with no handler subscribed: delivered = \(try await lonely.notify("nobody hears this"))")
await lonely.stop()

let supervisor = try await Supervisor.start(children: [
    ChildSpec(id: "manager") { _ in
        try await StageHandle.start(EventManager(), options: .init(name: "manager", dispatcher: .broadcast))
    },
    ChildSpec(id: "steady") { children in
        try await StageHandle.start(
            EventHandler(name: "steady"),
            subscribeTo: [.init(children.handle("manager", as: EventManager.self)!)]
        )
    },
    ChildSpec(id: "fragile") { children in
        try await StageHandle.start(
            EventHandler(name: "fragile"),
            subscribeTo: [.init(children.handle("manager", as: EventManager.self)!)]
        )
    },
])

let manager = supervisor.handle("manager", as: EventManager.self)!
try await manager.notify("hello")
try await manager.notify("crash")
// Wait until the supervisor restarted the fragile handler and it subscribed again.
while supervisor.restartCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
while try await manager.statistics().subscribers < 2 { try await Task.sleep(for: .milliseconds(10)) }
try await manager.notify("world")
try await Task.sleep(for: .milliseconds(100))
print("restarts: \(supervisor.restartCount)")
await supervisor.stop()
