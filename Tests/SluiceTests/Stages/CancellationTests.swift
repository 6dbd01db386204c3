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

/// A producer that records, in order, every subscription callback and demand it sees, and can
/// emit or cancel a subscriber on request.
struct WatchingProducer: Producer {
    typealias Output = Int

    enum Info: Sendable {
        case emit([Int])
        case cancelSubscriber(SubscriptionID, StopReason)
    }

    let calls: Observed<[String]>
    /// Emitted from `handleCancel`, once.
    var emitOnCancel: [Int] = []
    /// Emitted from `handleSubscribe(consumer:)`, once.
    var emitOnSubscribe: [Int] = []
    var subscribers: [SubscriptionID: SubscriberInfo<Int>] = [:]

    init(calls: Observed<[String]>) {
        self.calls = calls
    }

    mutating func handleSubscribe(consumer subscriber: SubscriberInfo<Int>, context: inout StageContext<Int>) {
        self.subscribers[subscriber.id] = subscriber
        self.calls.append("subscribe \(subscriber.options.maxDemand)")
        if !self.emitOnSubscribe.isEmpty {
            context.emit(self.emitOnSubscribe)
            self.emitOnSubscribe = []
        }
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Int>) {
        let maxDemand = self.subscribers.removeValue(forKey: subscription)?.options.maxDemand ?? -1
        self.calls.append("cancel \(maxDemand) \(reason)")
        if !self.emitOnCancel.isEmpty {
            context.emit(self.emitOnCancel)
            self.emitOnCancel = []
        }
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
        self.calls.append("demand \(demand)")
    }

    mutating func handleInfo(_ info: Info, context: inout StageContext<Int>) {
        switch info {
        case .emit(let events): context.emit(events)
        case .cancelSubscriber(let subscription, let reason): context.cancel(subscription, reason: reason)
        }
    }
}

/// A producer-consumer that records events and cancellations in the order it handles them.
struct OrderedRelay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    enum Info: Sendable {
        case cancelUpstream(StopReason)
        case mark(String)
    }

    let calls: Observed<[String]>
    var upstream: SubscriptionID?

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Int>) -> DemandMode {
        self.upstream = subscription.id
        return subscription.demand
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        self.calls.append("events \(events)")
        context.emit(events)
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Int>) {
        self.calls.append(subscription == self.upstream ? "upstream \(reason)" : "subscriber \(reason)")
    }

    mutating func handleInfo(_ info: Info, context: inout StageContext<Int>) {
        switch info {
        case .cancelUpstream(let reason):
            if let upstream = self.upstream { context.cancel(upstream, reason: reason) }
        case .mark(let label):
            self.calls.append("info \(label)")
        }
    }
}

/// A logger whose entries the test can read.
private func recordingLogger() -> (Logger, InMemoryLogHandler) {
    let handler = InMemoryLogHandler()
    return (Logger(label: "test", factory: { _ in handler }), handler)
}

@Suite("GenStage cancellation, subscription callbacks and infos", .timeLimit(.minutes(1)))
struct CancellationTests {
    // MARK: 1. The subscriber's own cancel

    @Test(
        "a consumer that cancels its own subscription sees cancelled(reason) and its cancel mode applies",
        arguments: [CancelMode.permanent, .transient, .temporary]
    )
    func ownCancelAppliesCancelMode(mode: CancelMode) async throws {
        try await expectCancelMode(mode) { _, consumer, subscription, reason in
            consumer.cancel(subscription, reason: reason)
            return .cancelled(reason)
        }
    }

