//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import Synchronization

/// What the sources given these counters took, settled and gave back, summed over every
/// source (for tests and benchmarks: a Kafka broker does not know what a consumer fetched
/// but has not committed).
@_spi(Internal)
public final class KafkaSourceCounters: Sendable {
    private struct State {
        var taken = 0
        var settled = 0
        var takenBytes = 0
        var settledBytes = 0
        var stale = 0
        var givenBack = 0
        var revocations = 0
        var headerParses = 0
        /// librdkafka's own count of messages received from the brokers, per client.
        var received: [ObjectIdentifier: Int] = [:]
        /// The payload bytes librdkafka's partition queues hold, per client, as last reported.
        var queued: [ObjectIdentifier: Int] = [:]
        /// The most payload bytes one client's partition queues were seen to hold.
        var peakQueued = 0
        /// One past the highest offset taken, per partition.
        var reached: [KafkaPartitionKey: Int64] = [:]
        /// The offsets taken and not given back, per partition.
        var kept: [KafkaPartitionKey: Set<Int64>] = [:]
    }

    private let state = Mutex(State())
    private let tracksOffsets: Bool

    /// Creates counters at zero.
    ///
    /// - Parameter tracksOffsets: Whether to keep every offset taken (for ``kept`` and
    ///   ``reached``); a benchmark that measures memory over a million messages turns it off.
    public init(tracksOffsets: Bool = true) {
        self.tracksOffsets = tracksOffsets
    }

    func took(_ messages: [Message<KafkaMetadata>]) {
        self.state.withLock { state in
            state.taken += messages.count
            for message in messages { state.takenBytes += Int(message.metadata.size) }
            guard self.tracksOffsets else { return }
            for message in messages {
                let key = KafkaPartitionKey(topic: message.metadata.topic, partition: message.metadata.partition)
                state.reached[key] = max(state.reached[key] ?? 0, message.metadata.offset + 1)
                state.kept[key, default: []].insert(message.metadata.offset)
            }
        }
    }

    func settled(_ count: Int, bytes: Int, stale: Int) {
        self.state.withLock { state in
            state.settled += count
            state.settledBytes += bytes
            state.stale += stale
        }
    }

    /// These messages were given back to the broker (not committed: it delivers them again).
    func gaveBack(_ offsets: [(KafkaPartitionKey, Int64)]) {
        self.state.withLock { state in
            state.givenBack += offsets.count
            guard self.tracksOffsets else { return }
            for (key, offset) in offsets { state.kept[key]?.remove(offset) }
        }
    }

    /// librdkafka parsed the headers of `count` records (the rest were proven headerless).
    func parsedHeaders(_ count: Int) {
        self.state.withLock { $0.headerParses += count }
    }

    /// A revoke of some of the sources' partitions began.
    func revokeBegan() {
        self.state.withLock { $0.revocations += 1 }
    }

    /// The consumer `client` reported in its statistics that it received `count` messages
    /// from the brokers so far.
    func received(_ count: Int, by client: ObjectIdentifier) {
        self.state.withLock { $0.received[client] = count }
    }

    /// The consumer `client` reported in its statistics that its partition queues hold
    /// `bytes` of payload.
    func queued(_ bytes: Int, by client: ObjectIdentifier) {
        self.state.withLock { state in
            state.queued[client] = bytes
            state.peakQueued = max(state.peakQueued, bytes)
        }
    }

    /// Messages taken from librdkafka (a message taken again after a restart counts again).
    public var taken: Int { self.state.withLock { $0.taken } }
    /// Messages settled by the pipelines.
    public var settled: Int { self.state.withLock { $0.settled } }
    /// Messages librdkafka fetched from the brokers (its prefetch included), summed over the
    /// sources' consumers, as of their last statistics (only with `statistics.interval.ms`
    /// set in ``KafkaConfiguration/properties``; 0 without).
    public var fetched: Int { self.state.withLock { $0.received.values.reduce(0, +) } }
    /// The payload bytes librdkafka's partition queues held (its prefetch), summed over the
    /// sources' consumers, as of their last statistics (only with `statistics.interval.ms`).
    public var queuedBytes: Int { self.state.withLock { $0.queued.values.reduce(0, +) } }
    /// The most payload bytes one consumer's partition queues held in any of its statistics.
    public var peakQueuedBytes: Int { self.state.withLock { $0.peakQueued } }
    /// Records taken whose headers librdkafka parsed: those whose layout did not prove that
    /// they have none (a v2 record whose header count is 0 is read without librdkafka).
    public var headerParses: Int { self.state.withLock { $0.headerParses } }
    /// How many revokes began (each takes one or more partitions away).
    public var revocations: Int { self.state.withLock { $0.revocations } }
    /// Settlements dropped because their partition had been revoked.
    public var staleSettlements: Int { self.state.withLock { $0.stale } }
    /// Messages taken and neither settled nor given back (not emitted, or left unsettled
    /// when a source closed).
    public var unsettled: Int { self.state.withLock { $0.taken - $0.settled - $0.givenBack } }
    /// Payload bytes taken and not settled (messages given back at a revoke or close still
    /// count: read it while no partition was revoked).
    public var unsettledBytes: Int { self.state.withLock { $0.takenBytes - $0.settledBytes } }
    /// The number of distinct messages taken and not given back: what the broker no longer
    /// holds for the group (settled, or still in a pipeline). 0 unless offsets are tracked.
    public var kept: Int { self.state.withLock { $0.kept.values.reduce(0) { $0 + $1.count } } }
    /// The number of distinct messages taken so far, assuming every partition's offsets start
    /// at 0 and have no gaps (a fresh topic): the sum of one past the highest offset taken.
    /// 0 unless offsets are tracked.
    public var reached: Int64 { self.state.withLock { $0.reached.values.reduce(0, +) } }
}
