//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

struct TestFailure: Error, Equatable, CustomStringConvertible {
    var label = "boom"
    var description: String { "TestFailure(\(self.label))" }
}

/// A producer of `Int`s that records every `handleDemand(n)`.
///
/// In `.generate` mode it answers each demand with exactly `n` new consecutive numbers (ending
/// normally after `limit`). In `.queue` mode it only emits what the test pushed, as demand
/// allows, remembering demand it could not satisfy yet.
struct ScriptedProducer: Producer {
    typealias Output = Int

    enum Mode: Sendable {
        case generate(limit: Int?)
        case queue
    }

    enum Info: Sendable {
        /// Queue mode: events to emit as demand allows.
        case push([Int])
        /// Emit these events now, whatever the demand.
        case emitNow([Int])
        case demandMode(ProducerDemandMode)
        case stop(StopReason)
        case crash
    }

    let demands: Observed<[Int]>
    let mode: Mode
    /// Events to emit right after the last one of a `.generate(limit:)` run, with the stop.
    var extraAtEnd = 0
    var next = 0
    var owed = 0
    var queue: [Int] = []

    init(_ mode: Mode, demands: Observed<[Int]> = Observed([])) {
        self.mode = mode
        self.demands = demands
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
        self.demands.append(demand)
        switch self.mode {
        case .generate(let limit):
            let count = limit.map { max(0, min(demand, $0 - self.next)) } ?? demand
            context.emit(Array(self.next..<(self.next + count)))
            self.next += count
            if let limit, self.next >= limit {
                if self.extraAtEnd > 0 && count > 0 {
                    context.emit(Array(self.next..<(self.next + self.extraAtEnd)))
                    self.next += self.extraAtEnd
                }
                context.stop(.normal)
            }
        case .queue:
            self.owed += demand
            self.flush(&context)
        }
    }

    mutating func handleInfo(_ message: Info, context: inout StageContext<Int>) throws {
        switch message {
        case .push(let events):
            self.queue.append(contentsOf: events)
            self.flush(&context)
        case .emitNow(let events):
            context.emit(events)
        case .demandMode(let mode):
            context.setDemandMode(mode)
        case .stop(let reason):
            context.stop(reason)
        case .crash:
            throw TestFailure(label: "producer crash")
        }
    }

    private mutating func flush(_ context: inout StageContext<Int>) {
        let count = min(self.owed, self.queue.count)
        guard count > 0 else { return }
        context.emit(Array(self.queue.prefix(count)))
        self.queue.removeFirst(count)
        self.owed -= count
    }
}

/// What a ``RecordingConsumer`` saw.
struct ConsumerLog: Sendable {
    var batches: [(subscription: SubscriptionID, events: [Int])] = []
    var subscriptions: [SubscriptionInfo] = []
    var cancels: [(subscription: SubscriptionID, reason: String)] = []

    var events: [Int] { self.batches.flatMap(\.events) }
    var sliceSizes: [Int] { self.batches.map(\.events.count) }
}

/// A consumer of `Int`s that records every batch, subscription and cancellation.
struct RecordingConsumer: Consumer {
    typealias Input = Int

    enum Info: Sendable {
        /// Asks on a subscription (the latest one if `nil`).
        case ask(Int, SubscriptionID?)
        case cancel(SubscriptionID?)
        case stop(StopReason)
    }

    let log: Observed<ConsumerLog>
    /// Overrides the subscription's demand mode in `handleSubscribe`.
    var demandMode: DemandMode?
    /// Throw when this event arrives.
    var crashOn: Int?

    init(log: Observed<ConsumerLog> = Observed(ConsumerLog()), demandMode: DemandMode? = nil, crashOn: Int? = nil) {
        self.log = log
        self.demandMode = demandMode
        self.crashOn = crashOn
    }

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
        self.log.update { $0.subscriptions.append(subscription) }
        return self.demandMode ?? subscription.demand
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) throws {
        self.log.update { $0.batches.append((subscription, events)) }
        if let crashOn = self.crashOn, events.contains(crashOn) {
            throw TestFailure(label: "consumer crash on \(crashOn)")
        }
    }

    mutating func handleInfo(_ message: Info, context: inout StageContext<Never>) {
        let latest = self.log.value.subscriptions.last?.id
        switch message {
        case .ask(let count, let subscription):
            if let subscription = subscription ?? latest { context.ask(count, on: subscription) }
        case .cancel(let subscription):
            if let subscription = subscription ?? latest { context.cancel(subscription) }
        case .stop(let reason):
            context.stop(reason)
        }
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Never>) {
        self.log.update { $0.cancels.append((subscription, "\(reason)")) }
    }
}