    @Test(
        "a permanent stop on its own cancel is logged once at info, naming the subscription and the reason, whatever the reason",
        arguments: [StopReason.normal, .shutdown, .failure(TestFailure())]
    )
    func permanentStopIsLoggedOnce(reason: StopReason) async throws {
        let (infoLogger, logs) = recordingLogger()
        var logger = infoLogger
        logger.logLevel = .debug
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            options: .init(logger: logger),
            subscribeTo: [.init(producer)]
        )
        let subscription = try #require(try await log.wait("the consumer's handleSubscribe") { !$0.subscriptions.isEmpty }.subscriptions.first?.id)
        consumer.cancel(subscription, reason: reason)
        #expect(try await consumer.ended() == reason)
        let stops = logs.entries.filter { "\($0.message)".hasPrefix("stopping after cancel of subscription") }
        #expect(stops.count == 1)
        #expect(stops.first.map { "\($0.message)".contains("\(subscription)") && "\($0.message)".contains("reason \(reason)") } == true)
        #expect(stops.first?.level == .info)
        try await producer.halt()
    }

    @Test(
        "a stop on the producer's end is logged once, at debug for the routine end of a chain (normal, shutdown) and at info otherwise",
        arguments: [StopReason.normal, .shutdown, .killed, .failure(TestFailure())]
    )
    func stopOnProducerEndIsLoggedOnce(reason: StopReason) async throws {
        let (infoLogger, logs) = recordingLogger()
        var logger = infoLogger
        logger.logLevel = .debug
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(name: "upstream"))
        let consumer = try await StageHandle.start(
            RecordingConsumer(),
            options: .init(logger: logger),
            subscribeTo: [.init(producer)]
        )
        try await producer.halt(reason)
        #expect(try await consumer.ended() == reason)
        let stops = logs.entries.filter { "\($0.message)".hasPrefix("stopping after cancel of subscription") }
        #expect(stops.count == 1)
        #expect(stops.first.map { "\($0.message)".contains("to upstream (\(producer.id))") && "\($0.message)".hasSuffix("reason \(reason)") } == true)
        #expect(stops.first?.level == (reason.isNormalOrShutdown ? .debug : .info))
    }

    @Test("a subscription that was never established (the producer had ended) gets no handleCancel")
    func neverEstablishedGetsNoCancel() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        try await producer.halt()
        let log = Observed(ConsumerLog())
        let temporary = try await StageHandle.start(RecordingConsumer(log: log))
        await #expect(throws: SluiceError.self) {
            try await temporary.subscribe(to: producer, options: .init(cancel: .temporary))
        }
        try await temporary.settle()
        #expect(log.value.cancels.isEmpty)
        #expect(log.value.subscriptions.isEmpty, "nor a handleSubscribe")
        let permanentLog = Observed(ConsumerLog())
        let permanent = try await StageHandle.start(RecordingConsumer(log: permanentLog))
        await #expect(throws: SluiceError.self) { try await permanent.subscribe(to: producer) }
        let reason = try await permanent.ended()
        #expect((reason.error as? SluiceError)?.code == .stageEnded, "a permanent consumer still ends")
        #expect(permanentLog.value.cancels.isEmpty)
        try await temporary.halt()
    }

    // MARK: 2. A producer-consumer's queued input outlives its subscription

    @Test(
        "a producer-consumer handles what it queued from a producer before handleCancel, whoever ended the subscription",
        arguments: ["own cancel", "producer cancel", "producer end"]
    )
    func queuedInputBeforeCancel(trigger: String) async throws {
        let calls = Observed<[String]>([])
        let producerCalls = Observed<[String]>([])
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(WatchingProducer(calls: producerCalls))
        let relay = try await StageHandle.start(
            OrderedRelay(calls: calls),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, cancel: .temporary))]
        )
        // Downstream asks nothing yet: the relay queues what it receives.
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(relay, options: .init(maxDemand: 10, demand: .manual))]
        )
        try await producerCalls.wait("the relay's demand") { $0.contains("demand 10") }
        producer.send(.emit([1, 2, 3]))
        producer.send(.emit([4, 5]))
        try await producer.settle()
        try await relay.settle()
        #expect(calls.value.isEmpty, "no downstream demand: nothing handled yet")
        switch trigger {
        case "own cancel":
            relay.send(.cancelUpstream(.normal))
        case "producer cancel":
            let subscription = try #require(try await producer.status().subscribers.first?.id)
            producer.send(.cancelSubscriber(subscription, .normal))
        default:
            try await producer.halt(.normal)
        }
        try await producer.settle(orEnded: true)
        try await relay.settle()
        #expect(calls.value.isEmpty, "the end waits behind the queued input")
        consumer.send(.ask(3, nil))
        try await log.wait("3 events") { $0.events.count == 3 }
        try await relay.settle()
        #expect(calls.value == ["events [1, 2, 3]"])
        consumer.send(.ask(2, nil))
        let expectedEnd = trigger == "producer end" ? "down(normal)" : "cancelled(normal)"
        try await calls.wait("the cancel") { $0.count == 3 }
        #expect(calls.value == ["events [1, 2, 3]", "events [4, 5]", "upstream \(expectedEnd)"])
        try await log.wait("5 events") { $0.events.count == 5 }
        #expect(log.value.events == [1, 2, 3, 4, 5])
        #expect(relay.stopReason == nil, "temporary: the relay keeps running")
        try await consumer.halt()
        try await relay.halt()
        try await producer.halt()
    }

    @Test("a consumer that cancels still handles the events already on their way, then sees the cancel")
    func inFlightEventsAfterOwnCancel() async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, cancel: .temporary))]
        )
        let subscription = try #require(try await log.wait("the consumer's handleSubscribe") { !$0.subscriptions.isEmpty }.subscriptions.first?.id)
        try await producer.settle()
        // Both sent before the producer sees the cancel: they are delivered, then the cancel.
        producer.send(.push([1, 2, 3]))
        consumer.cancel(subscription)
        try await log.wait("the cancel") { !$0.cancels.isEmpty }
        #expect(log.value.events == [1, 2, 3])
        let status = try await consumer.status()
        #expect(status.producers.isEmpty)
        try await consumer.halt()
        try await producer.halt()
    }

    // MARK: 3. Producer-side callbacks

    @Test("a producer sees handleSubscribe with options and id, and handleCancel telling cancel from end and crash")
    func producerSideCallbacks() async throws {
        let calls = Observed<[String]>([])
        let producer = try await StageHandle.start(WatchingProducer(calls: calls), options: .init(dispatcher: .broadcast))
        let cancelling = try await StageHandle.start(RecordingConsumer(), subscribeTo: [.init(producer, options: .init(maxDemand: 7))])
        let ending = try await StageHandle.start(RecordingConsumer(), subscribeTo: [.init(producer, options: .init(maxDemand: 8))])
        let crashing = try await StageHandle.start(
            RecordingConsumer(crashOn: 99),
            subscribeTo: [.init(producer, options: .init(maxDemand: 9))]
        )
        try await calls.wait("3 subscribers") { $0.filter { $0.hasPrefix("subscribe") }.count == 3 }
        #expect(calls.value.filter { $0.hasPrefix("subscribe") } == ["subscribe 7", "subscribe 8", "subscribe 9"])
        let status = try await producer.status()
        #expect(Set(status.subscribers.map(\.consumer)) == [cancelling.id, ending.id, crashing.id])

        cancelling.send(.cancel(nil))
        try await calls.wait("cancel of 7") { $0.contains { $0.hasPrefix("cancel 7") } }
        try await ending.halt(.shutdown)
        try await calls.wait("cancel of 8") { $0.contains { $0.hasPrefix("cancel 8") } }
        producer.send(.emit([99]))
        try await calls.wait("cancel of 9") { $0.contains { $0.hasPrefix("cancel 9") } }
        let cancels = calls.value.filter { $0.hasPrefix("cancel") }
        #expect(cancels == ["cancel 7 cancelled(normal)", "cancel 8 down(shutdown)", "cancel 9 down(failure(TestFailure(consumer crash on 99)))"])
        try await producer.halt()
    }

    @Test("events a producer emits from handleSubscribe and handleCancel are dispatched")
    func producerEmitsFromCallbacks() async throws {
        let calls = Observed<[String]>([])
        var watcher = WatchingProducer(calls: calls)
        watcher.emitOnSubscribe = [1, 2]
        watcher.emitOnCancel = [3]
        let producer = try await StageHandle.start(watcher)
        let firstLog = Observed(ConsumerLog())
        let first = try await StageHandle.start(
            RecordingConsumer(log: firstLog),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
        )
        try await firstLog.wait("the events emitted on subscribe") { $0.events == [1, 2] }
        let secondLog = Observed(ConsumerLog())
        let second = try await StageHandle.start(
            RecordingConsumer(log: secondLog),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, cancel: .temporary))]
        )
        try await producer.settle()
        first.send(.cancel(nil))
        #expect(try await first.ended() == .normal)
        try await secondLog.wait("the event emitted on cancel") { $0.events == [3] }
        #expect(firstLog.value.events == [1, 2], "the removed subscriber gets nothing emitted in handleCancel")
        try await second.halt()
        try await producer.halt()
    }

    @Test(
        "a producer cancels a subscriber: the subscriber sees cancelled(reason), handleCancel runs, and only then is the held demand released"
    )
    func producerCancelsSubscriberInOrder() async throws {
        let calls = Observed<[String]>([])
        let producer = try await StageHandle.start(WatchingProducer(calls: calls), options: .init(dispatcher: .broadcast))
        // The slow one subscribes first and asks nothing: the broadcast dispatcher then holds
        // the fast one's 10 back.
        let slowLog = Observed(ConsumerLog())
        let slow = try await StageHandle.start(
            RecordingConsumer(log: slowLog, demandMode: .manual),
            subscribeTo: [.init(producer, options: .init(maxDemand: 5))]
        )
        let fastLog = Observed(ConsumerLog())
        let fast = try await StageHandle.start(
            RecordingConsumer(log: fastLog),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
        )
        try await producer.settle()
        #expect(!calls.value.contains { $0.hasPrefix("demand") }, "the slowest subscriber asked nothing")
        let slowSubscription = try #require(try await producer.status().subscribers.first { $0.consumer == slow.id }?.id)
        producer.send(.cancelSubscriber(slowSubscription, .shutdown))
        try await calls.wait("the released demand") { $0.contains("demand 10") }
        #expect(calls.value == ["subscribe 5", "subscribe 10", "cancel 5 cancelled(shutdown)", "demand 10"])
        #expect(try await slow.ended() == .shutdown, "permanent subscriber stops with the producer's reason")
        #expect(slowLog.value.cancels.map(\.reason) == ["cancelled(shutdown)"])
        try await fast.halt()
        try await producer.halt()
    }

    // MARK: 4. Accumulate holds events

    @Test("accumulate holds emitted events as well as demand; forward dispatches them", arguments: ["demand", "broadcast"])
    func accumulateHoldsEvents(dispatcherName: String) async throws {
        let calls = Observed<[String]>([])
        let producer = try await StageHandle.start(
            WatchingProducer(calls: calls),
            options: .init(dispatcher: dispatcherName == "demand" ? .demand : .broadcast, demandMode: .accumulate)
        )
        #expect(try await producer.demandMode() == .accumulate)
        let logs = [Observed(ConsumerLog()), Observed(ConsumerLog())]
        var consumers: [StageHandle<RecordingConsumer>] = []
        for log in logs {
            consumers.append(
                try await StageHandle.start(RecordingConsumer(log: log), subscribeTo: [.init(producer, options: .init(maxDemand: 10))])
            )
        }
        producer.send(.emit([1, 2, 3]))
        let held = try await producer.stats()
        #expect(held.buffered == 3, "emitted while accumulating: held")
        #expect(held.eventsOut == 0)
        #expect(logs.allSatisfy { $0.value.events.isEmpty })
        #expect(!calls.value.contains { $0.hasPrefix("demand") })

        producer.setDemandMode(.forward)
        #expect(try await producer.demandMode() == .forward)
        if dispatcherName == "broadcast" {
            for log in logs { try await log.wait("the held events") { $0.events == [1, 2, 3] } }
            // The least demand (10) was held: 3 came from the buffer, 7 reach the handler.
            #expect(calls.value.filter { $0.hasPrefix("demand") } == ["demand 7"])
        } else {
            try await eventually("the held events") { logs.map(\.value.events.count).reduce(0, +) == 3 }
            #expect(logs.flatMap(\.value.events).sorted() == [1, 2, 3])
            #expect(calls.value.filter { $0.hasPrefix("demand") } == ["demand 7", "demand 10"])
        }
        for consumer in consumers { try await consumer.halt() }
        try await producer.halt()
    }

    @Test("a demand mode given to a consumer or producer-consumer is rejected at start, naming the option")
    func demandModeIsAProducerOption() async throws {
        let relay = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(Relay(), options: .init(demandMode: .accumulate))
        }
        #expect(relay?.code == .invalidOption)
        #expect(relay?.message.hasPrefix("invalid option demandMode=accumulate:") == true)
        let consumer = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(RecordingConsumer(), options: .init(demandMode: .forward))
        }
        #expect(consumer?.code == .invalidOption)
        #expect(consumer?.message.hasPrefix("invalid option demandMode=forward:") == true)
    }

    @Test("switching a producer-consumer to accumulate is refused with one error log; it keeps running and forwarding")
    func producerConsumerRefusesAccumulate() async throws {
        let (logger, logs) = recordingLogger()
        let relay = try await StageHandle.start(Relay(), options: .init(logger: logger))
        relay.setDemandMode(.accumulate)
        #expect(try await relay.demandMode() == .forward)
        #expect(relay.stopReason == nil)
        #expect(logs.entries.filter { $0.level == .error }.count == 1)
        let consumer = try await StageHandle.start(RecordingConsumer())
        let error = await #expect(throws: SluiceError.self) { try await consumer.demandMode() }
        #expect(error?.code == .notAProducer)
        try await consumer.halt()
        try await relay.halt()
    }

    // MARK: 5. Subscribing twice, subscribing a producer

    @Test("subscribing the same consumer twice to the same producer throws and both keep their subscription", arguments: ["demand", "broadcast"])
    func duplicateSubscription(dispatcherName: String) async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(dispatcher: dispatcherName == "demand" ? .demand : .broadcast)
        )
        let consumer = try await StageHandle.start(RecordingConsumer(log: log), subscribeTo: [.init(producer)])
        let error = await #expect(throws: SluiceError.self) { try await consumer.subscribe(to: producer) }
        #expect(error?.code == .duplicateSubscription)
        try await consumer.settle()
        #expect(consumer.stopReason == nil, "a permanent consumer does not stop")
        #expect(try await producer.stats().subscribers == 1)
        #expect(try await consumer.stats().upstreamSubscriptions == 1)
        producer.send(.push([1]))
        try await log.wait("an event through the first subscription") { $0.events == [1] }
        try await consumer.halt()
        try await producer.halt()
    }

    /// A stage with the producer role that still declares an input: only the runtime check
    /// stops it from subscribing (a ``Producer`` is stopped by the types).
    struct InputTakingProducer: Stage {
        typealias Input = Int
        typealias Output = Int
        static var role: StageRole { .producer }
    }

    /// A consumer of nothing, to try subscribing to a consumer.
    struct NothingConsumer: Consumer {
        typealias Input = Never
    }

    @Test("a producer cannot subscribe (notAConsumer) and a consumer cannot be subscribed to (notAProducer)")
    func rolesAreChecked() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let oddProducer = try await StageHandle.start(InputTakingProducer())
        let notConsumer = await #expect(throws: SluiceError.self) { try await oddProducer.subscribe(to: producer) }
        #expect(notConsumer?.code == .notAConsumer)
        let atStart = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(InputTakingProducer(), subscribeTo: [.init(producer)])
        }
        #expect(atStart?.code == .notAConsumer)
        let consumer = try await StageHandle.start(RecordingConsumer())
        let nothing = try await StageHandle.start(NothingConsumer())
        let notProducer = await #expect(throws: SluiceError.self) {
            try await nothing.subscribe(to: consumer, options: .init(cancel: .temporary))
        }
        #expect(notProducer?.code == .notAProducer)
        try await nothing.settle()
        #expect(nothing.stopReason == nil)
        for stage in [nothing.stop, consumer.stop, oddProducer.stop, producer.stop] as [(StopReason) async -> StopReason] {
            _ = await stage(.shutdown)
        }
    }

    // MARK: 6. Partition hash errors

    @Test("a partition hash naming a partition that does not exist stops the producer with unknownPartition")
    func unknownPartitionFromHash() async throws {
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(dispatcher: .partition(count: 2) { event in event < 0 ? nil : .index(event % 3) })
        )
        let logs = [Observed(ConsumerLog()), Observed(ConsumerLog())]
        var consumers: [StageHandle<RecordingConsumer>] = []
        for (index, log) in logs.enumerated() {
            consumers.append(
                try await StageHandle.start(
                    RecordingConsumer(log: log),
                    subscribeTo: [.init(producer, options: .init(cancel: .temporary, partition: .index(index)))]
                )
            )
        }
        producer.send(.push([-1, 0, -2, 1]))
        try await eventually("two events") { logs.map(\.value.events.count).reduce(0, +) == 2 }
        #expect(try await producer.stats().dispatcherDiscarded == 2, "only the explicit nil discards, and is counted")
        producer.send(.push([2]))
        let reason = try await producer.ended()
        let error = try #require(reason.error as? SluiceError)
        #expect(error.code == .unknownPartition)
        #expect(error.message.contains("returned 2"))
        #expect(error.message.contains("0, 1"))
        for consumer in consumers { try await consumer.halt() }
    }

    // MARK: 7. Buffers by role

    @Test("a producer-consumer's buffer is unbounded by default; a producer keeps 10 000")
    func defaultBuffersByRole() async throws {
        struct Burst: ProducerConsumer {
            typealias Input = Int
            typealias Output = Int
            typealias Info = Int
            mutating func handleInfo(_ count: Int, context: inout StageContext<Int>) {
                context.emit(Array(0..<count))
            }
        }
        let relay = try await StageHandle.start(Burst())
        relay.send(20_000)
        var statistics = try await relay.stats()
        #expect(statistics.buffered == 20_000)
        #expect(statistics.bufferDiscarded == 0)
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        producer.send(.emitNow(Array(0..<20_000)))
        statistics = try await producer.stats()
        #expect(statistics.buffered == 10_000)
        #expect(statistics.bufferDiscarded == 10_000)
        try await relay.halt()
        try await producer.halt()
    }

    @Test("producer options given to a consumer are rejected at start, naming the option", arguments: ["dispatcher", "bufferSize", "bufferKeep"])
    func producerOptionsRejectedForConsumers(option: String) async throws {
        var options = StageOptions<Never>()
        switch option {
        case "dispatcher": options.dispatcher = .broadcast
        case "bufferSize": options.bufferSize = .unbounded
        default: options.bufferKeep = .first
        }
        let error = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(RecordingConsumer(), options: options)
        }
        #expect(error?.code == .invalidOption)
        #expect(error?.message.contains("invalid option \(option)") == true)
    }

    // MARK: 8. Infos behind events

    @Test("an info sent behind events reaches handleInfo only after the producer buffer gave them out")
    func infoBehindProducerBuffer() async throws {
        let marks = Observed<[String]>([])
        let producer = try await StageHandle.start(MarkingProducer(marks: marks))
        producer.send(.emit([1, 2, 3, 4, 5]))
        producer.sendBehindEvents(.mark("after 5"))
        producer.send(.emit([6]))
        producer.sendBehindEvents(.mark("after 6"))
        let status = try await producer.status()
        #expect(status.buffered == 6)
        #expect(status.infosBehindEvents == 2)
        #expect(marks.value.isEmpty, "nothing has left the buffer yet")
        let log = Observed(ConsumerLog())
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log, demandMode: .manual),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10))]
        )
        consumer.send(.ask(4, nil))
        try await log.wait("4 events") { $0.events.count == 4 }
        try await producer.settle()
        #expect(marks.value.isEmpty, "one event of the first five is still buffered")
        consumer.send(.ask(1, nil))
        try await marks.wait("the first mark") { $0 == ["after 5"] }
        let waiting = Task { try await producer.sendBehindEventsAndWait(.mark("after all")) }
        try await producer.settle()
        #expect(marks.value == ["after 5"])
        consumer.send(.ask(1, nil))
        try await waiting.value
        #expect(marks.value == ["after 5", "after 6", "after all"])
        // With an empty buffer the info is delivered at once.
        try await producer.sendBehindEventsAndWait(.mark("empty"))
        #expect(marks.value.last == "empty")
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("an info sent behind events waits behind a producer-consumer's queued input")
    func infoBehindQueuedInput() async throws {
        let (producer, relay, consumer, calls, log) = try await relayChain()
        producer.send(.emit([1, 2]))
        try await producer.settle()
        relay.sendBehindEvents(.mark("behind"))
        relay.send(.mark("now"))
        try await calls.wait("the plain info") { $0.contains("info now") }
        #expect(calls.value == ["info now"])
        let status = try await relay.status()
        #expect(status.queuedInputEvents == 2)
        #expect(status.infosBehindEvents == 1)
        consumer.send(.ask(2, nil))
        try await calls.wait("the info behind events") { $0.contains("info behind") }
        #expect(calls.value == ["info now", "events [1, 2]", "info behind"])
        try await log.wait("the 2 events") { $0.events == [1, 2] }
        try await consumer.halt()
        try await relay.halt()
        try await producer.halt()
    }

    // MARK: 10. Start, kill, reasons

    @Test("start throws the error didStart threw")
    func startThrowsDidStartError() async throws {
        struct FailingStart: Producer {
            typealias Output = Int
            mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Int>) throws {
                throw TestFailure(label: "no start")
            }
        }
        let error = await #expect(throws: TestFailure.self) { try await StageHandle.start(FailingStart()) }
        #expect(error?.label == "no start")
    }

    @Test("killing a producer ends it with killed, which stops a transient consumer")
    func killIsNotShutdown() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let log = Observed(ConsumerLog())
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(cancel: .transient))]
        )
        #expect(await producer.kill() == .killed)
        #expect(try await consumer.ended() == .killed)
        #expect(log.value.cancels.map(\.reason) == ["down(killed)"])
    }

    @Test("stop reasons compare by case, and failures by their errors where those are Equatable")
    func stopReasonEquality() {
        struct Opaque: Error {}
        #expect(StopReason.normal == .normal)
        #expect(StopReason.shutdown != .killed)
        #expect(StopReason.failure(TestFailure(label: "a")) == .failure(TestFailure(label: "a")))
        #expect(StopReason.failure(TestFailure(label: "a")) != .failure(TestFailure(label: "b")))
        #expect(StopReason.failure(Opaque()) != .failure(Opaque()), "errors that are not Equatable are never equal")
        #expect(StopReason.failure(TestFailure()) != .normal)
        #expect(CancelReason.cancelled(.normal) != .down(.normal))
        #expect(CancelReason.down(.killed).reason == .killed)
    }

    // MARK: 11. Status

    @Test("status reports role, dispatcher, subscriptions both ways with pending demand, buffer and queued input")
    func statusReportsTopology() async throws {
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(name: "source", dispatcher: .partition(count: 2) { .index($0 % 2) })
        )
        let relay = try await StageHandle.start(
            Relay(),
            options: .init(name: "relay"),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, minDemand: 2, partition: 0))]
        )
        let consumer = try await StageHandle.start(
            RecordingConsumer(demandMode: .manual),
            subscribeTo: [.init(relay, options: .init(maxDemand: 6))]
        )
        consumer.send(.ask(4, nil))
        producer.send(.push([0, 2, 4, 6, 8, 10]))
        try await producer.settle()
        try await eventually("the relay to hold its input") { try await relay.status().buffered == 2 }
        let source = try await producer.status()
        #expect(source.role == .producer)
        #expect(source.dispatcher == "partition(0, 1)")
        #expect(source.demandMode == .forward)
        #expect(source.subscribers.map(\.consumer) == [relay.id])
        #expect(source.subscribers.map(\.pendingDemand) == [4], "asked 10, got 6")
        let middle = try await relay.status()
        #expect(middle.role == .producerConsumer)
        #expect(middle.dispatcher == "demand")
        #expect(middle.producers.map(\.producer) == [producer.id])
        #expect(middle.producers.map(\.producerName) == ["source"])
        #expect(middle.producers.map(\.maxDemand) == [10])
        #expect(middle.producers.map(\.minDemand) == [2])
        #expect(middle.subscribers.map(\.pendingDemand) == [0], "its subscriber got the 4 it asked")
        #expect(middle.buffered == 2)
        let last = try await consumer.status()
        #expect(last.role == .consumer)
        #expect(last.dispatcher == nil)
        #expect(last.demandMode == nil)
        #expect(last.producers.map(\.pendingDemand) == [0])
        try await consumer.halt()
        try await relay.halt()
        try await producer.halt()
    }
}

extension StageHandle {
    /// A barrier that also accepts a stage that has ended.
    func settle(orEnded: Bool) async throws {
        do {
            try await self.settle()
        } catch let error as SluiceError where orEnded && error.code == .stageEnded {}
    }
}
