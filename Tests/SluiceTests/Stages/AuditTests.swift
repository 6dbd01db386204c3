//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import InMemoryLogging
import Logging
import Testing

@testable import Sluice

/// A producer that emits on request and records the marks of the infos it handles.
struct MarkingProducer: Producer {
    typealias Output = Int

    enum Info: Sendable {
        case emit([Int])
        case mark(String)
    }

    let marks: Observed<[String]>

    mutating func handleInfo(_ info: Info, context: inout StageContext<Int>) {
        switch info {
        case .emit(let events): context.emit(events)
        case .mark(let label): self.marks.append(label)
        }
    }
}

/// A producer-consumer that records its producer-side callbacks and emits from them.
struct WatchingRelay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    let calls: Observed<[String]>
    var upstream: SubscriptionID?

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Int>) -> DemandMode {
        self.upstream = subscription.id
        return subscription.demand
    }

    mutating func handleSubscribe(consumer subscriber: SubscriberInfo<Int>, context: inout StageContext<Int>) {
        self.calls.append("subscriber \(subscriber.options.maxDemand)")
        context.emit([subscriber.options.maxDemand])
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        context.emit(events)
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Int>) {
        self.calls.append(subscription == self.upstream ? "upstream \(reason)" : "subscriber gone \(reason)")
        if subscription != self.upstream { context.emit([200]) }
    }
}

/// A ``WatchingProducer``, an ``OrderedRelay`` subscribed to it and a manual consumer of the
/// relay (both with maxDemand 10), returned once the relay asked the producer for its 10: what
/// the producer then emits waits in the relay's queued input until the consumer asks.
func relayChain() async throws -> (
    producer: StageHandle<WatchingProducer>,
    relay: StageHandle<OrderedRelay>,
    consumer: StageHandle<RecordingConsumer>,
    calls: Observed<[String]>,
    log: Observed<ConsumerLog>
) {
    let calls = Observed<[String]>([])
    let producerCalls = Observed<[String]>([])
    let log = Observed(ConsumerLog())
    let producer = try await StageHandle.start(WatchingProducer(calls: producerCalls))
    let relay = try await StageHandle.start(
        OrderedRelay(calls: calls),
        subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
    )
    let consumer = try await StageHandle.start(
        RecordingConsumer(log: log),
        subscribeTo: [.init(relay, options: .init(maxDemand: 10, demand: .manual))]
    )
    try await producerCalls.wait("the relay's demand") { $0.contains("demand 10") }
    return (producer, relay, consumer, calls, log)
}

@Suite("Issue 11 audit: the rules' remaining edges", .timeLimit(.minutes(1)))
struct AuditTests {
    // MARK: 8. Infos wait behind what the dispatcher holds too

