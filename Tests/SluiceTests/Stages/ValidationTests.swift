//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// Bad input is rejected with a typed error whose message names the option and the value.
@Suite("Bad input")
struct ValidationTests {
    struct BadDemand: Sendable, CustomStringConvertible {
        let maxDemand: Int
        let minDemand: Int?
        let named: String
        var description: String { "maxDemand \(self.maxDemand), minDemand \(self.minDemand.map(String.init) ?? "nil")" }
    }

    static let badDemands = [
        BadDemand(maxDemand: 0, minDemand: nil, named: "maxDemand=0"),
        BadDemand(maxDemand: -3, minDemand: nil, named: "maxDemand=-3"),
        BadDemand(maxDemand: 10, minDemand: 10, named: "minDemand=10"),
        BadDemand(maxDemand: 10, minDemand: 11, named: "minDemand=11"),
        BadDemand(maxDemand: 10, minDemand: -1, named: "minDemand=-1"),
    ]

    private func expectInvalid(
        _ error: SluiceError?,
        naming text: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(error?.code == .invalidOption, sourceLocation: sourceLocation)
        #expect(error?.message.contains(text) == true, "message: \(error?.message ?? "none")", sourceLocation: sourceLocation)
    }

    @Test("invalid demand bounds are rejected everywhere a subscription is made", arguments: badDemands)
    func demandBounds(_ bad: BadDemand) async throws {
        let options = SubscriptionOptions<Int>(maxDemand: bad.maxDemand, minDemand: bad.minDemand)
        #expect(throws: SluiceError.self) { try options.validate() }

        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(RecordingConsumer())
        let subscribe = await #expect(throws: SluiceError.self) { try await consumer.subscribe(to: producer, options: options) }
        self.expectInvalid(subscribe, naming: bad.named)
        // A rejected option does not touch either stage.
        try await consumer.settle()
        #expect(try await producer.stats().subscribers == 0)

        let start = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(RecordingConsumer(), subscribeTo: [.init(producer, options: options)])
        }
        self.expectInvalid(start, naming: bad.named)

        let events = await #expect(throws: SluiceError.self) {
            for try await _ in producer.events(maxDemand: bad.maxDemand, minDemand: bad.minDemand) {}
        }
        self.expectInvalid(events, naming: bad.named)
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("a negative buffer size is rejected when the stage starts")
    func negativeBuffer() async throws {
        let error = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(ScriptedProducer(.queue), options: .init(bufferSize: .events(-1)))
        }
        self.expectInvalid(error, naming: "bufferSize=-1")
    }

    @Test("a partition dispatcher needs at least one partition and unique names")
    func partitionDefinitions() async throws {
        let none = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .partition(count: 0) { _ in 0 }))
        }
        self.expectInvalid(none, naming: "partitions=0")
        let negative = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .partition(count: -3) { _ in 0 }))
        }
        self.expectInvalid(negative, naming: "partitions=-3")
        let noNames = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .partition(names: []) { _ in "a" }))
        }
        self.expectInvalid(noNames, naming: "partitions=0")
        let duplicate = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(
                ScriptedProducer(.queue),
                options: .init(dispatcher: .partition(names: ["a", "b", "a"]) { _ in "a" })
            )
        }
        self.expectInvalid(duplicate, naming: "partitions=\"a\"")
        let duplicateKeys = await #expect(throws: SluiceError.self) {
            try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .partition([1, 1]) { ($0, 1) }))
        }
        self.expectInvalid(duplicateKeys, naming: "partitions=1")
    }

    @Test("an unknown partition name is rejected with unknownPartition naming it")
    func unknownPartition() async throws {
        let producer = try await StageHandle.start(
            ScriptedProducer(.queue),
            options: .init(dispatcher: .partition(names: ["left", "right"]) { _ in "left" })
        )
        let consumer = try await StageHandle.start(RecordingConsumer())
        let error = await #expect(throws: SluiceError.self) {
            try await consumer.subscribe(to: producer, options: .init(cancel: .temporary, partition: "middle"))
        }
        #expect(error?.code == .unknownPartition)
        #expect(error?.message.contains("\"middle\"") == true)
        #expect(error?.message.contains("\"left\"") == true, "the message lists the partitions that exist")
        // Without a partition at all: an invalid option naming `partition`.
        let missing = await #expect(throws: SluiceError.self) {
            try await consumer.subscribe(to: producer, options: .init(cancel: .temporary))
        }
        self.expectInvalid(missing, naming: "partition=nil")
        try await consumer.halt()
        try await producer.halt()
    }

    @Test("subscribing to an ended stage names the stage")
    func endedStage() async throws {
        let producer = try await StageHandle.start(ScriptedProducer(.queue), options: .init(name: "orders"))
        try await producer.halt()
        let consumer = try await StageHandle.start(RecordingConsumer())
        let error = await #expect(throws: SluiceError.self) { try await consumer.subscribe(to: producer) }
        #expect(error?.code == .stageEnded)
        #expect(error?.message.contains("orders") == true)
        #expect(error?.message.contains("\(producer.id)") == true)
        let events = await #expect(throws: SluiceError.self) {
            for try await _ in producer.events() {}
        }
        #expect(events?.code == .stageEnded)
        #expect(events?.message.contains("orders") == true)
    }

    @Test("supervisor options are checked")
    func supervisorOptions() async throws {
        let negative = await #expect(throws: SluiceError.self) { try await Supervisor.start(children: [], maxRestarts: -1) }
        self.expectInvalid(negative, naming: "maxRestarts=-1")
        let period = await #expect(throws: SluiceError.self) { try await Supervisor.start(children: [], within: .zero) }
        self.expectInvalid(period, naming: "period=")
        let child = ChildSpec(id: "twin") { _ in try await StageHandle.start(ScriptedProducer(.queue)) }
        let twins = await #expect(throws: SluiceError.self) { try await Supervisor.start(children: [child, child]) }
        self.expectInvalid(twins, naming: "children=twin")
    }
}
