//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CKafka
import DequeModule
import Logging
import Sluice
import SluiceConnector

#if canImport(Glibc)
import Glibc
#endif

/// The consumer of a ``KafkaSource``: owns the librdkafka consumer handle on its
/// ``ConnectionLoop``'s thread, takes messages as the read credit allows, serves rebalances
/// and commits, and writes dead letters.
///
/// Each assigned partition's queue is detached from the consumer queue, so the consumer
/// queue carries only events (rebalances, commit results, errors) and is served every turn,
/// whatever the demand; messages are taken from the partition queues in turn, which bounds
/// each partition's prefetch separately (`queued.min.messages`, `queued.max.messages.kbytes`
/// apply per partition queue) and keeps one busy partition from starving the others. Every
/// queue signals readiness on a pipe the loop waits on, so the first message after an idle
/// time is taken at once, not at the next poll interval.
final class RDKafkaConsumer: ConnectionDriver {
    enum Command: Sendable {
        /// Write these failed messages to the dead-letter topic.
        case deadLetter([KafkaDeadLetter])
        /// Measure the assigned partitions' lag (``KafkaSource/lag()``).
        case lag(@Sendable (Result<Int?, KafkaError>) -> Void)
    }

    private struct Assigned {
        let key: KafkaPartitionKey
        let queue: OpaquePointer
        let assignment: UInt64
        /// The key's topic, interned once for all of the partition's messages.
        unowned(unsafe) let topic: KafkaTopicName
    }

    /// How long the credit must stay empty before the assigned partitions are paused:
    /// hysteresis, since a pause drops librdkafka's prefetch (a momentary lack of demand does
    /// not pause); meanwhile librdkafka's per-partition prefetch bound holds.
    static let pauseAfter: Duration = .milliseconds(100)
    /// The longest the loop waits without serving the consumer queue.
    static let longestWait: Duration = .milliseconds(500)

    private let session: KafkaSession
    private let context: RDKafkaContext
    private var handle: OpaquePointer?
    private var consumerQueue: OpaquePointer?
    private let wake = RDKafkaWakePipe()
    private var partitions: [Assigned] = []
    private var rotation = 0
    private var paused = false
    private var noCreditSince: ContinuousClock.Instant?
    private var lastCommit = ContinuousClock.now
    private let batchSize: Int
    private let buffer: UnsafeMutablePointer<UnsafeMutablePointer<rd_kafka_message_t>?>
    private weak var loop: ConnectionLoop<RDKafkaConsumer>?
    private var failed = false
    /// Whether the consumer subscribed (and so has a group to leave when it closes).
    private var subscribed = false

    private var producer: RDKafkaProducer?
    private var deadLetterQueue: Deque<KafkaDeadLetter> = []
    private var deadLettersInFlight: [UInt64: KafkaDeadLetter] = [:]
    private var nextToken: UInt64 = 1

    private var configuration: KafkaConfiguration { self.session.configuration }
    private var logger: Logger { self.session.logger }

    /// Creates the client on the loop's thread, checks the cluster and subscribes; reports
    /// the outcome to the session.
    init(session: KafkaSession) {
        self.session = session
        self.context = RDKafkaContext(logger: session.logger)
        self.batchSize = session.configuration.batchSize
        self.buffer = .allocate(capacity: session.configuration.batchSize)
        do {
            try self.start()
            session.startFinished(nil)
        } catch {
            self.failed = true
            session.startFinished(error)
        }
    }

    deinit {
        self.buffer.deallocate()
        self.wake.close()
    }

