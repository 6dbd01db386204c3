//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceConnector
import Synchronization

/// One running source: its consumer's connection loop, the read credit, what was taken for
/// the stage, and the offset ledger the acknowledger settles into.
final class KafkaSession: Sendable {
    let configuration: KafkaConfiguration
    let logger: Logger
    /// The window: messages taken and not yet settled never exceed it.
    let window: Int
    let counters: KafkaSourceCounters?

    private let state: Mutex<FetchState>
    private let stage = Mutex<StageHandle<KafkaSourceStage>?>(nil)
    private let loop = Mutex<ConnectionLoop<RDKafkaConsumer>?>(nil)
    private let started = Mutex<StartState>(.waiting(nil))

    private enum StartState {
        case waiting(CheckedContinuation<Void, any Error>?)
        case done(KafkaError?)
    }

    /// The read credit, the outbox and the offsets, shared by the stage, the acknowledger
    /// and the loop's thread.
    struct FetchState {
        var credit: ReadCredit
        var ledger = KafkaOffsetLedger()
        /// Batches taken and not yet handed to the stage.
        var outbox: [[Message<KafkaMetadata>]] = []
        /// Whether a `fetched` note is on its way to the stage.
        var notified = false
        /// Whether the stage was told that reads ended after a drain.
        var toldStopped = false
        /// Whether a revoke waits for in-flight messages (settlements wake the loop).
        var revoking = false
        /// Whether the loop was woken to commit and has not committed yet.
        var commitWake = false
        /// Messages taken, settled (stale ones included) and given back by this session.
        var taken = 0
        var settled = 0
        var givenBack = 0
        /// Messages in flight when their partition was revoked and not settled since: given
        /// back at close if still unsettled (the new owner reads them again).
        var abandoned: [KafkaPartitionKey: Set<Int64>] = [:]
    }

    init(configuration: KafkaConfiguration, window: Int, counters: KafkaSourceCounters?, logger: Logger) {
        var logger = logger
        logger[metadataKey: KafkaLogKey.brokers] = "\(configuration.bootstrapServers.joined(separator: ","))"
        logger[metadataKey: KafkaLogKey.topic] = "\(configuration.topics.joined(separator: ","))"
        logger[metadataKey: KafkaLogKey.group] = "\(configuration.group)"
        self.configuration = configuration
        self.logger = logger
        self.window = window
        self.counters = counters
        self.state = Mutex(FetchState(credit: ReadCredit(window: ReadCredit.Window(count: window, bytes: configuration.maxInFlightBytes))))
    }

    // MARK: Start

