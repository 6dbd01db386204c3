//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
public import Sluice
import Synchronization

/// What a source's mode promises about a message it took from the broker.
public enum DeliveryGuarantee: Hashable, Sendable {
    /// A read is destructive (a list pop): a message taken and never handled is gone.
    case atMostOnce
    /// The broker keeps a message until it is acknowledged and delivers it again otherwise.
    case atLeastOnce
}

/// What a conformance check asks the broker directly, past the source under test.
///
/// Every closure looks only at the key, queue or topic the source under test reads.
public struct BrokerProbe: Sendable {
    /// Puts messages with these payloads on the broker, in order.
    public var push: @Sendable (_ payloads: [[UInt8]]) async throws -> Void
    /// How many messages the broker holds that no consumer has taken yet.
    public var held: @Sendable () async throws -> Int
    /// How many messages were taken and are not settled yet (0 for destructive reads).
    public var pending: @Sendable () async throws -> Int
    /// How many messages the broker counts as acknowledged, if it can tell.
    public var acknowledged: (@Sendable () async throws -> Int)?

    /// Creates a probe.
    ///
    /// - Parameters:
    ///   - push: Puts messages on the broker.
    ///   - held: Counts messages no consumer has taken.
    ///   - pending: Counts messages taken and not settled.
    ///   - acknowledged: Counts messages acknowledged (`nil` when the broker keeps no count).
    public init(
        push: @escaping @Sendable (_ payloads: [[UInt8]]) async throws -> Void,
        held: @escaping @Sendable () async throws -> Int,
        pending: @escaping @Sendable () async throws -> Int,
        acknowledged: (@Sendable () async throws -> Int)? = nil
    ) {
        self.push = push
        self.held = held
        self.pending = pending
        self.acknowledged = acknowledged
    }
}

/// A source broke a rule of the conformance kit.
public struct ConformanceFailure: Error, CustomStringConvertible {
    // Same shape as UnknownBatcher (PipelineRuntime.swift) only: a two-field error with a
    // description; the two report unrelated failures.
    /// The check that failed.
    public let check: String
    /// What went wrong, one line each.
    public let problems: [String]

    /// Creates the error.
    public init(check: String, problems: [String]) {
        self.check = check
        self.problems = problems
    }