/// A producer-consumer that passes `Int`s through unchanged (or transformed) and records what
/// it handled.
struct Relay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    let handled: Observed<[[Int]]>
    var transform: @Sendable (Int) -> Int = { $0 }

    init(handled: Observed<[[Int]]> = Observed([]), transform: @escaping @Sendable (Int) -> Int = { $0 }) {
        self.handled = handled
        self.transform = transform
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        self.handled.append(events)
        context.emit(events.map(self.transform))
    }
}

extension StageHandle {
    /// A barrier: returns once the stage handled every mail queued before this call.
    func settle(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        _ = try await self.stats(sourceLocation: sourceLocation)
    }

    /// `statistics()`, bounded by a timeout.
    func stats(sourceLocation: SourceLocation = #_sourceLocation) async throws -> StageStatistics {
        try await withTimeout("statistics of \(self.name)", sourceLocation: sourceLocation) {
            try await self.statistics()
        }
    }

    /// `stop(_:)`, bounded by a timeout.
    @discardableResult
    func halt(_ reason: StopReason = .shutdown, sourceLocation: SourceLocation = #_sourceLocation) async throws -> StopReason {
        try await withTimeout("\(self.name) to stop", sourceLocation: sourceLocation) { await self.stop(reason) }
    }

    /// `waitForTermination()`, bounded by a timeout.
    @discardableResult
    func ended(sourceLocation: SourceLocation = #_sourceLocation) async throws -> StopReason {
        try await withTimeout("\(self.name) to end", sourceLocation: sourceLocation) { await self.waitForTermination() }
    }
}

/// Whether a consumer whose subscription ended for `.normal`, `.shutdown`, `.killed` and
/// `.failure` (in that order) stops, by cancel mode: written out here rather than asked of
/// ``CancelMode/endsConsumer(for:)``, so that a wrong rule in the engine fails the tests.
let cancelModeStops: [CancelMode: [Bool]] = [
    .permanent: [true, true, true, true],
    .transient: [false, false, true, true],
    .temporary: [false, false, false, false],
]

/// Runs `mode` against every kind of reason: a consumer with one subscription (to a queue
/// producer) whose subscription `end` finishes — returning the ``CancelReason`` the consumer must
/// see — and checks that `handleCancel` saw exactly that, and that the consumer then ended with
/// the reason where ``cancelModeStops`` says so and kept running with no subscription otherwise.
func expectCancelMode(
    _ mode: CancelMode,
    sourceLocation: SourceLocation = #_sourceLocation,
    ending end: (StageHandle<ScriptedProducer>, StageHandle<RecordingConsumer>, SubscriptionID, StopReason) async throws -> CancelReason
) async throws {
    let reasons: [StopReason] = [.normal, .shutdown, .killed, .failure(TestFailure())]
    for (reason, stops) in zip(reasons, cancelModeStops[mode]!) {
        let log = Observed(ConsumerLog())
        let producer = try await StageHandle.start(ScriptedProducer(.queue))
        let consumer = try await StageHandle.start(
            RecordingConsumer(log: log),
            subscribeTo: [.init(producer, options: .init(cancel: mode))]
        )
        let subscription = try #require(try await log.wait("the consumer's handleSubscribe", sourceLocation: sourceLocation) { !$0.subscriptions.isEmpty }.subscriptions.first?.id, sourceLocation: sourceLocation)
        let expected = try await end(producer, consumer, subscription, reason)
        try await log.wait("the end of \(subscription)", sourceLocation: sourceLocation) { !$0.cancels.isEmpty }
        #expect(log.value.cancels.map(\.reason) == ["\(expected)"], sourceLocation: sourceLocation)
        #expect(log.value.cancels.map(\.subscription) == [subscription], sourceLocation: sourceLocation)
        #expect(mode.endsConsumer(for: reason) == stops, "\(mode) for \(reason)", sourceLocation: sourceLocation)
        if stops {
            let ended = try await consumer.ended(sourceLocation: sourceLocation)
            #expect(ended == reason, "\(mode) consumer stops with the reason \(reason)", sourceLocation: sourceLocation)
        } else {
            let statistics = try await consumer.stats(sourceLocation: sourceLocation)
            #expect(consumer.stopReason == nil, "\(mode) consumer keeps running after \(expected)", sourceLocation: sourceLocation)
            #expect(statistics.upstreamSubscriptions == 0, sourceLocation: sourceLocation)
            try await consumer.halt(sourceLocation: sourceLocation)
        }
        if producer.stopReason == nil {
            #expect(try await producer.stats().subscribers == 0, sourceLocation: sourceLocation)
            try await producer.halt(sourceLocation: sourceLocation)
        }
    }
}
