//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization
import SluiceTestKit
import Testing

@testable import Sluice

/// Sequences and async sequences as producers; producers as async sequences.
@Suite("Interop", .timeLimit(.minutes(1)))
struct InteropTests {
    /// An async sequence of `0..<count` that counts how often its iterator is pulled.
    struct CountingSequence: AsyncSequence, Sendable {
        let count: Int
        let pulls: Observed<Int>
        var failAt: Int?

        struct AsyncIterator: AsyncIteratorProtocol {
            let sequence: CountingSequence
            var next = 0

            mutating func next() async throws -> Int? {
                self.sequence.pulls.increment()
                if let failAt = self.sequence.failAt, self.next == failAt { throw TestFailure(label: "sequence failed") }
                guard self.next < self.sequence.count else { return nil }
                defer { self.next += 1 }
                return self.next
            }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(sequence: self) }
    }

    @Test("a Sequence becomes a producer that ends normally after its last element")
    func sequenceProducer() async throws {
        let producer = try await (0..<95).startProducer()
        let batches = try await withTimeout("all batches") {
            var batches: [[Int]] = []
            for try await batch in producer.events(maxDemand: 10) { batches.append(batch) }
            return batches
        }
        #expect(batches.flatMap { $0 } == Array(0..<95))
        #expect(batches.allSatisfy { $0.count <= 10 })
        #expect("\(try await producer.ended())" == "normal")
    }

