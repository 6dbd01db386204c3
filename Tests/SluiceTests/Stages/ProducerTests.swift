//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// Producer demand modes and the producer buffer.
@Suite("Producer demand modes and buffer")
struct ProducerTests {
    /// A manual consumer subscribed to `producer`, so the test decides every ask.
    private func manualConsumer<P: Stage>(
        of producer: StageHandle<P>,
        log: Observed<ConsumerLog> = Observed(ConsumerLog()),
        maxDemand: Int = 100
    ) async throws -> StageHandle<RecordingConsumer> where P.Output == Int {
        try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: maxDemand, demand: .manual))]
        )
    }

    // MARK: Demand modes

    @Test("accumulate holds demand until forward, then replays each held demand separately, in order")
    func accumulateThenForward() async throws {
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(
            ScriptedProducer(.generate(limit: nil), demands: demands),
            options: .init(demandMode: .accumulate)
        )
        let consumer = try await self.manualConsumer(of: producer, log: log)
        consumer.send(.ask(10, nil))
        consumer.send(.ask(5, nil))
        try await consumer.settle()
        var statistics = try await producer.stats()
        #expect(demands.value == [], "handleDemand must not be called in accumulate mode")
        #expect(statistics.accumulatedDemand == 15)
        #expect(log.value.events == [])

        producer.setDemandMode(.forward)
        try await producer.settle()
        #expect(demands.value == [10, 5])
        try await log.wait("15 events") { $0.events.count >= 15 }
        #expect(log.value.events == Array(0..<15))
        statistics = try await producer.stats()
        #expect(statistics.accumulatedDemand == 0)

        // Forward from now on: each ask reaches handleDemand at once.
        consumer.send(.ask(2, nil))
        try await consumer.settle()
        try await producer.settle()
        #expect(demands.value == [10, 5, 2])
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("a stage can switch itself to accumulate and back with its context")
    func accumulateFromContext() async throws {
        let demands = Observed<[Int]>([])
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        let consumer = try await self.manualConsumer(of: producer)
        producer.send(.demandMode(.accumulate))
        consumer.send(.ask(3, nil))
        consumer.send(.ask(4, nil))
        consumer.send(.ask(1, nil))
        try await consumer.settle()
        try await producer.settle()
        #expect(demands.value == [])
        producer.send(.demandMode(.forward))
        try await producer.settle()
        #expect(demands.value == [3, 4, 1])
        try await consumer.halt()
        try await producer.halt()
    }

    // MARK: Buffer

    @Test("events emitted without demand are buffered and served first; handleDemand sees only the rest")
    func bufferServedFirst() async throws {
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        producer.send(.emitNow([-7, -6, -5, -4, -3, -2, -1]))
        var statistics = try await producer.stats()
        #expect(statistics.buffered == 7)

        let consumer = try await self.manualConsumer(of: producer, log: log)
        consumer.send(.ask(10, nil))
        try await log.wait("10 events") { $0.events.count >= 10 }
        #expect(log.value.events == [-7, -6, -5, -4, -3, -2, -1, 0, 1, 2])
        #expect(demands.value == [3])

        // Demand smaller than the buffer never reaches handleDemand.
        producer.send(.emitNow([100, 101, 102]))
        consumer.send(.ask(2, nil))
        try await log.wait("12 events") { $0.events.count >= 12 }
        try await producer.settle()
        #expect(demands.value == [3])
        statistics = try await producer.stats()
        #expect(statistics.buffered == 1)
        #expect(Array(log.value.events.suffix(2)) == [100, 101])
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("a full buffer keeps the last events by default, discards the oldest and counts them")
    func defaultBufferKeepsLast() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        producer.send(.emitNow(Array(0..<6_000)))
        producer.send(.emitNow(Array(6_000..<10_005)))
        let statistics = try await producer.stats()
        #expect(statistics.buffered == 10_000)
        #expect(statistics.bufferDiscarded == 5)

        let first = try await withTimeout("the first batch") {
            var iterator = producer.events(maxDemand: 10, minDemand: 0).makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(first == Array(5..<15))
        try await producer.halt()
    }

    @Test("bufferKeep .first keeps the oldest events and discards new ones")
    func bufferKeepsFirst() async throws {
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(bufferSize: .events(4), bufferKeep: .first)
        )
        producer.send(.emitNow([0, 1, 2]))
        producer.send(.emitNow([3, 4, 5]))
        let statistics = try await producer.stats()
        #expect(statistics.buffered == 4)
        #expect(statistics.bufferDiscarded == 2)
        let first = try await withTimeout("the first batch") {
            var iterator = producer.events(maxDemand: 10, minDemand: 0).makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(first == [0, 1, 2, 3])
        try await producer.halt()
    }

    @Test("an unbounded buffer discards nothing")
    func unboundedBuffer() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(bufferSize: .unbounded))
        producer.send(.emitNow(Array(0..<25_000)))
        let statistics = try await producer.stats()
        #expect(statistics.buffered == 25_000)
        #expect(statistics.bufferDiscarded == 0)
        try await producer.halt()
    }

    @Test("a buffer of size 0 discards everything emitted without demand")
    func zeroBuffer() async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(bufferSize: .events(0)))
        let consumer = try await self.manualConsumer(of: producer, log: log)
        producer.send(.emitNow([1, 2, 3]))
        var statistics = try await producer.stats()
        #expect(statistics.buffered == 0)
        #expect(statistics.bufferDiscarded == 3)
        // Events with demand still flow.
        consumer.send(.ask(2, nil))
        try await consumer.settle()
        producer.send(.emitNow([4, 5, 6]))
        try await log.wait("2 events") { $0.events.count >= 2 }
        statistics = try await producer.stats()
        #expect(log.value.events == [4, 5])
        #expect(statistics.bufferDiscarded == 4)
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("events buffered for a subscriber that left reach the next subscriber without asking the producer again")
    func bufferAfterCancelledDemand() async throws {
        let demands = Observed<[Int]>([])
        let firstLog = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue, demands: demands))
        let first = try await self.manualConsumer(of: producer, log: firstLog)
        first.send(.ask(10, nil))
        try await first.settle()
        try await producer.settle()
        #expect(demands.value == [10])  // the producer owes 10
        first.send(.cancel(nil))
        #expect(try await first.ended() == .normal, "a permanent consumer that cancels ends with the cancel's reason")
        var statistics = try await producer.stats()
        #expect(statistics.subscribers == 0)

        // The producer now pays what it owed; nobody is subscribed, so it is buffered.
        producer.send(.push(Array(0..<10)))
        statistics = try await producer.stats()
        #expect(statistics.buffered == 10)

        let secondLog = Observed(ConsumerLog())
        let second = try await self.manualConsumer(of: producer, log: secondLog)
        second.send(.ask(10, nil))
        try await secondLog.wait("the buffered events") { $0.events.count >= 10 }
        #expect(secondLog.value.events == Array(0..<10))
        try await producer.settle()
        #expect(demands.value == [10], "the producer already emitted these events")
        #expect(firstLog.value.events == [])
        try await second.halt()
        try await producer.halt()
    }

    @Test("broadcast: events buffered after every subscriber left reach a new subscriber that asks")
    func broadcastBufferAfterCancelledDemand() async throws {
        let demands = Observed<[Int]>([])
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue, demands: demands),
            options: .init(dispatcher: .broadcast)
        )
        let first = try await self.manualConsumer(of: producer)
        first.send(.ask(10, nil))
        try await first.settle()
        try await producer.settle()
        #expect(demands.value == [10])
        first.send(.cancel(nil))
        #expect(try await first.ended() == .normal, "a permanent consumer that cancels ends with the cancel's reason")
        producer.send(.push(Array(0..<10)))
        let statistics = try await producer.stats()
        #expect(statistics.buffered == 10)

        let secondLog = Observed(ConsumerLog())
        let second = try await self.manualConsumer(of: producer, log: secondLog)
        second.send(.ask(4, nil))
        try await secondLog.wait("4 buffered events") { $0.events.count >= 4 }
        #expect(secondLog.value.events == [0, 1, 2, 3])
        try await second.halt()
        try await producer.halt()
    }

    @Test("a producer that stopped normally delivers its buffer but is not asked for more")
    func drainingProducerNotAskedAgain() async throws {
        let demands = Observed<[Int]>([])
        let log = Observed(ConsumerLog())
        // Asked 10, emits 15 (its last events) and stops: 5 wait in the buffer.
        var stage = ScriptedProducer(.generate(limit: 10), demands: demands)
        stage.extraAtEnd = 5
        let producer = try await StageHandle.start(stage, options: .init(demandMode: .accumulate))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, minDemand: 0))]
        )
        producer.setDemandMode(.forward)
        // The consumer re-asks 10 after its first 10: 5 come from the buffer, and the stopping
        // producer's handleDemand must not be called for the other 5.
        let reason = try await withTimeout("the consumer to end") { await consumer.waitForTermination() }
        #expect("\(reason)" == "normal")
        #expect(log.value.events == Array(0..<15))
        #expect(demands.value == [10])
    }
}