    /// Starts the consumer's thread: it creates the client, checks that the cluster answers
    /// and has the topics, and subscribes.
    func start() async throws {
        try RDKafkaConfig.checkRuntime()
        let loop = ConnectionLoop(name: "sluice-kafka-consumer") { [self] in RDKafkaConsumer(session: self) }
        self.loop.withLock { $0 = loop }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result = self.started.withLock { state -> KafkaError?? in
                if case .done(let error) = state { return .some(error) }
                state = .waiting(continuation)
                return nil
            }
            if let result {
                if let error = result { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// The loop's thread finished starting (`error`: it could not, and its loop stops).
    func startFinished(_ error: KafkaError?) {
        let continuation = self.started.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard case .waiting(let continuation) = state else { return nil }
            state = .done(error)
            return continuation
        }
        if let error { continuation?.resume(throwing: error) } else { continuation?.resume() }
    }

    var consumerLoop: ConnectionLoop<RDKafkaConsumer>? { self.loop.withLock { $0 } }

    private func wakeLoop() { self.consumerLoop?.wake() }

    // MARK: The stage's side

    func attach(_ handle: StageHandle<KafkaSourceStage>) {
        self.stage.withLock { $0 = handle }
    }

    func post(_ info: KafkaSourceInfo) {
        let handle = self.stage.withLock { $0 }
        handle?.send(info)
    }

    /// The stage got `demand` more.
    func request(_ demand: Int) {
        if self.state.withLock({ $0.credit.request(demand) }) == .wakeReader { self.wakeLoop() }
    }

    /// Stop taking messages (the stage then takes what was taken with ``takeFetched()``).
    func drain() {
        self.state.withLock { _ = $0.credit.drain() }
        self.wakeLoop()
    }

    /// The stage ended: stop taking messages for good.
    func stopReading() {
        self.state.withLock { _ = $0.credit.stop() }
        self.wakeLoop()
    }

    /// Hands the stage every batch taken so far; `finished` once draining and nothing more
    /// will come.
    func takeFetched() -> (batches: [[Message<KafkaMetadata>]], finished: Bool) {
        self.state.withLock { state in
            let batches = state.outbox
            state.outbox = []
            state.notified = false
            return (batches, state.credit.isEnding && state.credit.readsInFlight == 0)
        }
    }

    // MARK: Settling

    /// Records a settlement in the ledger (never blocks): acknowledged and dropped messages
    /// may be committed past; `.requeue` holds the commit before the message; `.deadLetter`
    /// is written to the dead-letter topic first.
    func settle(_ settlement: Settlement<KafkaMetadata>) {
        // The acknowledged messages are read in place: a copy of each would retain and release
        // its payload, key and topic.
        settlement.acknowledged.withUnsafeBufferPointer { self.settle(acknowledged: $0, failed: settlement.failed, count: settlement.count) }
    }

    private func settle(
        acknowledged: UnsafeBufferPointer<Message<KafkaMetadata>>,
        failed: [(message: Message<KafkaMetadata>, disposition: FailureDisposition)],
        count: Int
    ) {
        var bytes = 0
        for index in acknowledged.indices { bytes += Int(acknowledged[index].metadata.size) }
        for failure in failed { bytes += Int(failure.message.metadata.size) }
        let commitEvery = self.configuration.commitEvery
        var letters: [KafkaDeadLetter] = []
        let (credit, wake) = self.state.withLock { state -> (ReadCredit.WakeAction, Bool) in
            var stale = 0
            // One ledger lookup per run of messages of the same partition and assignment.
            for run in KafkaRuns(acknowledged, sameAssignment: true) {
                let first = acknowledged[run.lowerBound].metadata
                stale += state.ledger.settle(
                    KafkaPartitionKey(topic: first.topic, partition: first.partition),
                    assignment: first.assignment,
                    offsets: KafkaOffsets(acknowledged, run),
                    as: .done
                )
            }
            for (message, disposition) in failed {
                let metadata = message.metadata
                let key = KafkaPartitionKey(topic: metadata.topic, partition: metadata.partition)
                let outcome: KafkaOffsetLedger.Outcome
                switch disposition {
                case .drop: outcome = .done
                case .requeue: outcome = .held
                default: outcome = .deadLettering
                }
                guard state.ledger.settle(key, offset: metadata.offset, assignment: metadata.assignment, as: outcome) else {
                    stale += 1
                    continue
                }
                if outcome == .deadLettering {
                    letters.append(KafkaDeadLetter(message: message, error: message.failure.map { "\($0.error)" } ?? "failed"))
                }
            }
            state.settled += count
            if !state.abandoned.isEmpty {
                for message in acknowledged {
                    state.abandoned[KafkaPartitionKey(topic: message.metadata.topic, partition: message.metadata.partition)]?.remove(message.metadata.offset)
                }
                for failure in failed {
                    state.abandoned[KafkaPartitionKey(topic: failure.message.metadata.topic, partition: failure.message.metadata.partition)]?.remove(failure.message.metadata.offset)
                }
            }
            self.counters?.settled(count, bytes: bytes, stale: stale)
            let credit = state.credit.settled(count: count, bytes: bytes)
            var wake = state.revoking
            if !state.commitWake && state.ledger.settledSinceCommit >= commitEvery {
                state.commitWake = true
                wake = true
            }
            return (credit, wake)
        }
        if !letters.isEmpty, let loop = self.consumerLoop, !loop.enqueue(.deadLetter(letters)) {
            self.logger.info("the consumer is closing; failed messages stay uncommitted", metadata: [KafkaLogKey.count: "\(letters.count)"])
        }
        if credit == .wakeReader || wake { self.wakeLoop() }
    }

    /// A dead letter was written (`confirmed`), so the commit may pass its message; or it
    /// could not be, and the commit stops before it.
    func deadLettered(_ letter: KafkaDeadLetter, confirmed: Bool) {
        let metadata = letter.message.metadata
        self.state.withLock { state in
            _ = state.ledger.settle(letter.key, offset: metadata.offset, assignment: metadata.assignment, as: confirmed ? .done : .held)
        }
    }

    // MARK: The loop's side

    /// Runs `body` on the shared state, under its lock.
    func withState<Result>(_ body: (inout FetchState) -> Result) -> Result {
        self.state.withLock { body(&$0) }
    }

    /// Hands `messages` (taken with a read that reserved `asked`) to the stage.
    func completeRead(asked: Int, messages: [Message<KafkaMetadata>], bytes: Int) {
        let notify = self.state.withLock { state -> Bool in
            state.credit.completed(asked: asked, got: messages.count, bytes: bytes)
            guard !messages.isEmpty else { return false }
            state.taken += messages.count
            // A read's messages come in runs of one partition: one ledger lookup per run.
            messages.withUnsafeBufferPointer { messages in
                for run in KafkaRuns(messages, sameAssignment: false) {
                    let first = messages[run.lowerBound].metadata
                    state.ledger.took(KafkaPartitionKey(topic: first.topic, partition: first.partition), offsets: KafkaOffsets(messages, run))
                }
            }
            state.outbox.append(messages)
            guard !state.notified else { return false }
            state.notified = true
            return true
        }
        if !messages.isEmpty { self.counters?.took(messages) }
        if notify { self.post(KafkaSourceInfo(.fetched)) }
    }

    /// The partitions `keys` are being revoked: their messages not yet handed to the stage
    /// are given back (their demand is pending again), and settlements wake the loop.
    func beginRevoke(_ keys: Set<KafkaPartitionKey>) {
        self.counters?.revokeBegan()
        let givenBack = self.state.withLock { state -> [(KafkaPartitionKey, Int64)] in
            state.revoking = true
            var givenBack: [(KafkaPartitionKey, Int64)] = []
            var bytes = 0
            state.outbox = state.outbox.compactMap { batch in
                let kept = batch.filter { message in
                    let key = KafkaPartitionKey(topic: message.metadata.topic, partition: message.metadata.partition)
                    guard keys.contains(key) else { return true }
                    givenBack.append((key, message.metadata.offset))
                    bytes += Int(message.metadata.size)
                    return false
                }
                return kept.isEmpty ? nil : kept
            }
            guard !givenBack.isEmpty else { return [] }
            state.givenBack += givenBack.count
            _ = state.credit.settled(count: givenBack.count, bytes: bytes)
            // Their demand is pending again; the loop reads on its next turn.
            _ = state.credit.request(givenBack.count)
            return givenBack
        }
        if !givenBack.isEmpty { self.counters?.gaveBack(givenBack) }
    }

    /// A revoke ends: the offsets of `keys` to commit, and the partitions forgotten (later
    /// settlements of them are stale).
    func endRevoke(_ keys: [KafkaPartitionKey]) -> [(KafkaPartitionKey, Int64)] {
        self.state.withLock { state in
            let commits = state.ledger.takeCommits(keys)
            let revoked = Set(keys)
            for (key, offset) in state.ledger.inFlightOffsets where revoked.contains(key) {
                state.abandoned[key, default: []].insert(offset)
            }
            let abandoned = state.ledger.revoke(keys)
            state.revoking = false
            if abandoned > 0 {
                self.logger.info(
                    "partitions revoked with messages in flight; their settlements will be dropped",
                    metadata: [KafkaLogKey.count: "\(abandoned)"]
                )
            }
            return commits
        }
    }

    /// Stops the consumer: commits what settled, leaves the group (bounded), closes.
    func shutdown() async {
        self.stopReading()
        guard let loop = self.consumerLoop else { return }
        let limit = self.configuration.closeTimeout + self.configuration.revokeTimeout + .seconds(2)
        // Bounded, and not cut short by cancellation: the close commits what settled.
        let closed = await Task { await loop.stopAndWait(timeout: limit) }.value
        if !closed { self.logger.info("the Kafka consumer did not close in time; its thread is abandoned") }
    }

    /// The consumer closed (on its thread): what was taken and never settled goes back to
    /// the broker (it is not committed, so the group reads it again).
    func closed() {
        let unsettled = self.state.withLock { state -> [(KafkaPartitionKey, Int64)] in
            state.outbox = []
            var unsettled = state.ledger.inFlightOffsets
            for (key, offsets) in state.abandoned { unsettled += offsets.map { (key, $0) } }
            state.abandoned = [:]
            state.givenBack += unsettled.count
            return unsettled
        }
        self.counters?.gaveBack(unsettled)
    }
}

/// The runs of consecutive messages of one partition (and, if asked, one assignment) in a
/// buffer of messages, as index ranges; read in place.
struct KafkaRuns: Sequence, IteratorProtocol {
    private let messages: UnsafeBufferPointer<Message<KafkaMetadata>>
    private let sameAssignment: Bool
    private var start = 0

    init(_ messages: UnsafeBufferPointer<Message<KafkaMetadata>>, sameAssignment: Bool) {
        self.messages = messages
        self.sameAssignment = sameAssignment
    }

    mutating func next() -> Range<Int>? {
        guard self.start < self.messages.count else { return nil }
        let first = self.start
        var end = first + 1
        while end < self.messages.count, self.messages[end].metadata.partition == self.messages[first].metadata.partition,
              !self.sameAssignment || self.messages[end].metadata.assignment == self.messages[first].metadata.assignment,
              self.messages[end].metadata.topicName === self.messages[first].metadata.topicName {
            end += 1
        }
        self.start = end
        return first..<end
    }
}

/// The offsets of a run of messages, read in place (no message is copied).
struct KafkaOffsets: RandomAccessCollection {
    private let messages: UnsafeBufferPointer<Message<KafkaMetadata>>
    let startIndex: Int
    let endIndex: Int

    init(_ messages: UnsafeBufferPointer<Message<KafkaMetadata>>, _ run: Range<Int>) {
        self.messages = messages
        self.startIndex = run.lowerBound
        self.endIndex = run.upperBound
    }

    subscript(position: Int) -> Int64 { self.messages[position].metadata.offset }
}
