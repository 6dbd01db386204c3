//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule

/// A topic and partition.
struct KafkaPartitionKey: Hashable, Sendable, CustomStringConvertible {
    var topic: String
    var partition: Int32

    var description: String { "\(self.topic)[\(self.partition)]" }
}

/// What a source took from each assigned partition and how far it may commit: per
/// partition, the highest *contiguous* settled offset + 1 (taken 1, 2, 3, 4, 5 and settled
/// 1, 2, 3, 5 commits 4).
///
/// A pure state machine (no locks, no I/O). Each assignment of a partition has its own
/// number: a settlement that names an older one (the partition was revoked, and maybe
/// assigned again, meanwhile) is stale, dropped and counted, never committed.
struct KafkaOffsetLedger: Sendable {
    /// What became of a taken message.
    enum Outcome: UInt8, Sendable {
        /// Handed to the pipeline, not settled.
        case inFlight
        /// Settled: the commit may pass it.
        case done
        /// Not settled (a `.requeue` disposition: Kafka cannot give one message back), so the
        /// commit stops before it and the group reads it again after a restart or rebalance.
        case held
        /// Failed, and being written to the dead-letter topic: in flight until confirmed.
        case deadLettering
    }

    struct Track: Sendable {
        let assignment: UInt64
        /// Offsets taken and not yet passed by the commit frontier, in order.
        var offsets: Deque<Int64> = []
        var outcomes: Deque<Outcome> = []
        /// Taken messages not settled yet (in flight or being dead-lettered).
        var inFlight = 0
        /// The offset to commit next: one past the last contiguous settled offset.
        var frontier: Int64?
        /// The last offset committed (or handed out for commit).
        var committed: Int64?

        mutating func took(_ taken: some Collection<Int64>) {
            self.offsets.append(contentsOf: taken)
            self.outcomes.append(contentsOf: repeatElement(.inFlight, count: taken.count))
            self.inFlight += taken.count
        }

        /// Settles `settling` if they were taken in `assignment` (`nil`: another one, so all
        /// of them are stale and nothing changes).
        mutating func settle(_ settling: some Collection<Int64>, as outcome: Outcome, in assignment: UInt64) -> (Int, Int)? {
            guard self.assignment == assignment else { return nil }
            return self.settle(settling, as: outcome)
        }

        /// Returns how many settled (left flight) and how many were not found (stale).
        mutating func settle(_ settling: some Collection<Int64>, as outcome: Outcome) -> (Int, Int) {
            var settled = 0
            var stale = 0
            var hint = 0
            for offset in settling {
                // Settlements mostly come in the order taken: try the slot after the last one.
                let index: Int
                if hint < self.offsets.count && self.offsets[hint] == offset {
                    index = hint
                } else if let found = KafkaOffsetLedger.index(of: offset, in: self.offsets) {
                    index = found
                } else {
                    stale += 1
                    continue
                }
                hint = index + 1
                let previous = self.outcomes[index]
                self.outcomes[index] = outcome
                if previous == .inFlight || previous == .deadLettering, outcome != .inFlight && outcome != .deadLettering {
                    self.inFlight -= 1
                    settled += 1
                }
            }
            var passed = 0
            while passed < self.outcomes.count && self.outcomes[passed] == .done { passed += 1 }
            if passed > 0 {
                self.frontier = self.offsets[passed - 1] + 1
                self.offsets.removeFirst(passed)
                self.outcomes.removeFirst(passed)
            }
            return (settled, stale)
        }
    }

    private(set) var tracks: [KafkaPartitionKey: Track] = [:]
    /// Settlements since offsets were last handed out for commit.
    private(set) var settledSinceCommit = 0
    /// Settlements dropped because their partition was revoked meanwhile.
    private(set) var staleDropped = 0
    private var nextAssignment: UInt64 = 1

    /// The partition was assigned: a new assignment number.
    mutating func assign(_ key: KafkaPartitionKey) -> UInt64 {
        let assignment = self.nextAssignment
        self.nextAssignment += 1
        self.tracks[key] = Track(assignment: assignment)
        return assignment
    }

