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
final class RDKafkaSinkDriver: ConnectionDriver {
    /// A batch to produce and the continuation that receives each record's outcome.
    struct Batch: Sendable {
        let records: [KafkaRecord]
        let completion: CheckedContinuation<[KafkaError?], Never>
    }

    enum Command: Sendable {
        case produce(Batch)
    }

    private struct Pending {
        let batch: Batch
        var results: [KafkaError?]
        var remaining: Int
    }

    /// Records of one batch are told apart by the low bits of their token.
    private static let indexBits: UInt64 = 24

    private let configuration: KafkaConfiguration
    private let logger: Logger
    private var producer: RDKafkaProducer?
    private let wake = RDKafkaWakePipe()
    private var pending: [UInt64: Pending] = [:]
    /// Batches not fully handed to librdkafka yet: (id, next index).
    private var unsent: Deque<(UInt64, Int)> = []
    private var nextBatch: UInt64 = 1

    /// Creates the producer on the loop's thread and checks the cluster; `started` gets the
    /// outcome.
    init(configuration: KafkaConfiguration, logger: Logger, started: @Sendable (KafkaError?) -> Void) {
        self.configuration = configuration
        self.logger = logger
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
            let id = self.nextBatch
            self.nextBatch += 1
            self.pending[id] = Pending(batch: batch, results: Array(repeating: nil, count: batch.records.count), remaining: batch.records.count)
            self.unsent.append((id, 0))
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
        if self.pending.isEmpty { return .wait(socket: self.wake.readEnd, timeout: nil) }
        // Queue full: delivery reports free room, and their arrival wakes the pipe.
        return .wait(socket: self.wake.readEnd, timeout: full ? .milliseconds(5) : .milliseconds(100))
    }

    func close() {
        guard let producer = self.producer else { return }
        let deadline = ContinuousClock.now + self.configuration.closeTimeout
        while !self.pending.isEmpty && ContinuousClock.now < deadline {
            _ = self.produceUnsent(producer)
            self.complete(producer.poll(timeoutMilliseconds: 10))
        }
        for (_, pending) in self.pending {
            var results = pending.results
            for index in results.indices where results[index] == nil && pending.remaining > 0 {
                results[index] = KafkaError(.shutDown, "the sink closed before the broker confirmed the record")
            }
            pending.batch.completion.resume(returning: results)
        }
        self.pending = [:]
        self.producer = nil
    }

    /// Hands unsent records to librdkafka until its queue is full. Returns whether it was.
    private func produceUnsent(_ producer: RDKafkaProducer) -> Bool {
        let defaultTopic = self.configuration.topics[0]
        while let (id, start) = self.unsent.first {
            guard let records = self.pending[id]?.batch.records else {
                self.unsent.removeFirst()
                continue
            }
            var index = start
            while index < records.count {
                let record = records[index]
                let token = id << Self.indexBits | UInt64(index)
                let error = record.value.withUnsafeBytes { value in
                    if let key = record.key {
                        return key.withUnsafeBytes { key in
                            producer.produce(topic: record.topic ?? defaultTopic, partition: record.partition, key: key, value: value, headers: record.headers, token: token)
                        }
                    }
                    return producer.produce(topic: record.topic ?? defaultTopic, partition: record.partition, key: nil, value: value, headers: record.headers, token: token)
                }
                if error == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    self.unsent[0] = (id, index)
                    return true
                }
                if error != RD_KAFKA_RESP_ERR_NO_ERROR {
                    self.finish(id: id, index: index, KafkaError(.deliveryFailed, "producing to \(record.topic ?? defaultTopic) failed: \(RDKafkaConfig.describe(error))"))
                }
                index += 1
            }
            self.unsent.removeFirst()
        }
        return false
    }

    private func complete(_ deliveries: [RDKafkaProducer.Delivery]) {
        for delivery in deliveries {
            self.finish(id: delivery.token >> Self.indexBits, index: Int(delivery.token & ((1 << Self.indexBits) - 1)), delivery.error)
        }
    }

    private func finish(id: UInt64, index: Int, _ error: KafkaError?) {
        guard var pending = self.pending.removeValue(forKey: id) else { return }
        pending.results[index] = error
        pending.remaining -= 1
        if pending.remaining == 0 {
            pending.batch.completion.resume(returning: pending.results)
        } else {
            self.pending[id] = pending
        }
    }

    /// The most records one batch may hold (their index lives in the token's low bits).
    static var maximumBatch: Int { 1 << Int(Self.indexBits) }
}