    /// The check and its problems, one a line.
    public var description: String {
        "\(self.check) failed:\n" + self.problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

/// The rules every pipeline source must keep, checked against its real broker.
///
/// An adapter's integration tests make one harness per test, with a factory for a source
/// reading a key (queue, topic) no other test uses and a ``BrokerProbe`` that looks at the
/// same key, and call one check:
///
/// ```swift
/// @Test func backPressureIsExact() async throws {
///     let configuration = try RedisTestEnvironment.configuration("conformance", mode: .list)
///     let kit = SourceConformance(guarantee: .atMostOnce, probe: probe(configuration)) {
///         RedisSource(configuration: configuration)
///     }
///     try await kit.checkBackPressure()
/// }
/// ```
///
/// Each check pushes its own messages, runs the source (alone or in a ``Pipeline``), and
/// throws a ``ConformanceFailure`` listing every broken rule, or ``TimeLimitExceeded`` when
/// the source does not get there within ``timeLimit``.
public struct SourceConformance<Source: PipelineSource>: Sendable {
    /// What the source's mode promises.
    public let guarantee: DeliveryGuarantee
    /// The broker, seen from outside the source.
    public let probe: BrokerProbe
    /// The longest a check may take.
    public let timeLimit: Duration
    /// The logger given to sources and pipelines.
    public let logger: Logger
    @usableFromInline
    let makeSource: @Sendable () throws -> Source

    /// Creates a harness.
    ///
    /// - Parameters:
    ///   - guarantee: What the source's mode promises.
    ///   - timeLimit: The longest a check may take (at least a second).
    /// - Throws: ``Sluice/SluiceError`` `invalidOption` for a time limit under a second.
    ///   - logger: The logger for the sources and pipelines the checks run.
    ///   - probe: The broker, seen from outside the source.
    ///   - makeSource: Makes a source on the probe's key; called once per run (the
    ///     cancellation check runs two).
    public init(
        guarantee: DeliveryGuarantee,
        timeLimit: Duration = .seconds(45),
        logger: Logger,
        probe: BrokerProbe,
        makeSource: @escaping @Sendable () throws -> Source
    ) throws(SluiceError) {
        guard timeLimit >= .seconds(1) else {
            throw SluiceError(.invalidOption, "invalid option timeLimit=\(timeLimit): must be at least 1 second")
        }
        self.guarantee = guarantee
        self.timeLimit = timeLimit
        self.logger = logger
        self.probe = probe
        self.makeSource = makeSource
    }

    // MARK: Checks

    /// Never more delivered than asked, per subscription: the source stage runs alone, with two
    /// consumers in manual demand asking odd amounts; a ``DemandLedger`` watches every ask and
    /// delivery. Then a drain hands over what the source took, and the broker must hold exactly
    /// what was not delivered.
    public func checkDemandPerSubscription() async throws {
        try await self.bounded("demand per subscription", pushing: 200) { problems, pushed in
            let total = pushed.total
            let scripts = [[7, 1, 13, 4], [5, 20, 2]]
            let wanted = scripts.map { $0.reduce(0, +) }
            let source = try self.makeSource()
            let parts = try await source.makeParts(
                context: SourceContext(pipelineName: "conformance", window: wanted.reduce(0, +), logger: self.logger)
            )
            let stage = try await StageHandle.start(
                parts.stage,
                options: StageOptions(name: "conformance.source", bufferSize: .unbounded, logger: self.logger)
            )
            let ledger = DemandLedger()
            var consumers: [(handle: StageHandle<ScriptedConsumer<Source.Metadata>>, log: ReceivedLog<Source.Metadata>)] = []
            for script in scripts {
                let log = ReceivedLog<Source.Metadata>()
                let handle = try await StageHandle.start(
                    ScriptedConsumer(script: script, log: log),
                    options: StageOptions(name: "conformance.consumer", logger: self.logger),
                    subscribeTo: [SubscribeTo(ledger.watch(stage), options: SubscriptionOptions(maxDemand: 1000))]
                )
                consumers.append((handle, log))
            }
            let started = consumers
            try await waitFor("every consumer received what its script asked") {
                zip(started, wanted).allSatisfy { $0.log.count >= $1 }
            }
            // Room for a late, excess delivery to show.
            try await Task.sleep(for: .milliseconds(300))
            problems.append(contentsOf: ledger.violations)
            for ((consumer, script), expected) in zip(zip(consumers, scripts), wanted) where consumer.log.count != expected {
                problems.append("a consumer asking \(script) received \(consumer.log.count) messages, not \(expected)")
            }
            // The window the source was given is what was asked: it may take no more.
            let heldBeforeDrain = try await self.probe.held()
            if heldBeforeDrain != total - wanted.reduce(0, +) {
                problems.append(
                    "with \(wanted.reduce(0, +)) messages asked and delivered (the source's window) the broker holds "
                        + "\(heldBeforeDrain) of \(total), not \(total - wanted.reduce(0, +))"
                )
            }
            // Drain, and take what the source had taken but not emitted.
            stage.send(.drain)
            for consumer in consumers { consumer.handle.send(.askFor(total)) }
            _ = await stage.waitForTermination()
            for consumer in consumers { _ = await consumer.handle.waitForTermination() }
            let received = consumers.flatMap { $0.log.messages }
            parts.acknowledger.settle(Settlement(acknowledged: received))
            await source.shutdown(parts.acknowledger)
            try await self.expectConserved(total: total, settledCount: received.count, into: &problems)
            problems.append(contentsOf: duplicates(received.map(text)))
        }
    }

    /// Back-pressure is exact, with no slack: with every handler blocked, the broker holds
    /// exactly what the topology may not take (all but ``Pipeline/window`` messages), and for a
    /// broker that tracks deliveries exactly the window is pending.
    public func checkBackPressure() async throws {
        try await self.bounded("back-pressure", pushing: 300) { problems, pushed in
            let (total, handled) = (pushed.total, pushed.handled)
            let gate = ConformanceGate()
            let entered = Tally()
            let run = self.pipeline("backpressure", source: try self.makeSource()) {
                Processors(concurrency: 2, maxDemand: 10) { message in
                    entered.add(text(message))
                    try await gate.wait()
                    handled.add(text(message))
                }
            }
            let window = run.pipeline.window
            let outcome = try await withRunningPipeline(run.pipeline, timeLimit: self.timeLimit) {
                try await waitFor("both processors hold a message") { entered.count >= 2 }
                try await waitFor("the broker gave the pipeline its window") { try await self.probe.held() <= total - window }
                // Long enough for a source that reads past its demand to do so.
                try await Task.sleep(for: .milliseconds(500))
                let held = try await self.probe.held()
                let pending = try await self.probe.pending()
                gate.open()
                return (held, pending)
            }
            if outcome.0 != total - window {
                problems.append(
                    "with every handler blocked the broker holds \(outcome.0) of \(total) messages, not exactly \(total - window) "
                        + "(the pipeline's window is \(window))"
                )
            }
            if self.guarantee == .atLeastOnce, outcome.1 != window {
                problems.append("with every handler blocked \(outcome.1) messages are pending at the broker, not the window of \(window)")
            }
            try await self.expectConserved(total: total, settledCount: run.log.acknowledged.count, into: &problems)
            problems.append(contentsOf: run.log.problems(handled: handled))
        }
    }

    /// Every emitted message is settled exactly once, through processors and a batcher, with
    /// some messages failed for good: nothing is left pending and nothing held.
    public func checkSettlesEveryMessageOnce() async throws {
        try await self.bounded("settles every message once", pushing: 500) { problems, pushed in
            let (total, handled) = (pushed.total, pushed.handled)
            let run = self.pipeline("settle-once", source: try self.makeSource()) {
                Processors(concurrency: 2, maxDemand: 25) { message in
                    handled.add(text(message))
                }
                Batcher(size: 20, timeout: .milliseconds(20)) { batch in
                    for index in batch.indices where index % 7 == 3 {
                        batch[index].fail(ConformanceFailure(check: "settle-once", problems: ["dropped on purpose"]), disposition: .drop)
                    }
                }
            }
            try await withRunningPipeline(run.pipeline, timeLimit: self.timeLimit) {
                try await waitFor("every message settled") { run.log.settledCount >= total }
            }
            let settled = run.log.counts
            if settled.count != total {
                problems.append("\(settled.count) distinct messages were settled, not \(total)")
            }
            if run.log.failedCount == 0 { problems.append("no message was failed, so failed settlement went unchecked") }
            try await self.expectEmpty("after every message was settled", into: &problems)
            problems.append(contentsOf: run.log.problems(handled: handled))
        }
    }

    /// Nothing is acknowledged that was not processed: a pipeline is cancelled while handlers
    /// hang; every acknowledgement must be of a message whose handler returned, and (for an
    /// at-least-once mode) the broker must still have every other message.
    public func checkAcknowledgesOnlyProcessed() async throws {
        // Same opening as checkSettlesEveryMessageOnce (bounded run, pipeline, processors): the shared
        // parts are already helpers; what follows is each check's own scenario.
        try await self.bounded("acknowledges only processed messages", pushing: 200) { problems, pushed in
            let (total, handled) = (pushed.total, pushed.handled)
            let run = self.pipeline("ack-processed", source: try self.makeSource()) {
                Processors(concurrency: 2, maxDemand: 10) { message in
                    // The first 30 are processed; then every handler hangs until cancelled.
                    if handled.count >= 30 { try await ConformanceGate().wait() }
                    handled.add(text(message))
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await run.pipeline.run() }
                try await waitFor("30 processed") { handled.count >= 30 }
                try await Task.sleep(for: .milliseconds(100))
                group.cancelAll()
                while let _ = try? await group.next() {}
            }
            let processed = Set(handled.keys)
            let acknowledged = run.log.acknowledged
            let unprocessed = acknowledged.filter { !processed.contains($0) }
            if !unprocessed.isEmpty {
                problems.append("\(unprocessed.count) messages were acknowledged but never processed, e.g. \(unprocessed.first!)")
            }
            if self.guarantee == .atLeastOnce {
                // A cancelled source may leave its deliveries pending (a stream's pending list):
                // the broker delivers them again.
                try await self.expectConserved(total: total, settledCount: acknowledged.count, nothingPending: false, into: &problems)
            }
            if let count = self.probe.acknowledged {
                let brokerAcknowledged = try await count()
                if brokerAcknowledged > processed.count {
                    problems.append("the broker counts \(brokerAcknowledged) acknowledged but only \(processed.count) were processed")
                }
            }
        }
    }

    /// A drain gives back what the source took and did not emit: after a drain in the middle
    /// of a backlog, every message was either handled once or is still with the broker.
    public func checkDrainGivesBackUnemitted() async throws {
        try await self.bounded("drain gives back unemitted messages", pushing: 1000) { problems, pushed in
            let (total, handled) = (pushed.total, pushed.handled)
            let run = self.pipeline("drain", source: try self.makeSource()) {
                Processors(concurrency: 1, maxDemand: 50) { message in
                    try await Task.sleep(for: .milliseconds(1))
                    handled.add(text(message))
                }
            }
            try await withRunningPipeline(run.pipeline, timeLimit: self.timeLimit) {
                try await waitFor("60 handled") { handled.count >= 60 }
            }
            if handled.count >= total { problems.append("the drain came too late: everything was handled") }
            try await self.expectConserved(total: total, settledCount: run.log.acknowledged.count, into: &problems)
            problems.append(contentsOf: run.log.problems(handled: handled))
        }
    }

    /// A source cancelled mid-batch loses nothing (at-least-once modes only): a pipeline is
    /// cancelled while handlers run; a second run on a new source finishes the rest, and
    /// every message was handled.
    public func checkCancelMidBatchLosesNothing() async throws {
        guard self.guarantee == .atLeastOnce else {
            throw ConformanceFailure(check: "cancel mid-batch", problems: ["only an at-least-once mode promises to lose nothing"])
        }
        try await self.bounded("cancel mid-batch loses nothing", pushing: 1500) { problems, pushed in
            let (total, handled) = (pushed.total, pushed.handled)
            let all = conformancePayloads(total)
            let first = self.pipeline("cancel-1", source: try self.makeSource()) {
                Processors(concurrency: 2, maxDemand: 100) { message in
                    try await Task.sleep(for: .milliseconds(1))
                    handled.add(text(message))
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await first.pipeline.run() }
                try await waitFor("some handled") { handled.count >= 150 }
                group.cancelAll()
                while let _ = try? await group.next() {}
            }
            if handled.count >= total { problems.append("the cancellation came too late: everything was handled") }
            let second = self.pipeline("cancel-2", source: try self.makeSource()) {
                Processors(concurrency: 2, maxDemand: 100) { message in handled.add(text(message)) }
            }
            try await withRunningPipeline(second.pipeline, timeLimit: self.timeLimit) {
                try await waitFor("everything handled") { handled.distinctCount >= total }
            }
            let missing = Set(all.map { String(decoding: $0, as: UTF8.self) }).subtracting(handled.keys)
            if !missing.isEmpty { problems.append("\(missing.count) messages were lost, e.g. \(missing.first!)") }
            try await self.expectEmpty("after both runs", into: &problems)
        }
    }

    // MARK: Helpers

    /// Runs one check within the time limit, after pushing `total` messages, and throws what
    /// it found; `body` records what handlers saw in the tally it is given.
    func bounded(
        _ check: String,
        pushing total: Int,
        _ body: @escaping @Sendable (inout [String], Pushed) async throws -> Void
    ) async throws {
        let problems = try await withTimeLimit(self.timeLimit) {
            var problems: [String] = []
            try await self.probe.push(conformancePayloads(total))
            try await body(&problems, Pushed(total: total, handled: Tally()))
            return problems
        }
        if !problems.isEmpty { throw ConformanceFailure(check: check, problems: problems) }
    }

    /// A pipeline on `source` whose settlements are recorded.
    func pipeline(
        _ name: String,
        source: Source,
        @PipelineBuilder<Source.Metadata> _ build: () -> PipelineComponents<Source.Metadata>
    ) -> (pipeline: Pipeline<RecordingSource<Source>>, log: SettlementLog) {
        let log = SettlementLog()
        let pipeline = Pipeline(
            "conformance-\(name)",
            source: RecordingSource(base: source, log: log),
            configuration: PipelineConfiguration(failurePolicy: FailurePolicy(retry: nil), shutdownTimeout: .seconds(10), logger: self.logger),
            build
        )
        return (pipeline, log)
    }

    /// The broker holds nothing and has nothing pending.
    func expectEmpty(_ when: String, into problems: inout [String]) async throws {
        let held = try await self.probe.held()
        let pending = try await self.probe.pending()
        if held != 0 || pending != 0 {
            problems.append("\(when) the broker still holds \(held) and has \(pending) pending")
        }
    }

    /// After a run: every message was settled or is still with the broker, none is pending.
    ///
    /// The broker's counts are read until they add up (for up to 5 s): a broker takes back what
    /// a closed consumer held a moment after the consumer closed (an AMQP queue requeues a
    /// closed channel's unacknowledged messages when it sees the close), and a message moving
    /// between the two counts while they are read is in neither.
    func expectConserved(total: Int, settledCount: Int, nothingPending: Bool = true, into problems: inout [String]) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        var held = try await self.probe.held()
        var pending = try await self.probe.pending()
        while settledCount + held + pending != total || (nothingPending && pending != 0), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            held = try await self.probe.held()
            pending = try await self.probe.pending()
        }
        if nothingPending, pending != 0 {
            problems.append("after the run \(pending) messages are still pending at the broker, not 0")
        }
        if settledCount + held + pending != total {
            problems.append(
                "\(settledCount) settled + \(held) held + \(pending) pending = \(settledCount + held + pending), "
                    + "not the \(total) pushed: \(total - settledCount - held - pending) lost"
            )
        }
    }
}