    /// The current assignment of `key`, if assigned.
    func assignment(of key: KafkaPartitionKey) -> UInt64? { self.tracks[key]?.assignment }

    /// The source took the message at `offset` (offsets of one partition are taken in order).
    mutating func took(_ key: KafkaPartitionKey, offset: Int64) {
        self.took(key, offsets: CollectionOfOne(offset))
    }

    /// The source took these messages of one partition, in order (one lookup for the run).
    mutating func took(_ key: KafkaPartitionKey, offsets: some Collection<Int64>) {
        // In place: the dictionary's modify accessor does not copy the deques.
        self.tracks[key]?.took(offsets)
    }

    /// The message at `offset`, taken in `assignment`, ended with `outcome` (`done` or `held`),
    /// or started being dead-lettered (`deadLettering`). Returns `false` when the settlement
    /// is stale (counted, and nothing changes).
    @discardableResult
    mutating func settle(_ key: KafkaPartitionKey, offset: Int64, assignment: UInt64, as outcome: Outcome) -> Bool {
        self.settle(key, assignment: assignment, offsets: CollectionOfOne(offset), as: outcome) == 0
    }

    /// Settles a run of messages of one partition taken in `assignment` (one lookup for the
    /// run). Returns how many of them were stale (counted, and nothing changes for them).
    mutating func settle(_ key: KafkaPartitionKey, assignment: UInt64, offsets: some Collection<Int64>, as outcome: Outcome) -> Int {
        // In place (optional chaining on the dictionary's modify accessor): reading the
        // assignment through a plain lookup would copy the track's deques.
        guard let (settled, stale) = self.tracks[key]?.settle(offsets, as: outcome, in: assignment) else {
            self.staleDropped += offsets.count
            return offsets.count
        }
        self.settledSinceCommit += settled
        self.staleDropped += stale
        return stale
    }

    /// Messages of `keys` still in flight.
    func inFlight(_ keys: some Sequence<KafkaPartitionKey>) -> Int {
        keys.reduce(0) { $0 + (self.tracks[$1]?.inFlight ?? 0) }
    }

    /// The offsets of every message in flight (or being dead-lettered), every partition.
    var inFlightOffsets: [(KafkaPartitionKey, Int64)] {
        self.tracks.flatMap { key, track in
            zip(track.offsets, track.outcomes).filter { $0.1 == .inFlight || $0.1 == .deadLettering }.map { (key, $0.0) }
        }
    }

    /// Messages in flight, every partition.
    var inFlight: Int { self.tracks.values.reduce(0) { $0 + $1.inFlight } }

    /// The offsets to commit (of `keys`, or every partition): each partition whose frontier
    /// moved since its last commit. They count as committed from now on.
    mutating func takeCommits(_ keys: [KafkaPartitionKey]? = nil) -> [(KafkaPartitionKey, Int64)] {
        var commits: [(KafkaPartitionKey, Int64)] = []
        for key in keys ?? Array(self.tracks.keys) {
            guard var track = self.tracks[key], let frontier = track.frontier, frontier != track.committed else { continue }
            track.committed = frontier
            self.tracks[key] = track
            commits.append((key, frontier))
        }
        if keys == nil { self.settledSinceCommit = 0 }
        return commits
    }

    /// The partitions were revoked: forgets them. Returns how many of their messages were
    /// still in flight (their settlements will be stale).
    mutating func revoke(_ keys: some Sequence<KafkaPartitionKey>) -> Int {
        var inFlight = 0
        for key in keys {
            inFlight += self.tracks.removeValue(forKey: key)?.inFlight ?? 0
        }
        return inFlight
    }

    fileprivate static func index(of offset: Int64, in offsets: Deque<Int64>) -> Int? {
        var low = 0
        var high = offsets.count
        while low < high {
            let middle = (low + high) / 2
            if offsets[middle] < offset { low = middle + 1 } else { high = middle }
        }
        return low < offsets.count && offsets[low] == offset ? low : nil
    }
}
