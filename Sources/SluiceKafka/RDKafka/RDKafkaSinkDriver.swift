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

/// The producer of a ``KafkaSink`` on its ``ConnectionLoop``'s thread: produces each batch,
/// waits (instead of failing) while librdkafka's queue is full, and completes a batch once
/// every record's delivery report arrived.
///
/// Per record only librdkafka's own work is paid for: a record is read in place from its
/// batch (not copied out of it), the default topic's C string is made once, and a delivery
/// report finds its batch by position (batches are numbered in order), with no hashing and no
/// copy of the batch's bookkeeping.
final class RDKafkaSinkDriver: ConnectionDriver {
    /// A batch to produce and the continuation that receives each record's outcome.
    struct Batch: Sendable {
        let records: [KafkaRecord]
        let completion: CheckedContinuation<[KafkaError?], Never>
    }

    enum Command: Sendable {
        case produce(Batch)
    }

    /// A batch librdkafka is being handed or holds: the next record to hand over, how many
    /// await their delivery report, and the failures so far.
    private final class InFlight {
        let batch: Batch
        let id: UInt64
        var next = 0
        var remaining: Int
        var failures: [(index: Int, error: KafkaError)] = []

        init(_ batch: Batch, id: UInt64) {
            self.batch = batch
            self.id = id
            self.remaining = batch.records.count
        }

        /// Records the outcome of record `index`; returns whether the batch is complete.
        func finish(_ index: Int, _ error: KafkaError?) -> Bool {
            if let error { self.failures.append((index, error)) }
            self.remaining -= 1
            return self.remaining == 0
        }

        /// Resumes the sender with every record's outcome.
        func complete() {
            self.resume(otherwise: nil)
        }

        /// Resumes the sender before every report arrived: which records were delivered is
        /// not tracked, so each one without a known failure gets `error` (a sender that
        /// retries them sends some twice: at least once, never lost).
        func abandon(_ error: KafkaError) {
            self.resume(otherwise: error)
        }

        private func resume(otherwise: KafkaError?) {
            var results = [KafkaError?](repeating: otherwise, count: self.batch.records.count)
            for failure in self.failures { results[failure.index] = failure.error }
            self.batch.completion.resume(returning: results)
        }
    }

    /// Records of one batch are told apart by the low bits of their token.
    private static let indexBits: UInt64 = 24

    private let configuration: KafkaConfiguration
    private let logger: Logger
    private var producer: RDKafkaProducer?
    private let wake = RDKafkaWakePipe()
    /// The default topic's name as a C string, made once.
    private let defaultTopic: ContiguousArray<CChar>
    /// Batches by id: slot `i` holds batch `firstID + i` (`nil` once complete); leading
    /// completed slots are dropped.
    private var slots: Deque<InFlight?> = []
    private var firstID: UInt64 = 1
    /// Batches not fully handed to librdkafka yet, in order.
    private var unsent: Deque<InFlight> = []

    /// Creates the producer on the loop's thread and checks the cluster; `started` gets the
    /// outcome.
    init(configuration: KafkaConfiguration, logger: Logger, started: @Sendable (KafkaError?) -> Void) {
        self.configuration = configuration
        self.logger = logger
        self.defaultTopic = configuration.topics[0].utf8CString
        do {
            let producer = try RDKafkaProducer(configuration: configuration, wakeFD: self.wake.writeEnd, logger: logger)
            try producer.checkReachable(topics: [configuration.topics[0]], configuration: configuration)
            self.producer = producer
            started(nil)
        } catch {
            started(error)
        }
    }

    deinit {
        self.wake.close()
    }

    func handle(_ command: Command, on loop: ConnectionLoop<RDKafkaSinkDriver>) {
        switch command {
        case .produce(let batch):
            guard self.producer != nil else {
                batch.completion.resume(returning: Array(repeating: KafkaError(.shutDown, "the sink could not start"), count: batch.records.count))
                return
            }
            guard !batch.records.isEmpty else {
                batch.completion.resume(returning: [])
                return
            }
            let inFlight = InFlight(batch, id: self.firstID + UInt64(self.slots.count))
            self.slots.append(inFlight)
            self.unsent.append(inFlight)
        }
    }