// MARK: - Parts of the checks

/// The payloads a check pushes: `conformance-0`, `conformance-1`, ….
func conformancePayloads(_ count: Int) -> [[UInt8]] {
    (0..<count).map { Array("conformance-\($0)".utf8) }
}

/// A message's payload as text (the checks' payloads are unique texts).
func text<Metadata>(_ message: borrowing Message<Metadata>) -> String {
    String(decoding: message.payload, as: UTF8.self)
}

/// One line per text that occurs more than once.
func duplicates(_ texts: [String]) -> [String] {
    var seen: [String: Int] = [:]
    for text in texts { seen[text, default: 0] += 1 }
    return seen.filter { $0.value > 1 }.map { "\($0.key) was delivered \($0.value) times" }.sorted()
}

/// Polls `condition` every 5 ms until it holds. The check's time limit bounds the wait, by
/// cancelling it: the wait then fails naming `what` it waited for.
func waitFor(_ what: String, _ condition: @Sendable () async throws -> Bool) async throws {
    while try await !condition() {
        do {
            try await Task.sleep(for: .milliseconds(5))
        } catch {
            throw ConformanceFailure(check: "wait", problems: ["gave up waiting for \(what)"])
        }
    }
}

/// A gate handlers wait on until it opens; the wait ends with cancellation too.
final class ConformanceGate: Sendable {
    private let opened = Atomic<Bool>(false)