    @Test("an info behind events waits for the events a partition dispatcher queued, also in a partition nobody took yet")
    func infoBehindPartitionQueues() async throws {
        let marks = Observed<[String]>([])
        let producer = try await StageHandle.start(
            MarkingProducer(marks: marks),
            options: .init(dispatcher: .partition(count: 3) { .index($0 % 3) })
        )
        let logs = [Observed(ConsumerLog()), Observed(ConsumerLog())]
        var consumers: [StageHandle<RecordingConsumer>] = []
        for (index, log) in logs.enumerated() {
            consumers.append(
                try await StageHandle.start(
                    RecordingConsumer(log: log, demandMode: .manual),
                    subscribeTo: [.init(producer, options: .init(maxDemand: 10, partition: .index(index)))]
                )
            )
        }
        consumers[0].send(.ask(10, nil))
        try await consumers[0].settle()
        try await producer.settle()
        // Demand 10 upstream (partition 0's): 0 and 3 go out, 1 and 4 wait in partition 1's
        // queue (no demand), 2 in partition 2's (nobody took it).
        producer.send(.emit([0, 1, 2, 3, 4]))
        try await logs[0].wait("partition 0's events") { $0.events == [0, 3] }
        producer.sendBehindEvents(.mark("behind"))
        var status = try await producer.status()
        #expect(status.buffered == 0)
        #expect(status.dispatcherHeld == 3)
        #expect(status.infosBehindEvents == 1)
        #expect(marks.value.isEmpty, "events still wait in partitions 1 and 2")

        consumers[1].send(.ask(1, nil))
        try await logs[1].wait("1") { $0.events == [1] }
        try await producer.settle()
        #expect(marks.value.isEmpty, "4 is still queued")
        consumers[1].send(.ask(1, nil))
        try await logs[1].wait("4") { $0.events == [1, 4] }
        try await producer.settle()
        #expect(marks.value.isEmpty, "2 waits for partition 2's first subscriber")

        let waiting = Task { try await producer.sendBehindEventsAndWait(.mark("and wait")) }
        let lateLog = Observed(ConsumerLog())
        let late = try await StageHandle.start(
            RecordingConsumer(log: lateLog),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, partition: .index(2)))]
        )
        try await waiting.value
        #expect(marks.value == ["behind", "and wait"])
        try await lateLog.wait("the event of partition 2") { $0.events == [2] }
        status = try await producer.status()
        #expect(status.dispatcherHeld == 0)
        #expect(status.infosBehindEvents == 0)
        try await late.halt()
        for consumer in consumers { try await consumer.halt() }
        try await producer.halt()
    }

    @Test("an info behind events waits for a late broadcast subscriber's backlog")
    func infoBehindBroadcastBacklog() async throws {
        let marks = Observed<[String]>([])
        let producer = try await StageHandle.start(MarkingProducer(marks: marks), options: .init(dispatcher: .broadcast))
        let earlyLog = Observed(ConsumerLog())
        let early = try await StageHandle.start(
            RecordingConsumer(log: earlyLog),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
        )
        try await producer.settle()
        // Joins while the early subscriber's 10 are asked upstream: what that demand brings is
        // kept for it until it asks.
        let lateLog = Observed(ConsumerLog())
        let late = try await StageHandle.start(
            RecordingConsumer(log: lateLog, demandMode: .manual),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
        )
        producer.send(.emit([1, 2, 3]))
        try await earlyLog.wait("the early subscriber's events") { $0.events == [1, 2, 3] }
        let waiting = Task { try await producer.sendBehindEventsAndWait(.mark("behind")) }
        try await eventually("the info to wait") { try await producer.status().infosBehindEvents == 1 }
        #expect(try await producer.status().dispatcherHeld == 3)
        #expect(marks.value.isEmpty, "the late subscriber's backlog is still held")
        late.send(.ask(2, nil))
        try await lateLog.wait("2 of the backlog") { $0.events == [1, 2] }
        try await producer.settle()
        #expect(marks.value.isEmpty)
        late.send(.ask(1, nil))
        try await waiting.value
        #expect(marks.value == ["behind"])
        try await lateLog.wait("the rest of the backlog") { $0.events == [1, 2, 3] }
        try await late.halt()
        try await early.halt()
        try await producer.halt()
    }

    @Test("send-and-await behind a producer-consumer's queued input returns only once that input left")
    func syncInfoBehindQueuedInput() async throws {
        let (producer, relay, consumer, calls, log) = try await relayChain()
        producer.send(.emit([1, 2, 3]))
        try await producer.settle()
        try await eventually("the relay to queue the input") { try await relay.status().queuedInputEvents == 3 }
        let delivered = Observed(false)
        let waiting = Task {
            try await relay.sendBehindEventsAndWait(.mark("behind"))
            delivered.update { $0 = true }
        }
        try await eventually("the info to wait in the queue") { try await relay.status().infosBehindEvents == 1 }
        try await relay.settle()
        #expect(!delivered.value, "the input is still queued")
        #expect(calls.value.isEmpty)
        // Some demand: the relay handles the queued batch; what demand does not cover waits in
        // its buffer, and the info behind it.
        consumer.send(.ask(2, nil))
        try await log.wait("2 events") { $0.events == [1, 2] }
        try await relay.settle()
        #expect(!delivered.value, "one event is still buffered")
        #expect(calls.value == ["events [1, 2, 3]"])
        consumer.send(.ask(1, nil))
        try await waiting.value
        #expect(calls.value == ["events [1, 2, 3]", "info behind"])
        try await log.wait("the third event") { $0.events == [1, 2, 3] }
        try await consumer.halt()
        try await relay.halt()
        try await producer.halt()
    }

    @Test("send-and-await behind events throws stageEnded when the stage ends before they left")
    func syncInfoThrowsWhenTheStageEnds() async throws {
        let marks = Observed<[String]>([])
        let producer = try await StageHandle.start(MarkingProducer(marks: marks))
        producer.send(.emit([1, 2]))
        let waiting = Task { try await producer.sendBehindEventsAndWait(.mark("never")) }
        try await eventually("the info to wait") { try await producer.status().infosBehindEvents == 1 }
        try await producer.halt()
        let error = await #expect(throws: SluiceError.self) { try await waiting.value }
        #expect(error?.code == .stageEnded)
        #expect(marks.value.isEmpty)
    }

    // MARK: 4. Demand modes

    @Test("a producer-consumer switching itself to accumulate logs one error naming itself, and keeps forwarding")
    func producerConsumerRefusesAccumulateFromItsContext() async throws {
        struct SelfSwitching: ProducerConsumer {
            typealias Input = Int
            typealias Output = Int
            typealias Info = ProducerDemandMode
            mutating func handleInfo(_ mode: ProducerDemandMode, context: inout StageContext<Int>) {
                context.setDemandMode(mode)
            }
            mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
                context.emit(events)
            }
        }
        let handler = InMemoryLogHandler()
        let logger = Logger(label: "test", factory: { _ in handler })
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let relay = try await StageHandle.start(
            SelfSwitching(),
            options: .init(name: "switcher", logger: logger),
            subscribeTo: [.init(producer)]
        )
        let log = Observed(ConsumerLog())
        let consumer = try await StageHandle.start(RecordingConsumer(log: log), subscribeTo: [.init(relay)])
        relay.send(.accumulate)
        #expect(try await relay.demandMode() == .forward)
        let errors = handler.entries.filter { $0.level == .error }
        #expect(errors.count == 1)
        #expect(errors.first.map { "\($0.message)" } == "demand mode accumulate refused: only a producer can accumulate; switcher is a producerConsumer and keeps forwarding")
        producer.send(.push([1, 2]))
        try await log.wait("events through the relay") { $0.events == [1, 2] }
        #expect(relay.stopReason == nil)
        try await consumer.halt()
        try await relay.halt()
        try await producer.halt()
    }

    // MARK: 3. Producer-side callbacks of a producer-consumer

    @Test("a producer-consumer gets handleSubscribe and handleCancel for its own subscribers and may emit from both")
    func producerConsumerSubscriberCallbacks() async throws {
        let calls = Observed<[String]>([])
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let relay = try await StageHandle.start(WatchingRelay(calls: calls), subscribeTo: [.init(producer)])
        // The first subscriber asks for exactly one event, so the second's event cannot go to it.
        let firstLog = Observed(ConsumerLog())
        let first = try await StageHandle.start(
            RecordingConsumer(log: firstLog, demandMode: .manual),
            subscribeTo: [.init(relay, options: .init(maxDemand: 4))]
        )
        first.send(.ask(1, nil))
        try await firstLog.wait("the event emitted on subscribe") { $0.events == [4] }
        let secondLog = Observed(ConsumerLog())
        let second = try await StageHandle.start(
            RecordingConsumer(log: secondLog),
            subscribeTo: [.init(relay, options: .init(maxDemand: 5, cancel: .temporary))]
        )
        try await secondLog.wait("the event emitted on subscribe") { $0.events == [5] }
        first.send(.cancel(nil))
        #expect(try await first.ended() == .normal, "permanent: a subscriber's own cancel with normal stops it")
        try await secondLog.wait("the event emitted on cancel") { $0.events == [5, 200] }
        #expect(firstLog.value.events == [4])
        #expect(firstLog.value.cancels.map(\.reason) == ["cancelled(normal)"])
        #expect(calls.value == ["subscriber 4", "subscriber 5", "subscriber gone cancelled(normal)"])
        try await second.halt()
        try await calls.wait("the second subscriber's end") { $0.count == 4 }
        #expect(calls.value.last == "subscriber gone down(shutdown)")
        try await relay.halt()
        try await producer.halt()
    }
}
