//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// Subscribing and cancelling at runtime, cancel modes, and how ends travel downstream.
@Suite("Subscriptions, cancellation and termination")
struct LifecycleTests {
    @Test("a temporary consumer can cancel a subscription at runtime and subscribe again")
    func cancelAndResubscribe() async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(RecordingConsumer(log: log))
        let first = try await consumer.subscribe(to: producer, options: .init(maxDemand: 5, cancel: .temporary))
        producer.send(.push([1, 2]))
        try await log.wait("2 events") { $0.events.count >= 2 }

        consumer.cancel(first)
        try await consumer.settle()
        var statistics = try await producer.stats()
        #expect(statistics.subscribers == 0)
        #expect(try await consumer.stats().upstreamSubscriptions == 0)
        #expect(consumer.stopReason == nil, "cancelling its own temporary subscription does not end the consumer")
        #expect(log.value.cancels.map(\.reason) == ["cancelled(normal)"])

        producer.send(.push([3, 4]))
        statistics = try await producer.stats()
        #expect(statistics.eventsOut == 2)
        let second = try await consumer.subscribe(to: producer, options: .init(maxDemand: 5))
        #expect(second != first)
        try await log.wait("4 events") { $0.events.count >= 4 }
        #expect(log.value.events == [1, 2, 3, 4])
        #expect(Set(log.value.batches.map(\.subscription)) == [first, second])
        try await consumer.halt()
        try await producer.halt()
    }

    @Test(
        "cancel modes: permanent ends on any end, transient unless normal or shutdown, temporary never",
        arguments: [CancelMode.permanent, .transient, .temporary]
    )
    func cancelModes(mode: CancelMode) async throws {
        try await expectCancelMode(mode) { producer, _, _, reason in
            try await producer.halt(reason)
            return .down(reason)
        }
        #expect(CancelMode.permanent.endsConsumer(for: .normal))
        #expect(!CancelMode.transient.endsConsumer(for: .shutdown))
        #expect(CancelMode.transient.endsConsumer(for: .failure(TestFailure())))
        #expect(!CancelMode.temporary.endsConsumer(for: .failure(TestFailure())))
    }

    @Test("a crash in a producer's handler reaches its consumers as a failure")
    func crashPropagates() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(RecordingConsumer(), subscribeTo: [.init(producer)])
        producer.send(.crash)
        let reason = try await withTimeout("the consumer to end") { await consumer.waitForTermination() }
        #expect((reason.error as? TestFailure)?.label == "producer crash")
        #expect(producer.stopReason?.error is TestFailure)
    }

    @Test("subscribing to a stage that already ended fails with stageEnded and ends a permanent consumer")
    func subscribeToEndedStage() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(name: "gone"))
        try await producer.halt()
        let consumer = try await StageHandle.start(RecordingConsumer())
        let error = await #expect(throws: SluiceError.self) {
            try await consumer.subscribe(to: producer)
        }
        #expect(error?.code == .stageEnded)
        #expect(error?.message.contains("gone") == true)
        let reason = try await withTimeout("the consumer to end") { await consumer.waitForTermination() }
        #expect((reason.error as? SluiceError)?.code == .stageEnded)

        // A temporary subscriber survives the refusal.
        let survivor = try await StageHandle.start(RecordingConsumer())
        await #expect(throws: SluiceError.self) {
            try await survivor.subscribe(to: producer, options: .init(cancel: .temporary))
        }
        _ = try await survivor.stats()
        #expect(survivor.stopReason == nil)
        try await survivor.halt()

        // Starting a stage subscribed to an ended producer throws too.
        let started = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(RecordingConsumer(), subscribeTo: [.init(producer)])
        }
        #expect(started?.code == .stageEnded)
    }

    @Test("subscribing a stage that already ended fails with stageEnded")
    func subscribeEndedConsumer() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(RecordingConsumer())
        try await consumer.halt()
        let error = await #expect(throws: SluiceError.self) { try await consumer.subscribe(to: producer) }
        #expect(error?.code == .stageEnded)
        await #expect(throws: SluiceError.self) { try await consumer.stats() }
        #expect(!consumer.send(.stop(.normal)))
        try await producer.halt()
    }

    @Test("A→B→C: stopping A ends B and C", arguments: [StopReason.normal, .shutdown])
    func terminationPropagates(reason: StopReason) async throws {
        let a = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)), options: .init(name: "A"))
        let b = try await StageHandle.start(Relay(), options: .init(name: "B"), subscribeTo: [.init(a, options: .init(maxDemand: 10))])
        let c = try await StageHandle.start(
            RecordingConsumer(),
            options: .init(name: "C"),
            subscribeTo: [.init(b, options: .init(maxDemand: 10))]
        )
        try await a.halt(reason)
        let reasons = try await withTimeout("B and C to end") {
            (try await b.ended(), try await c.ended())
        }
        #expect("\(reasons.0)" == "\(reason)")
        #expect("\(reasons.1)" == "\(reason)")
    }

    @Test("a producer-consumer whose producer ends normally first delivers what it still has")
    func producerConsumerDrainsOnNormalEnd() async throws {
        let handled = Observed<[[Int]]>([])
        let log = Observed(ConsumerLog())
        let a = try await StageHandle.start(ScriptedProducer(.generate(limit: 30)))
        let b = try await StageHandle.start(Relay(handled: handled, transform: { $0 * 2 }))
        // C asks by hand, so B has no downstream demand when A ends.
        let c = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(b, options: .init(maxDemand: 100, demand: .manual))]
        )
        try await b.subscribe(to: a, options: .init(maxDemand: 40, minDemand: 10))
        #expect("\(try await a.ended())" == "normal")
        try await b.settle()
        #expect(b.stopReason == nil, "B must not end while it still has events")
        #expect(handled.value == [], "B has no downstream demand yet")
        c.send(.ask(5, nil))
        try await log.wait("the first 5 events") { $0.events.count >= 5 }
        try await b.settle()
        #expect(b.stopReason == nil, "B must not end while it still has events")
        var asked = 5
        while asked < 30 {
            c.send(.ask(7, nil))
            asked += 7
        }
        #expect("\(try await c.ended())" == "normal")
        #expect(log.value.events == (0..<30).map { $0 * 2 })
        #expect(b.stopReason.map { "\($0)" } == "normal")
    }

    @Test("a producer-consumer handles input only while it has downstream demand; its upstream asks follow its own subscription")
    func producerConsumerFollowsDownstreamDemand() async throws {
        let demands = Observed<[Int]>([])
        let handled = Observed<[[Int]]>([])
        let log = Observed(ConsumerLog())
        let a = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        let b = try await StageHandle.start(Relay(handled: handled))
        let c = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(b, options: .init(maxDemand: 10, demand: .manual))]
        )
        try await b.subscribe(to: a, options: .init(maxDemand: 10, minDemand: 5))
        try await b.settle()
        try await a.settle()
        try await b.settle()
        // B asked its maxDemand and received it, but has no downstream demand: nothing handled.
        #expect(demands.value == [10])
        #expect(handled.value == [])
        c.send(.ask(3, nil))
        try await log.wait("3 events") { $0.events.count >= 3 }
        // B handled the whole batch (in slices of 5) and re-asked upstream after each slice.
        try await b.settle()
        try await a.settle()
        #expect(handled.value == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
        #expect(log.value.events == [0, 1, 2])
        #expect(demands.value == [10, 5, 5])
        // A ends while B holds 7 emitted events and 10 more queued as input, with no downstream
        // demand: B keeps them until C asks, hands them on, and only then handles the end
        // (nothing received is dropped).
        try await a.halt()
        try await b.settle()
        #expect(b.stopReason == nil, "B still holds 17 events")
        c.send(.ask(17, nil))
        #expect(try await b.ended() == .shutdown)
        #expect(try await c.ended() == .shutdown)
        #expect(log.value.events == Array(0..<20))
    }
}