    private func start() throws(KafkaError) {
        self.context.onRebalance = { [unowned self] handle, error, list in self.rebalance(handle, error, list) }
        self.context.onCommit = { [unowned self] error, _ in
            guard error != RD_KAFKA_RESP_ERR_NO_ERROR, error != RD_KAFKA_RESP_ERR__NO_OFFSET else { return }
            self.logger.debug("an asynchronous commit failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
        }
        self.context.onError = { [unowned self] error, reason, fatal in
            if fatal {
                self.session.post(KafkaSourceInfo(.failed(KafkaError(.clientFailed, "librdkafka failed for good: \(reason)"))))
            } else {
                self.logger.debug("librdkafka reported an error", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error)) \(reason)"])
            }
        }
        if let counters = self.session.counters {
            let client = ObjectIdentifier(self)
            self.context.onStatistics = { json in
                let statistics = Self.statistics(json)
                if let received = statistics.received { counters.received(received, by: client) }
                counters.queued(statistics.queuedBytes, by: client)
            }
        }
        let handle = try self.context.makeHandle(
            RD_KAFKA_CONSUMER,
            properties: self.configuration.librdkafkaProperties(window: self.session.window, consumer: true)
        )
        self.handle = handle
        try RDKafkaMetadata.check(handle, topics: self.configuration.topics, configuration: self.configuration)
        rd_kafka_poll_set_consumer(handle)
        guard let queue = rd_kafka_queue_get_consumer(handle) else {
            throw KafkaError(.clientFailed, "librdkafka gave no consumer queue")
        }
        self.consumerQueue = queue
        rd_kafka_queue_io_event_enable(queue, self.wake.writeEnd, "c", 1)
        let list = rd_kafka_topic_partition_list_new(Int32(self.configuration.topics.count))
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in self.configuration.topics {
            rd_kafka_topic_partition_list_add(list, topic, sluice_rd_kafka_partition_ua())
        }
        let error = rd_kafka_subscribe(handle, list)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(.groupFailed, "subscribing group \(self.configuration.group) failed: \(RDKafkaConfig.describe(error))")
        }
        self.subscribed = true
    }

    /// From librdkafka's statistics JSON: the client's total of messages received from the
    /// brokers (the last `"rxmsgs":`, since the per-partition ones come before the totals),
    /// and the payload bytes its partition queues hold (the sum of every `"fetchq_size":`).
    static func statistics(_ json: UnsafeBufferPointer<CChar>) -> (received: Int?, queuedBytes: Int) {
        let received = Self.numbers(after: "\"rxmsgs\":", in: json).last
        let queued = Self.numbers(after: "\"fetchq_size\":", in: json).reduce(0, +)
        return (received, queued)
    }

    /// The numbers that follow each occurrence of `key` in `json`, in order.
    private static func numbers(after key: String, in json: UnsafeBufferPointer<CChar>) -> [Int] {
        let needle = Array(key.utf8).map { CChar(bitPattern: $0) }
        var numbers: [Int] = []
        var index = 0
        while index + needle.count <= json.count {
            guard json[index] == needle[0], json[index..<index + needle.count].elementsEqual(needle) else {
                index += 1
                continue
            }
            index += needle.count
            while index < json.count && json[index] == 32 { index += 1 }
            var value = 0
            var digits = 0
            while index < json.count, json[index] >= 48 && json[index] <= 57 {
                value = value * 10 + Int(json[index] - 48)
                digits += 1
                index += 1
            }
            if digits > 0 { numbers.append(value) }
        }
        return numbers
    }

    // MARK: ConnectionDriver

    func handle(_ command: Command, on loop: ConnectionLoop<RDKafkaConsumer>) {
        switch command {
        case .deadLetter(let letters):
            self.deadLetterQueue.append(contentsOf: letters)
        case .lag(let report):
            report(KafkaLagQuery.measure(self.handle, self.partitions.map(\.key), offsetReset: self.configuration.offsetReset))
        }
    }

    func service(on loop: ConnectionLoop<RDKafkaConsumer>) -> ServiceOutcome {
        self.loop = loop
        guard let handle = self.handle, !self.failed else {
            // Once: stopping wakes the loop, and a stop on every turn would keep it awake.
            if !loop.isStopping { loop.stop() }
            return .wait(socket: nil, timeout: nil)
        }
        self.wake.drain()
        self.serveEvents(handle)
        self.serveDeadLetters()
        let now = ContinuousClock.now
        let commitDue = self.commitIfDue(handle, now: now)
        let (hasCredit, more) = self.read()
        self.updatePause(handle, hasCredit: hasCredit, now: now)
        if more { return .again }
        var timeout = Self.longestWait
        if let commitDue { timeout = min(timeout, max(.milliseconds(1), commitDue - now)) }
        if !hasCredit, !self.paused, let since = self.noCreditSince {
            timeout = min(timeout, max(.milliseconds(1), since + Self.pauseAfter - now))
        }
        if !self.deadLettersInFlight.isEmpty || !self.deadLetterQueue.isEmpty { timeout = min(timeout, .milliseconds(10)) }
        // Wait on the pipe only with credit: without it the partition queues' readiness is
        // of no use, and the consumer queue's events are served at the latest after `timeout`.
        return .wait(socket: self.wake.readEnd, timeout: timeout)
    }

    func close() {
        defer { self.destroyQueues() }
        guard let handle = self.handle else { return }
        guard self.subscribed else {
            // The start failed: no group to leave, nothing to commit.
            self.destroyQueues()
            rd_kafka_destroy_flags(handle, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE)
            self.handle = nil
            self.session.closed()
            return
        }
        self.serveEvents(handle)
        // Commit what settled, bounded; then write out pending dead letters, bounded.
        let commits = self.session.withState { $0.ledger.takeCommits() }
        self.commitBounded(handle, commits, timeout: self.configuration.closeTimeout / 2)
        self.flushDeadLetters(until: .now + self.configuration.closeTimeout / 2)
        // Leave the group, serving the consumer queue (rebalance callbacks run) until closed
        // or the deadline passed.
        let deadline = ContinuousClock.now + self.configuration.closeTimeout
        if let queue = self.consumerQueue, let error = rd_kafka_consumer_close_queue(handle, queue) {
            self.logger.debug("closing the consumer failed", metadata: [KafkaLogKey.error: "\(String(cString: rd_kafka_error_string(error)))"])
            rd_kafka_error_destroy(error)
        }
        while rd_kafka_consumer_closed(handle) == 0 && ContinuousClock.now < deadline {
            if let message = rd_kafka_consumer_poll(handle, 20) { rd_kafka_message_destroy(message) }
        }
        let closed = rd_kafka_consumer_closed(handle) != 0
        if !closed { self.logger.info("leaving the consumer group did not finish in time; closing without it") }
        self.destroyQueues()
        rd_kafka_destroy_flags(handle, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE)
        self.handle = nil
        self.producer = nil
        self.session.closed()
    }

    // MARK: Events

    /// Serves the consumer queue: rebalance and commit callbacks run inside; error events
    /// are logged, and those that end the group fail the stage.
    private func serveEvents(_ handle: OpaquePointer) {
        while let message = rd_kafka_consumer_poll(handle, 0) {
            let error = message.pointee.err
            rd_kafka_message_destroy(message)
            guard error != RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
            switch error {
            case RD_KAFKA_RESP_ERR_INVALID_GROUP_ID, RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
                self.session.post(KafkaSourceInfo(.failed(KafkaError(
                    .groupFailed,
                    "group \(self.configuration.group) cannot consume: \(RDKafkaConfig.describe(error))"
                ))))
            default:
                self.logger.debug("consumer event", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
            }
        }
    }

    // MARK: Reading

    /// Takes messages while the credit allows. Returns whether there is credit, and whether
    /// to serve again at once (reads were full, more may wait).
    private func read() -> (hasCredit: Bool, more: Bool) {
        for _ in 0..<4 {
            guard let asked = self.session.withState({ $0.credit.nextRead(cap: self.batchSize) }) else { return (false, false) }
            var bytes = 0
            let count = self.partitions.count
            // Each message is built in its place in the array: appending would copy its
            // metadata (counting references to its key and headers) and destroy the original.
            let messages = [Message<KafkaMetadata>](unsafeUninitializedCapacity: asked) { buffer, initialized in
                var visited = 0
                while initialized < asked && visited < count {
                    let partition = self.partitions[(self.rotation + visited) % count]
                    visited += 1
                    let got = rd_kafka_consume_batch_queue(partition.queue, 0, self.buffer, asked - initialized)
                    guard got > 0 else { continue }
                    initialized += self.convert(Int(got), from: partition, into: buffer.baseAddress! + initialized, bytes: &bytes)
                }
            }
            if count > 0 { self.rotation = (self.rotation + 1) % count }
            let full = messages.count == asked
            self.session.completeRead(asked: asked, messages: messages, bytes: bytes)
            if !full { return (true, false) }
        }
        return (true, true)
    }

    /// Copies `count` messages out of the buffer (payloads and keys into one shared buffer)
    /// into uninitialized memory at `messages`, and destroys them. Returns how many were
    /// messages (error events are logged).
    ///
    /// Per message only what the message keeps is paid for: one copy of its bytes into the
    /// shared buffer and one view of it each for payload and key; the partition's topic was
    /// interned at assignment (no reference is counted for it); librdkafka parses headers only
    /// for records that may have some (``KafkaRecordLayout``).
    private func convert(_ count: Int, from partition: Assigned, into messages: UnsafeMutablePointer<Message<KafkaMetadata>>, bytes: inout Int) -> Int {
        var total = 0
        for index in 0..<count {
            let message = self.buffer[index]!.pointee
            guard message.err == RD_KAFKA_RESP_ERR_NO_ERROR else {
                if message.err != RD_KAFKA_RESP_ERR__PARTITION_EOF { self.logFetchError(message.err, partition.key) }
                continue
            }
            total += message.len + (message.key == nil ? 0 : message.key_len)
        }
        // One buffer for the read's payloads and keys, filled straight from librdkafka's.
        let storage = [UInt8](unsafeUninitializedCapacity: total) { destination, initialized in
            var at = 0
            for index in 0..<count {
                let message = self.buffer[index]!.pointee
                guard message.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
                if message.len > 0, let payload = message.payload {
                    (destination.baseAddress! + at).update(from: payload.assumingMemoryBound(to: UInt8.self), count: message.len)
                    at += message.len
                }
                if let key = message.key, message.key_len > 0 {
                    (destination.baseAddress! + at).update(from: key.assumingMemoryBound(to: UInt8.self), count: message.key_len)
                    at += message.key_len
                }
            }
            initialized = at
        }
        let shared = Payload(storage)
        var valid = 0
        var at = 0
        var parsed = 0
        for index in 0..<count {
            let pointer = self.buffer[index]!
            let message = pointer.pointee
            guard message.err == RD_KAFKA_RESP_ERR_NO_ERROR else { continue }
            var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            let timestamp = rd_kafka_message_timestamp(pointer, &type)
            let payload = shared.extracting(at..<at + message.len)
            at += message.len
            var key: Payload?
            if message.key != nil {
                key = shared.extracting(at..<at + message.key_len)
                at += message.key_len
            }
            bytes += message.len
            var headers: [KafkaHeader] = []
            if !KafkaRecordLayout.provesNoHeaders(value: message.payload, length: message.len, key: message.key, keyLength: message.key_len) {
                parsed += 1
                headers = Self.headers(of: pointer)
            }
            (messages + valid).initialize(to: Message(payload: payload, metadata: KafkaMetadata(
                topic: partition.topic,
                partition: partition.key.partition,
                offset: message.offset,
                key: key,
                headers: headers,
                timestampMilliseconds: type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp,
                assignment: partition.assignment,
                size: UInt32(truncatingIfNeeded: message.len)
            )))
            valid += 1
        }
        for index in 0..<count { rd_kafka_message_destroy(self.buffer[index]) }
        if parsed > 0 { self.session.counters?.parsedHeaders(parsed) }
        return valid
    }

    private func logFetchError(_ error: rd_kafka_resp_err_t, _ key: KafkaPartitionKey) {
        self.logger.debug("fetch error", metadata: [KafkaLogKey.partition: "\(key)", KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
    }

    private static func headers(of message: UnsafeMutablePointer<rd_kafka_message_t>) -> [KafkaHeader] {
        var list: OpaquePointer?
        guard rd_kafka_message_headers(message, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return [] }
        var headers: [KafkaHeader] = []
        var index = 0
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while rd_kafka_header_get_all(list, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }
            headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: bytes))
            index += 1
        }
        return headers
    }

    /// Pauses every assigned partition once the credit stayed empty for ``pauseAfter``, and
    /// resumes them when credit returns; the consumer queue is served either way, so the
    /// member stays in its group.
    private func updatePause(_ handle: OpaquePointer, hasCredit: Bool, now: ContinuousClock.Instant) {
        if hasCredit {
            self.noCreditSince = nil
            if self.paused {
                self.paused = false
                self.setPaused(handle, false, self.partitions.map(\.key))
            }
            return
        }
        let since = self.noCreditSince ?? now
        self.noCreditSince = since
        if !self.paused && now - since >= Self.pauseAfter {
            self.paused = true
            self.setPaused(handle, true, self.partitions.map(\.key))
        }
    }

    private func setPaused(_ handle: OpaquePointer, _ pause: Bool, _ keys: [KafkaPartitionKey]) {
        guard !keys.isEmpty else { return }
        let list = Self.list(keys.map { ($0, nil) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        _ = pause ? rd_kafka_pause_partitions(handle, list) : rd_kafka_resume_partitions(handle, list)
    }

    // MARK: Commits

    /// Commits asynchronously once enough settled or the interval passed. Returns when the
    /// next commit is due, if something settled and waits.
    private func commitIfDue(_ handle: OpaquePointer, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let interval = self.configuration.commitInterval
        let every = self.configuration.commitEvery
        let lastCommit = self.lastCommit
        let (commits, waiting) = self.session.withState { state -> ([(KafkaPartitionKey, Int64)]?, Bool) in
            let settled = state.ledger.settledSinceCommit
            guard settled > 0 else {
                state.commitWake = false
                return (nil, false)
            }
            guard settled >= every || now - lastCommit >= interval else { return (nil, true) }
            state.commitWake = false
            return (state.ledger.takeCommits(), false)
        }
        if let commits {
            self.lastCommit = now
            if !commits.isEmpty {
                let list = Self.list(commits.map { ($0.0, $0.1) })
                defer { rd_kafka_topic_partition_list_destroy(list) }
                let error = rd_kafka_commit(handle, list, 1)
                if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                    self.logger.debug("queuing a commit failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
                }
            }
        }
        return waiting ? lastCommit + interval : nil
    }

    /// Commits `commits` and waits for the broker's answer at most `timeout`.
    private func commitBounded(_ handle: OpaquePointer, _ commits: [(KafkaPartitionKey, Int64)], timeout: Duration) {
        guard !commits.isEmpty, let queue = rd_kafka_queue_new(handle) else { return }
        defer { rd_kafka_queue_destroy(queue) }
        let list = Self.list(commits.map { ($0.0, $0.1) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let error = rd_kafka_commit_queue(handle, list, queue, nil, nil)
        guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
            self.logger.info("committing offsets failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
            return
        }
        guard let event = rd_kafka_queue_poll(queue, Int32(clamping: max(1, KafkaConfiguration.milliseconds(timeout)))) else {
            self.logger.info("committing offsets got no answer in time", metadata: [KafkaLogKey.count: "\(commits.count)"])
            return
        }
        defer { rd_kafka_event_destroy(event) }
        let result = rd_kafka_event_error(event)
        if result != RD_KAFKA_RESP_ERR_NO_ERROR {
            self.logger.info("committing offsets failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(result))"])
        }
    }

    private static func list(_ entries: [(KafkaPartitionKey, Int64?)]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(entries.count))!
        for (key, offset) in entries {
            let entry = rd_kafka_topic_partition_list_add(list, key.topic, key.partition)!
            if let offset { entry.pointee.offset = offset }
        }
        return list
    }

    // MARK: Rebalance

    private func rebalance(_ handle: OpaquePointer, _ error: rd_kafka_resp_err_t, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let keys = (0..<Int(list.pointee.cnt)).map { index in
            KafkaPartitionKey(topic: String(cString: list.pointee.elems[index].topic), partition: list.pointee.elems[index].partition)
        }
        let cooperative = rd_kafka_rebalance_protocol(handle).map { String(cString: $0) } == "COOPERATIVE"
        switch error {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            // Detach each partition's queue before the fetch starts, so no message of it
            // reaches the consumer queue.
            for key in keys {
                guard let queue = rd_kafka_queue_get_partition(handle, key.topic, key.partition) else { continue }
                rd_kafka_queue_forward(queue, nil)
                rd_kafka_queue_io_event_enable(queue, self.wake.writeEnd, "m", 1)
                let assignment = self.session.withState { $0.ledger.assign(key) }
                self.partitions.removeAll { $0.key == key }
                self.partitions.append(Assigned(key: key, queue: queue, assignment: assignment, topic: KafkaTopicName.interned(key.topic)))
            }
            if cooperative {
                if let failure = rd_kafka_incremental_assign(handle, list) { self.report(failure, "assigning") }
            } else {
                let result = rd_kafka_assign(handle, list)
                if result != RD_KAFKA_RESP_ERR_NO_ERROR { self.logger.info("assigning failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(result))"]) }
            }
            // librdkafka keeps a partition's application pause across unassign and assign: a
            // partition paused before a revoke comes back paused. Its state is set here either
            // way, or one paused while demand returned during the rebalance is never fetched.
            self.setPaused(handle, self.paused, keys)
            self.logger.debug(self.paused ? "partitions assigned, paused (no demand)" : "partitions assigned", metadata: [KafkaLogKey.partition: "\(keys)"])
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            self.revoke(handle, keys, lost: rd_kafka_assignment_lost(handle) != 0)
            if cooperative {
                if let failure = rd_kafka_incremental_unassign(handle, list) { self.report(failure, "unassigning") }
            } else {
                _ = rd_kafka_assign(handle, nil)
            }
            self.forget(keys)
        default:
            self.logger.info("rebalance failed", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
            _ = rd_kafka_assign(handle, nil)
            self.forget(keys)
        }
    }

    /// Stops taking from `keys`, gives back their messages the stage has not taken, waits for
    /// their messages in flight (at most ``KafkaConfiguration/revokeTimeout``), commits what
    /// settled, and forgets them: later settlements of them are stale.
    private func revoke(_ handle: OpaquePointer, _ keys: [KafkaPartitionKey], lost: Bool) {
        let revoked = Set(keys)
        self.session.beginRevoke(revoked)
        let deadline = ContinuousClock.now + self.configuration.revokeTimeout
        if !lost, let loop = self.loop {
            while self.session.withState({ $0.ledger.inFlight(revoked) }) > 0 {
                self.serveDeadLetters()
                let remaining = deadline - .now
                guard remaining > .zero, loop.pause(for: min(remaining, .milliseconds(20))) else { break }
            }
        }
        let commits = self.session.endRevoke(keys)
        if !lost { self.commitBounded(handle, commits, timeout: max(.milliseconds(100), deadline - .now)) }
        self.logger.debug("partitions revoked", metadata: [KafkaLogKey.partition: "\(keys)", KafkaLogKey.count: "\(commits.count)"])
    }

    /// Stops taking from `keys`: their partition queues are released.
    private func forget(_ keys: [KafkaPartitionKey]) {
        let revoked = Set(keys)
        for partition in self.partitions where revoked.contains(partition.key) { rd_kafka_queue_destroy(partition.queue) }
        self.partitions.removeAll { revoked.contains($0.key) }
        self.rotation = 0
    }

    private func report(_ failure: OpaquePointer, _ what: String) {
        self.logger.info("\(what) partitions failed", metadata: [KafkaLogKey.error: "\(String(cString: rd_kafka_error_string(failure)))"])
        rd_kafka_error_destroy(failure)
    }

    private func destroyQueues() {
        for partition in self.partitions { rd_kafka_queue_destroy(partition.queue) }
        self.partitions = []
        if let queue = self.consumerQueue { rd_kafka_queue_destroy(queue) }
        self.consumerQueue = nil
    }

    // MARK: Dead letters

    /// Serves delivery reports of dead letters (a confirmed one lets the commit pass its
    /// message) and produces the queued ones while librdkafka's queue takes them.
    private func serveDeadLetters() {
        guard !self.deadLetterQueue.isEmpty || !self.deadLettersInFlight.isEmpty else { return }
        if self.producer == nil {
            do {
                self.producer = try RDKafkaProducer(configuration: self.configuration, extra: [("linger.ms", "1")], wakeFD: self.wake.writeEnd, logger: self.logger)
            } catch {
                self.logger.info("cannot create the dead-letter producer; the failed messages stay uncommitted", metadata: [KafkaLogKey.error: "\(error)"])
                for letter in self.deadLetterQueue { self.session.deadLettered(letter, confirmed: false) }
                self.deadLetterQueue = []
                return
            }
        }
        guard let producer = self.producer else { return }
        for delivery in producer.poll() {
            guard let letter = self.deadLettersInFlight.removeValue(forKey: delivery.token) else { continue }
            if let error = delivery.error {
                self.logger.info("writing a dead letter failed; the message stays uncommitted", metadata: [KafkaLogKey.error: "\(error)"])
            }
            self.session.deadLettered(letter, confirmed: delivery.error == nil)
        }
        while let letter = self.deadLetterQueue.first {
            let token = self.nextToken
            let metadata = letter.message.metadata
            let topic = self.configuration.deadLetterTopic(for: metadata.topic)
            let error = letter.message.payload.withUnsafeBytes { value in
                if let key = metadata.key {
                    return key.withUnsafeBytes { key in
                        producer.produce(topic: topic, partition: nil, key: key, value: value, headers: letter.headers, token: token)
                    }
                }
                return producer.produce(topic: topic, partition: nil, key: nil, value: value, headers: letter.headers, token: token)
            }
            if error == RD_KAFKA_RESP_ERR__QUEUE_FULL { break }
            self.deadLetterQueue.removeFirst()
            guard error == RD_KAFKA_RESP_ERR_NO_ERROR else {
                self.logger.info("writing a dead letter failed; the message stays uncommitted", metadata: [KafkaLogKey.error: "\(RDKafkaConfig.describe(error))"])
                self.session.deadLettered(letter, confirmed: false)
                continue
            }
            self.nextToken += 1
            self.deadLettersInFlight[token] = letter
        }
    }

    /// Serves dead letters until none is pending or `deadline` passed.
    private func flushDeadLetters(until deadline: ContinuousClock.Instant) {
        while (!self.deadLetterQueue.isEmpty || !self.deadLettersInFlight.isEmpty) && ContinuousClock.now < deadline {
            self.serveDeadLetters()
            // The loop's own thread, not the cooperative pool.
            usleep(1000)
        }
        guard let handle = self.handle else { return }
        let commits = self.session.withState { $0.ledger.takeCommits() }
        self.commitBounded(handle, commits, timeout: .seconds(1))
    }
}