    func open() { self.opened.store(true, ordering: .releasing) }

    func wait() async throws {
        while !self.opened.load(ordering: .acquiring) {
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

/// What a check pushed, and the tally its handlers fill.
struct Pushed: Sendable {
    let total: Int
    let handled: Tally
}

/// How often each text was seen.
final class Tally: Sendable {
    private let seen = Mutex<(counts: [String: Int], total: Int)>(([:], 0))

    func add(_ text: String) {
        self.seen.withLock { seen in
            seen.counts[text, default: 0] += 1
            seen.total += 1
        }
    }

    /// Everything added, counting repeats.
    var count: Int { self.seen.withLock { $0.total } }
    /// The distinct texts.
    var keys: Set<String> { self.seen.withLock { Set($0.counts.keys) } }
    /// How many distinct texts were added (cheaper than ``keys`` for polling).
    var distinctCount: Int { self.seen.withLock { $0.counts.count } }
    /// Texts added more than once.
    var repeated: [String: Int] { self.seen.withLock { $0.counts.filter { $0.value > 1 } } }
}

/// Every settlement a pipeline made, by message text.
final class SettlementLog: Sendable {
    private struct State {
        var counts: [String: Int] = [:]
        var acknowledged: [String] = []
        var failed = 0
    }

    private let state = Mutex(State())

    func record<Metadata>(_ settlement: Settlement<Metadata>) {
        self.state.withLock { state in
            for message in settlement.acknowledged {
                state.counts[text(message), default: 0] += 1
                state.acknowledged.append(text(message))
            }
            for failure in settlement.failed { state.counts[text(failure.message), default: 0] += 1 }
            state.failed += settlement.failed.count
        }
    }

    /// Settlements per message text.
    var counts: [String: Int] { self.state.withLock { $0.counts } }
    /// Every acknowledged message's text, in order.
    var acknowledged: [String] { self.state.withLock { $0.acknowledged } }
    /// Messages settled as failed.
    var failedCount: Int { self.state.withLock { $0.failed } }
    /// Settlements made (a message settled twice counts twice).
    var settledCount: Int { self.state.withLock { $0.counts.values.reduce(0, +) } }

    /// What went wrong between handling and settling: a message settled twice, acknowledged
    /// without being handled, or handled twice although settled once.
    func problems(handled: Tally) -> [String] {
        var problems: [String] = []
        let counts = self.counts
        let twice = counts.filter { $0.value > 1 }
        if let example = twice.first { problems.append("\(twice.count) messages were settled more than once, e.g. \(example.key)") }
        let keys = handled.keys
        let unhandled = self.acknowledged.filter { !keys.contains($0) }
        if let example = unhandled.first { problems.append("\(unhandled.count) messages were acknowledged unhandled, e.g. \(example)") }
        let repeated = handled.repeated
        if let example = repeated.first { problems.append("\(repeated.count) messages were handled more than once, e.g. \(example.key)") }
        return problems
    }
}

/// A source that records its base source's settlements before passing them on.
struct RecordingSource<Base: PipelineSource>: PipelineSource {
    /// The base source's metadata.
    typealias Metadata = Base.Metadata

    let base: Base
    let log: SettlementLog

    init(base: Base, log: SettlementLog) {
        self.base = base
        self.log = log
    }

    /// The base source's limit.
    var maximumInFlight: Int? { self.base.maximumInFlight }

    /// The base source's parts, with a recording acknowledger.
    func makeParts(context: SourceContext) async throws -> SourceParts<Base.SourceStage, RecordingAcknowledger<Base.Acker>> {
        let parts = try await self.base.makeParts(context: context)
        return SourceParts(stage: parts.stage, acknowledger: RecordingAcknowledger(base: parts.acknowledger, log: self.log))
    }

    /// Shuts the base source down.
    func shutdown(_ acknowledger: RecordingAcknowledger<Base.Acker>) async {
        await self.base.shutdown(acknowledger.base)
    }
}

/// Records settlements, then hands them to the base acknowledger.
struct RecordingAcknowledger<Base: Acknowledger>: Acknowledger {
    /// The base acknowledger's metadata.
    typealias Metadata = Base.Metadata

    let base: Base
    let log: SettlementLog

    /// Records `settlement` and passes it on.
    func settle(_ settlement: Settlement<Base.Metadata>) {
        self.log.record(settlement)
        self.base.settle(settlement)
    }
}

/// The messages a scripted consumer received.
final class ReceivedLog<Metadata: Sendable>: Sendable {
    private let received = Mutex<[Message<Metadata>]>([])

    func append(_ messages: [Message<Metadata>]) { self.received.withLock { $0.append(contentsOf: messages) } }
    var messages: [Message<Metadata>] { self.received.withLock { $0 } }
    var count: Int { self.received.withLock { $0.count } }
}

/// What a scripted consumer can be told.
enum ScriptedConsumerInfo: Sendable {
    /// Ask for this many more, whatever the script says.
    case askFor(Int)
}

/// A consumer in manual demand that asks the amounts of its script, each once the previous
/// ask was delivered in full.
struct ScriptedConsumer<Metadata: Sendable>: Consumer {
    typealias Input = Message<Metadata>
    typealias Info = ScriptedConsumerInfo

    /// The asks still to make, last first.
    var script: [Int]
    let log: ReceivedLog<Metadata>
    var subscription: SubscriptionID?
    var outstanding = 0

    init(script: [Int], log: ReceivedLog<Metadata>) {
        self.script = script.reversed()
        self.log = log
    }

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
        self.subscription = subscription.id
        self.askNext(&context)
        return .manual
    }

    mutating func handleEvents(_ events: [Input], from subscription: SubscriptionID, context: inout StageContext<Never>) {
        self.log.append(events)
        self.outstanding -= events.count
        if self.outstanding <= 0 { self.askNext(&context) }
    }

    mutating func handleInfo(_ info: ScriptedConsumerInfo, context: inout StageContext<Never>) {
        guard case .askFor(let count) = info, let subscription = self.subscription else { return }
        self.script = []
        self.outstanding += count
        context.ask(count, on: subscription)
    }

    mutating func askNext(_ context: inout StageContext<Never>) {
        guard let subscription = self.subscription, let next = self.script.popLast() else { return }
        self.outstanding += next
        context.ask(next, on: subscription)
    }
}
