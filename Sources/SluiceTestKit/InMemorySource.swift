//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice
import Synchronization

/// How a message's processing ended, as its source saw it.
public enum MessageOutcome: Hashable, Sendable, CustomStringConvertible {
    /// Acknowledged after successful processing.
    case acknowledged
    /// Failed for good and settled with this disposition.
    case failed(FailureDisposition)
    /// Not settled: the wait for the outcome was cancelled first (as when a test's time limit
    /// passes), so the test fails instead of hanging.
    case notSettled

    public var description: String {
        switch self {
        case .acknowledged: return "acknowledged"
        case .failed(let disposition): return "failed(\(disposition))"
        case .notSettled: return "not settled"
        }
    }
}

/// A pipeline source that holds its messages in memory: for tests, examples and benchmarks.
///
/// Push messages with ``push(_:)``; the source emits them on demand, never more than asked.
/// Every settlement is recorded, so tests can check that each message was settled exactly once
/// and how (``outcome(of:)``, ``settlementCounts``). ``testMessage(_:)`` pushes one message and
/// waits for its outcome.
///
/// With ``finishWhenEmpty()`` the source ends once everything pushed was emitted, which ends
/// the pipeline after it settled everything.
public final class InMemorySource: PipelineSource, Sendable {
    public typealias Metadata = BasicMetadata

    private struct State: ~Copyable {
        /// Pushed messages in arrays of up to a buffer's worth, handed out whole when demand
        /// allows (see `EventQueue`).
        var queue = EventQueue<Message<BasicMetadata>>()
        var nextID: UInt64 = 0
        var stage: StageHandle<InMemoryProducer>?
        var finishWhenEmpty = false
        var outcomes: [UInt64: MessageOutcome] = [:]
        var settlements: [UInt64: Int] = [:]
        var waiters: [UInt64: CheckedContinuation<MessageOutcome, Never>] = [:]
        var emitted = 0
    }

    private let state = Mutex(State())

    /// The most unacknowledged messages this source allows (`nil`: no limit); pipelines whose
    /// window is larger refuse to start.
    public let maximumInFlight: Int?
    /// Whether each message's outcome is recorded (for tests); otherwise only counted.
    public let recordsOutcomes: Bool
    private let settled = Atomic<Int>(0)

    /// Creates an empty source.
    ///
    /// - Parameters:
    ///   - maximumInFlight: The source's limit on unacknowledged messages, if any.
    ///   - recordsOutcomes: Record every message's outcome (default); `false` only counts
    ///     settled messages, for benchmarks.
    public init(maximumInFlight: Int? = nil, recordsOutcomes: Bool = true) {
        self.maximumInFlight = maximumInFlight
        self.recordsOutcomes = recordsOutcomes
    }

    /// Messages settled so far (counted even when outcomes are not recorded).
    public var settledCount: Int { self.settled.load(ordering: .relaxed) }

    public func makeParts(context: SourceContext) async throws -> SourceParts<InMemoryProducer, InMemoryAcknowledger> {
        SourceParts(stage: InMemoryProducer(source: self), acknowledger: InMemoryAcknowledger(source: self))
    }

    // MARK: Feeding

    /// How many payloads of a push share one buffer, like the messages of one broker fetch.
    static let payloadsPerBuffer = 1000

    /// Queues messages with these payloads; returns their ids (``BasicMetadata/id``).
    ///
    /// The payloads are copied into shared buffers, one per 1000 messages, as a broker
    /// adapter copies one fetch into one buffer (see ``Payload/packing(_:)``).
    @discardableResult
    public func push(_ payloads: [[UInt8]], deliveryCount: Int? = nil) -> [UInt64] {
        self.enqueue(Self.buffers(payloads.count).map { Payload.packing(payloads[$0]) }, deliveryCount: deliveryCount)
    }

    /// Queues messages with these payloads, as they are (each keeps its own storage); returns
    /// their ids (``BasicMetadata/id``).
    @discardableResult
    public func push(payloads: [Payload], deliveryCount: Int? = nil) -> [UInt64] {
        self.enqueue(Self.buffers(payloads.count).map { Array(payloads[$0]) }, deliveryCount: deliveryCount)
    }

    /// The ranges of `count` pushed messages that go together: a buffer's worth each.
    private static func buffers(_ count: Int) -> [Range<Int>] {
        stride(from: 0, to: count, by: Self.payloadsPerBuffer).map { $0..<min($0 + Self.payloadsPerBuffer, count) }
    }

    /// Queues one array of messages per group of payloads, numbering them in order.
    private func enqueue(_ groups: [[Payload]], deliveryCount: Int?) -> [UInt64] {
        let (ids, stage) = self.state.withLock { state -> ([UInt64], StageHandle<InMemoryProducer>?) in
            var ids: [UInt64] = []
            for group in groups {
                var messages: [Message<BasicMetadata>] = []
                messages.reserveCapacity(group.count)
                for payload in group {
                    let id = state.nextID
                    state.nextID += 1
                    messages.append(Message(payload: payload, metadata: BasicMetadata(id: id, deliveryCount: deliveryCount)))
                    ids.append(id)
                }
                state.queue.append(messages)
            }
            return (ids, state.stage)
        }
        stage?.send(.pushed)
        return ids
    }

    /// Queues one message; returns its id.
    @discardableResult
    public func push(_ payload: [UInt8], deliveryCount: Int? = nil) -> UInt64 {
        self.push([payload], deliveryCount: deliveryCount)[0]
    }

