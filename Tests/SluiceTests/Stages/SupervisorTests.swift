//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// One-for-one supervision: restarts, policies and restart intensity.
@Suite("Supervisor")
struct SupervisorTests {
    /// A consumer that crashes right after it started (its first mail): every start of it
    /// succeeds, and the stage crashes at once.
    struct CrashOnStart: Consumer {
        typealias Input = Int
        typealias Info = Bool
        mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Never>) {
            handle.send(true)
        }
        mutating func handleInfo(_ info: Bool, context: inout StageContext<Never>) throws {
            throw TestFailure(label: "crash on start")
        }
    }

    @Test("a crashed child is restarted by its start closure and subscribes again")
    func restartAndResubscribe() async throws {
        let starts = Observed<[String]>([])
        let logs = Observed<[Observed<ConsumerLog>]>([])
        let supervisor = try await Supervisor.start(
            children: [
                ChildSpec(id: "producer") { _ in
                    starts.append("producer")
                    return try await StageHandle.start(ScriptedProducer(.queue), options: .init(dispatcher: .broadcast))
                },
                ChildSpec(id: "consumer") { children in
                    let log = Observed(ConsumerLog())
                    let producer = try #require(children.handle("producer", as: ScriptedProducer.self))
                    let handle = try await StageHandle.start(
                        RecordingConsumer(log: log, crashOn: -1),
                        subscribeTo: [.init(producer)]
                    )
                    logs.append(log)
                    starts.append("consumer")
                    return handle
                },
            ],
            maxRestarts: 3,
            within: .seconds(60)
        )
        let producer = try #require(supervisor.handle("producer", as: ScriptedProducer.self))
        let firstConsumer = try #require(supervisor.handle("consumer", as: RecordingConsumer.self))
        #expect(starts.value == ["producer", "consumer"])

        producer.send(.push([1, -1]))
        // The consumer crashes on -1; the supervisor starts it again.
        try await starts.wait("the consumer's restart") { $0.count == 3 }
        #expect(starts.value == ["producer", "consumer", "consumer"])
        #expect((try await firstConsumer.ended().error as? TestFailure)?.label == "consumer crash on -1")
        #expect(supervisor.restartCount == 1)
        // The start closure ran; the supervisor stores the handle it returned just after, so
        // wait for that rather than read it at once.
        try await eventually("the supervisor holding the restarted consumer") {
            supervisor.handle("consumer", as: RecordingConsumer.self).map { $0.id != firstConsumer.id } ?? false
        }
        let secondConsumer = try #require(supervisor.handle("consumer", as: RecordingConsumer.self))
        #expect(secondConsumer.id != firstConsumer.id)

        // The restarted consumer subscribed again (the crashed one's subscription is gone) and
        // receives what the producer emits from now on.
        #expect(try await producer.stats().subscribers == 1)
        producer.send(.push([2, 3]))
        let second = try #require(logs.value.last)
        try await second.wait("events in the restarted consumer") { $0.events == [2, 3] }
        #expect(logs.value.first?.value.events == [1, -1])

        await supervisor.stop()
        #expect("\(try await producer.ended())" == "shutdown")
        #expect("\(try await secondConsumer.ended())" == "shutdown")
        #expect("\(await supervisor.waitForTermination())" == "shutdown")
    }

    @Test("transient children are not restarted after a normal end; temporary never; permanent always")
    func restartPolicies() async throws {
        let starts = Observed<[String: Int]>([:])
        func counting<S: Stage>(_ id: String, _ start: @escaping @Sendable () async throws -> StageHandle<S>) -> @Sendable (Supervisor.Children) async throws -> StageHandle<S> {
            { _ in
                let handle = try await start()
                starts.update { $0[id, default: 0] += 1 }
                return handle
            }
        }
        let supervisor = try await Supervisor.start(
            children: [
                ChildSpec(id: "transient", restart: .transient, start: counting("transient") { try await StageHandle.start(ScriptedProducer(.queue)) }),
                ChildSpec(id: "temporary", restart: .temporary, start: counting("temporary") { try await StageHandle.start(ScriptedProducer(.queue)) }),
                ChildSpec(id: "crashing transient", restart: .transient, start: counting("crashing transient") { try await StageHandle.start(ScriptedProducer(.queue)) }),
                ChildSpec(id: "permanent", restart: .permanent, start: counting("permanent") { try await StageHandle.start(ScriptedProducer(.queue)) }),
            ],
            maxRestarts: 10,
            within: .seconds(60)
        )
        let transient = try #require(supervisor.handle("transient", as: ScriptedProducer.self))
        let temporary = try #require(supervisor.handle("temporary", as: ScriptedProducer.self))
        let crashing = try #require(supervisor.handle("crashing transient", as: ScriptedProducer.self))
        let permanent = try #require(supervisor.handle("permanent", as: ScriptedProducer.self))

        // A transient child that ends normally, and a temporary one that crashes.
        transient.send(.stop(.normal))
        temporary.send(.crash)
        _ = try await transient.ended()
        _ = try await temporary.ended()
        // The supervisor forgets a child once it handled its end.
        try await eventually("the supervisor to handle both ends") {
            supervisor.handle("transient", as: ScriptedProducer.self) == nil
                && supervisor.handle("temporary", as: ScriptedProducer.self) == nil
        }
        // A crashing transient child and a permanent child ending normally are restarted. The
        // supervisor handles ends one at a time, so once these restarts happened, it has
        // finished deciding about the two ends above.
        crashing.send(.crash)
        try await starts.wait("the crashing transient child's restart") { $0["crashing transient"] == 2 }
        permanent.send(.stop(.normal))
        try await starts.wait("the permanent child's restart") { $0["permanent"] == 2 }
        #expect(starts.value == ["transient": 1, "temporary": 1, "crashing transient": 2, "permanent": 2])
        #expect(supervisor.restartCount == 2)
        #expect(supervisor.handle("transient", as: ScriptedProducer.self) == nil)
        #expect(supervisor.handle("temporary", as: ScriptedProducer.self) == nil)
        await supervisor.stop()
    }

    @Test("exceeding maxRestarts within the period stops every child and ends the supervisor")
    func restartIntensity() async throws {
        let crashes = Observed(0)
        let supervisor = try await Supervisor.start(
            children: [
                ChildSpec(id: "bystander") { _ in try await StageHandle.start(ScriptedProducer(.queue)) },
                ChildSpec(id: "crasher") { _ in
                    crashes.increment()
                    return try await StageHandle.start(CrashOnStart())
                },
            ],
            maxRestarts: 2,
            within: .seconds(60)
        )
        let bystander = try #require(supervisor.handle("bystander", as: ScriptedProducer.self))
        let reason = try await withTimeout("the supervisor to give up") { await supervisor.waitForTermination() }
        let error = try #require(reason.error as? SluiceError)
        #expect(error.code == .restartIntensityExceeded)
        #expect(error.message.contains("crasher"))
        // Started once, restarted twice; the third restart exceeded the intensity.
        #expect(crashes.value == 3)
        #expect("\(try await bystander.ended())" == "shutdown")
        #expect(supervisor.handle("bystander", as: ScriptedProducer.self) == nil)
        // Stopping a supervisor that already ended returns at once.
        try await withTimeout("stop after the end") { await supervisor.stop() }
    }

    @Test("a child that fails to start makes Supervisor.start throw and stops the children already started")
    func failedStart() async throws {
        let started = Observed<[StageHandle<ScriptedProducer>]>([])
        let error = await #expect(throws: SluiceError.self) {
            try await Supervisor.start(children: [
                ChildSpec(id: "fine") { _ in
                    let handle = try await StageHandle.start(ScriptedProducer(.queue))
                    started.append(handle)
                    return handle
                },
                ChildSpec(id: "broken") { _ in
                    try await StageHandle.start(ScriptedProducer(.queue), options: .init(bufferSize: .events(-5)))
                },
            ])
        }
        #expect(error?.code == .invalidOption)
        let fine = try #require(started.value.first)
        #expect("\(try await fine.ended())" == "shutdown")
    }
}