    func service(on loop: ConnectionLoop<RDKafkaSinkDriver>) -> ServiceOutcome {
        guard let producer = self.producer else {
            if !loop.isStopping { loop.stop() }
            return .wait(socket: nil, timeout: nil)
        }
        self.wake.drain()
        self.complete(producer.poll())
        let full = self.produceUnsent(producer)
        if self.slots.isEmpty { return .wait(socket: self.wake.readEnd, timeout: nil) }
        // Queue full: delivery reports free room, and their arrival wakes the pipe.
        return .wait(socket: self.wake.readEnd, timeout: full ? .milliseconds(5) : .milliseconds(100))
    }

    func close() {
        guard let producer = self.producer else { return }
        let deadline = ContinuousClock.now + self.configuration.closeTimeout
        while !self.slots.isEmpty && ContinuousClock.now < deadline {
            _ = self.produceUnsent(producer)
            self.complete(producer.poll(timeoutMilliseconds: 10))
        }
        for case let inFlight? in self.slots {
            inFlight.abandon(KafkaError(.shutDown, "the sink closed before the broker confirmed the record"))
        }
        self.slots = []
        self.unsent = []
        self.producer = nil
    }

    /// Hands unsent records to librdkafka until its queue is full. Returns whether it was.
    private func produceUnsent(_ producer: RDKafkaProducer) -> Bool {
        while let inFlight = self.unsent.first {
            let full = inFlight.batch.records.withUnsafeBufferPointer { records in
                self.defaultTopic.withUnsafeBufferPointer { defaultTopic in
                    self.produce(records, of: inFlight, defaultTopic: defaultTopic.baseAddress!, producer)
                }
            }
            if full { return true }
            self.unsent.removeFirst()
        }
        return false
    }

    /// Hands `inFlight`'s records from its next one on to librdkafka, read in place. Returns
    /// whether librdkafka's queue was full before the last.
    private func produce(
        _ records: UnsafeBufferPointer<KafkaRecord>,
        of inFlight: InFlight,
        defaultTopic: UnsafePointer<CChar>,
        _ producer: RDKafkaProducer
    ) -> Bool {
        var index = inFlight.next
        defer { inFlight.next = index }
        while index < records.count {
            let token = inFlight.id << Self.indexBits | UInt64(index)
            let error = records[index].value.withUnsafeBytes { value in
                let key = records[index].key
                if let key {
                    return key.withUnsafeBytes { key in
                        Self.produce(records[index], to: producer, key: key, value: value, defaultTopic: defaultTopic, token: token)
                    }
                }
                return Self.produce(records[index], to: producer, key: nil, value: value, defaultTopic: defaultTopic, token: token)
            }
            if error == RD_KAFKA_RESP_ERR__QUEUE_FULL { return true }
            if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                let topic = records[index].topic ?? self.configuration.topics[0]
                self.finish(inFlight, index, KafkaError(.deliveryFailed, "producing to \(topic) failed: \(RDKafkaConfig.describe(error))"))
            }
            index += 1
        }
        return false
    }

    private static func produce(
        _ record: borrowing KafkaRecord,
        to producer: RDKafkaProducer,
        key: UnsafeRawBufferPointer?,
        value: UnsafeRawBufferPointer,
        defaultTopic: UnsafePointer<CChar>,
        token: UInt64
    ) -> rd_kafka_resp_err_t {
        if let topic = record.topic {
            return producer.produce(topic: topic, partition: record.partition, key: key, value: value, headers: record.headers, token: token)
        }
        return producer.produce(topic: defaultTopic, partition: record.partition, key: key, value: value, headers: record.headers, token: token)
    }

    /// Records delivery reports; consecutive reports of one batch look it up once.
    private func complete(_ deliveries: [RDKafkaProducer.Delivery]) {
        var current: InFlight?
        for delivery in deliveries {
            let id = delivery.token >> Self.indexBits
            if current?.id != id {
                let slot = id &- self.firstID
                current = id >= self.firstID && slot < UInt64(self.slots.count) ? self.slots[Int(slot)] : nil
            }
            guard let inFlight = current else { continue }
            self.finish(inFlight, Int(delivery.token & ((1 << Self.indexBits) - 1)), delivery.error)
        }
    }

    private func finish(_ inFlight: InFlight, _ index: Int, _ error: KafkaError?) {
        guard inFlight.finish(index, error) else { return }
        inFlight.complete()
        self.slots[Int(inFlight.id - self.firstID)] = nil
        while let first = self.slots.first, first == nil {
            self.slots.removeFirst()
            self.firstID += 1
        }
    }

    /// The most records one batch may hold (their index lives in the token's low bits).
    static var maximumBatch: Int { 1 << Int(Self.indexBits) }
}