    /// Queues one UTF-8 text message; returns its id.
    @discardableResult
    public func push(_ text: String, deliveryCount: Int? = nil) -> UInt64 {
        self.push(Array(text.utf8), deliveryCount: deliveryCount)
    }

    /// Ends the source once every queued message was emitted.
    public func finishWhenEmpty() {
        let stage = self.state.withLock { state in
            state.finishWhenEmpty = true
            return state.stage
        }
        stage?.send(.pushed)
    }

    // MARK: Outcomes

    /// Pushes one message and waits until the pipeline settled it.
    public func testMessage(_ payload: [UInt8], deliveryCount: Int? = nil) async -> MessageOutcome {
        await self.testBatch([payload], deliveryCount: deliveryCount)[0]
    }

    /// Pushes one UTF-8 text message and waits until the pipeline settled it.
    public func testMessage(_ text: String, deliveryCount: Int? = nil) async -> MessageOutcome {
        await self.testMessage(Array(text.utf8), deliveryCount: deliveryCount)
    }

    /// Pushes messages and waits until the pipeline settled all of them; outcomes in order.
    public func testBatch(_ payloads: [[UInt8]], deliveryCount: Int? = nil) async -> [MessageOutcome] {
        let ids = self.push(payloads, deliveryCount: deliveryCount)
        var outcomes: [MessageOutcome] = []
        for id in ids { outcomes.append(await self.waitForOutcome(of: id)) }
        return outcomes
    }

    /// Waits until message `id` is settled; ``MessageOutcome/notSettled`` if the waiting task
    /// is cancelled first.
    public func waitForOutcome(of id: UInt64) async -> MessageOutcome {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let outcome = self.state.withLock { state -> MessageOutcome? in
                    if let outcome = state.outcomes[id] { return outcome }
                    if Task.isCancelled { return .notSettled }
                    state.waiters[id] = continuation
                    return nil
                }
                if let outcome { continuation.resume(returning: outcome) }
            }
        } onCancel: {
            let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(returning: .notSettled)
        }
    }

    /// How message `id` was settled, or `nil` if it was not (yet).
    public func outcome(of id: UInt64) -> MessageOutcome? {
        self.state.withLock { $0.outcomes[id] }
    }

    /// How many times each settled message was settled (exactly-once means every value is 1).
    public var settlementCounts: [UInt64: Int] {
        self.state.withLock { $0.settlements }
    }

    /// Messages pushed and not yet emitted to the pipeline.
    public var queuedCount: Int { self.state.withLock { $0.queue.count } }

    /// Messages emitted to the pipeline so far.
    public var emittedCount: Int { self.state.withLock { $0.emitted } }

    // MARK: Internals used by the stage and acknowledger

    func attach(_ stage: StageHandle<InMemoryProducer>) {
        self.state.withLock { $0.stage = stage }
    }

    func take(_ count: Int) -> (messages: [Message<BasicMetadata>], finished: Bool) {
        self.state.withLock { state in
            // Moved out of the queue, not copied: an array pushed is handed on whole when the
            // demand covers it.
            let messages = state.queue.take(count)
            state.emitted += messages.count
            return (messages, state.finishWhenEmpty && state.queue.isEmpty)
        }
    }

    func record(_ settlement: Settlement<BasicMetadata>) {
        self.settled.add(settlement.count, ordering: .relaxed)
        guard self.recordsOutcomes else { return }
        var resumed: [(CheckedContinuation<MessageOutcome, Never>, MessageOutcome)] = []
        self.state.withLock { state in
            func settle(_ id: UInt64, _ outcome: MessageOutcome) {
                state.settlements[id, default: 0] += 1
                if state.outcomes[id] == nil { state.outcomes[id] = outcome }
                if let waiter = state.waiters.removeValue(forKey: id) { resumed.append((waiter, outcome)) }
            }
            for message in settlement.acknowledged { settle(message.metadata.id, .acknowledged) }
            for failure in settlement.failed { settle(failure.message.metadata.id, .failed(failure.disposition)) }
        }
        for (waiter, outcome) in resumed { waiter.resume(returning: outcome) }
    }
}

/// Control of an ``InMemoryProducer``.
public enum InMemorySourceInfo: SourceInfo {
    /// Messages were pushed (or the source was told to finish).
    case pushed
    /// Stop emitting and end.
    case drain
}

/// The producer stage of an ``InMemorySource``: emits queued messages up to the demand.
public struct InMemoryProducer: Producer, Sendable {
    public typealias Output = Message<BasicMetadata>
    public typealias Info = InMemorySourceInfo

    let source: InMemorySource
    private var demand = 0

    init(source: InMemorySource) {
        self.source = source
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.source.attach(handle)
    }

    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        self.demand += demand
        self.emit(&context)
    }

    public mutating func handleInfo(_ info: InMemorySourceInfo, context: inout StageContext<Output>) {
        switch info {
        case .pushed: self.emit(&context)
        case .drain: context.stop(.normal)
        }
    }

    private mutating func emit(_ context: inout StageContext<Output>) {
        let (messages, finished) = self.source.take(self.demand)
        self.demand -= messages.count
        if !messages.isEmpty { context.emit(messages) }
        if finished { context.stop(.normal) }
    }
}

/// Records an ``InMemorySource``'s settlements.
public struct InMemoryAcknowledger: Acknowledger {
    let source: InMemorySource

    public func settle(_ settlement: Settlement<BasicMetadata>) {
        self.source.record(settlement)
    }
}