    @Test("a sequence producer feeding a consumer stage ends it normally")
    func sequenceIntoStage() async throws {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(SequenceProducer(stride(from: 0, to: 300, by: 3)))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: 7, minDemand: 2))]
        )
        #expect("\(try await consumer.ended())" == "normal")
        #expect(log.value.events == Array(stride(from: 0, to: 300, by: 3)))
        #expect(log.value.sliceSizes.allSatisfy { $0 <= 5 })
    }

    @Test("an AsyncSequence becomes a producer that reads only what was asked and ends with the sequence")
    func asyncSequenceProducer() async throws {
        let pulls = Observed(0)
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(AsyncSequenceProducer(CountingSequence(count: 20, pulls: pulls)))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(maxDemand: 10, demand: .manual))]
        )
        consumer.send(.ask(5, nil))
        try await log.wait("5 elements") { $0.events.count >= 5 }
        #expect(log.value.events == [0, 1, 2, 3, 4])
        #expect(pulls.value == 5, "the sequence is read only as far as demand goes")
        consumer.send(.ask(100, nil))
        #expect("\(try await consumer.ended())" == "normal")
        #expect("\(try await producer.ended())" == "normal")
        #expect(log.value.events == Array(0..<20))
    }

    @Test("an AsyncStream producer ends when the stream finishes")
    func asyncStreamProducer() async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        let producer = try await StageHandle.start(AsyncSequenceProducer(stream))
        for value in 0..<50 { continuation.yield(value) }
        continuation.finish()
        let events = try await withTimeout("the stream's elements") {
            var events: [Int] = []
            for try await batch in producer.events(maxDemand: 8) { events += batch }
            return events
        }
        #expect(events == Array(0..<50))
        #expect("\(try await producer.ended())" == "normal")
    }

    @Test("an async sequence that throws ends the producer with .failure, and its events sequence throws")
    func throwingAsyncSequence() async throws {
        let pulls = Observed(0)
        let producer = try await StageHandle.start(
            AsyncSequenceProducer(CountingSequence(count: 100, pulls: pulls, failAt: 12))
        )
        let received = Observed<[Int]>([])
        let error = await #expect(throws: TestFailure.self) {
            try await withTimeout("the failure") {
                for try await batch in producer.events(maxDemand: 5) { received.update { $0 += batch } }
            }
        }
        #expect(error?.label == "sequence failed")
        #expect(received.value == Array(0..<12))
        let reason = try await producer.ended()
        #expect((reason.error as? TestFailure)?.label == "sequence failed")
    }

    @Test("events(maxDemand:) slices like a consumer stage: 10/5 asks 10, then 5, 5 and hands out slices of 5")
    func eventsSliceAndReask() async throws {
        let demands = Observed<[Int]>([])
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil), demands: demands))
        let slices = try await withTimeout("four slices") {
            var iterator = producer.events(maxDemand: 10, minDemand: 5).makeAsyncIterator()
            var sizes: [Int] = []
            for _ in 0..<4 { sizes.append(try await iterator.next()?.count ?? 0) }
            return sizes
        }
        #expect(slices == [5, 5, 5, 5])
        let asked = try await demands.wait("10, 5, 5 asked") { $0.count >= 3 }
        #expect(Array(asked.prefix(3)) == [10, 5, 5])
        try await producer.halt()
    }

    @Test("events(maxDemand:) never has more than maxDemand events outstanding")
    func eventsBoundedOutstanding() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
        let ledger = DemandLedger()
        let source = ledger.watch(producer)
        let consumed = try await withTimeout("30 batches") {
            var consumed = 0
            var iterator = source.events(maxDemand: 10, minDemand: 3).makeAsyncIterator()
            for _ in 0..<30 {
                consumed += try await iterator.next()?.count ?? 0
                // Every ask the sequence sent is recorded when sent: what was asked and not yet
                // consumed is bounded by maxDemand.
                let account = try #require(ledger.allAccounts.values.first)
                #expect(account.asked - consumed <= 10)
                #expect(account.received - consumed <= 10)
            }
            return consumed
        }
        #expect(consumed >= 30)
        #expect(ledger.violations == [])
        try await producer.halt()
    }

    /// Reads `batches` batches, then leaves the loop.
    private func readAndLeave<P: Stage>(_ producer: StageHandle<P>, batches: Int) async throws -> Int {
        var read = 0
        for try await _ in producer.events(maxDemand: 4) {
            read += 1
            if read == batches { break }
        }
        return read
    }

    @Test("leaving the loop cancels the subscription")
    func leavingCancels() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.generate(limit: nil)))
        let read = try await withTimeout("three batches") { try await self.readAndLeave(producer, batches: 3) }
        #expect(read == 3)
        #expect(try await producer.stats().subscribers == 0)
        #expect(producer.stopReason == nil)
        try await producer.halt()
    }

    @Test("cancelling the iterating task ends the loop and cancels the subscription")
    func taskCancellation() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let started = Observed(false)
        let loop = Task {
            var count = 0
            started.update { $0 = true }
            for try await batch in producer.events(maxDemand: 4) { count += batch.count }
            return count
        }
        try await started.wait("the loop to start") { $0 }
        try await eventually("the subscription") { try await producer.stats().subscribers == 1 }
        loop.cancel()
        let count = try await withTimeout("the loop to end") { try await loop.value }
        #expect(count == 0)
        #expect(try await producer.stats().subscribers == 0)
        try await producer.halt()
    }

    @Test("the events of a producer that crashes throw its error; one that ends normally finishes")
    func producerEnd() async throws {
        let crashing = try await StageHandle.start(ScriptedProducer(.queue))
        let loop = Task {
            var received: [Int] = []
            for try await batch in crashing.events() { received += batch }
            return received
        }
        try await eventually("the subscription") { try await crashing.stats().subscribers == 1 }
        crashing.send(.push([1, 2]))
        crashing.send(.crash)
        let error = await #expect(throws: TestFailure.self) {
            try await withTimeout("the crash") { try await loop.value }
        }
        #expect(error?.label == "producer crash")

        let finite = try await StageHandle.start(ScriptedProducer(.generate(limit: 3)))
        let all = try await withTimeout("the events") {
            var all: [Int] = []
            for try await batch in finite.events() { all += batch }
            return all
        }
        #expect(all == [0, 1, 2])
        // An events sequence over a producer that is already gone throws at once.
        await #expect(throws: SluiceError.self) {
            try await withTimeout("the refusal") { for try await _ in finite.events() {} }
        }
    }

    @Test("an events sequence keeps answering after it threw: nil, not a hang")
    func nextAfterError() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        try await producer.halt()
        let again = try await withTimeout("the second next()") {
            var iterator = producer.events().makeAsyncIterator()
            await #expect(throws: SluiceError.self) { _ = try await iterator.next() }
            return try await iterator.next()
        }
        #expect(again == nil)
    }
}
