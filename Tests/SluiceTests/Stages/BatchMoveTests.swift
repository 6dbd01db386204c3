//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// The address of an array's element storage: the same address on both sides of a hand-over
/// means the batch was moved, not copied (a copy is made while the original still exists, so it
/// always lands elsewhere).
private func storage(of events: borrowing [Int]) -> UInt {
    events.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
}

/// Emits one array per demand and records where each one's events live.
private struct AddressedProducer: Producer {
    let emitted: Observed<[UInt]>
    var next = 0

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
        let events = Array(self.next..<(self.next + demand))
        self.next += demand
        self.emitted.append(storage(of: events))
        context.emit(consume events)
    }
}

/// Doubles every event in place and passes the same array on.
private struct InPlaceDoubler: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int
    let received: Observed<[UInt]>

    mutating func handleEvents(_ events: consuming [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        var events = consume events
        self.received.append(storage(of: events))
        for index in events.indices { events[index] &*= 2 }
        context.emit(consume events)
    }
}

/// Records where each batch it receives lives, and the events.
private struct AddressedConsumer: Consumer {
    typealias Input = Int
    let received: Observed<[UInt]>
    let events: Observed<[Int]>

    mutating func handleEvents(_ events: consuming [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) {
        let batch = consume events
        self.received.append(storage(of: batch))
        self.events.update { $0.append(contentsOf: batch) }
    }
}

@Suite("Batches are moved between stages, not copied")
struct BatchMoveTests {
    @Test("a batch reaches the next stages as the same array, and a stage may change it in place without a copy")
    func batchesTravelAsTheSameArray() async throws {
        let emitted = Observed<[UInt]>([])
        let relayed = Observed<[UInt]>([])
        let consumed = Observed<[UInt]>([])
        let events = Observed<[Int]>([])
        // minDemand 0: a slice is the whole batch asked for, so no split is needed anywhere.
        let options = SubscriptionOptions<Int>(maxDemand: 100, minDemand: 0)
        let producer = try await StageHandle.start(AddressedProducer(emitted: emitted))
        let relay = try await StageHandle.start(InPlaceDoubler(received: relayed), subscribeTo: [.init(producer, options: options)])
        let consumer = try await StageHandle.start(
            AddressedConsumer(received: consumed, events: events),
            subscribeTo: [.init(relay, options: options)]
        )
        try await events.wait("500 events") { $0.count >= 500 }
        await consumer.stop()
        await relay.stop()
        await producer.stop()

        #expect(events.value.prefix(500) == ArraySlice((0..<500).map { $0 * 2 }))
        let batches = 5
        #expect(emitted.value.count >= batches && relayed.value.count >= batches && consumed.value.count >= batches)
        #expect(Array(relayed.value.prefix(batches)) == Array(emitted.value.prefix(batches)), "the producer-consumer got copies")
        #expect(Array(consumed.value.prefix(batches)) == Array(emitted.value.prefix(batches)), "the consumer got copies")
    }
}
