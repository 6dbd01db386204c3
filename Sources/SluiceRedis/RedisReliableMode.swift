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

/// Reliable-list mode (at least once): a script moves n items atomically into the consumer's
/// processing list, `BLMOVE` waits while the list is empty; settling removes them from it by
/// position; a liveness key and a reaper return a dead consumer's items.
///
/// Settling is by position, never by value: the source knows the order in which it moved
/// items into its processing list (``RedisPosition``), so a contiguous run of settled items at
/// the list's head leaves with one `LTRIM` (or `LPOP n` when some are pushed elsewhere), and
/// an item settled behind an open one waits for it (like Kafka's contiguous offsets). Every
/// script is O(its own batch) (see ``RedisScripts``), and a retried one is idempotent.
struct RedisReliableMode: RedisMode {
    let configuration: RedisConfiguration
    let keys: RedisKeys
    let ledger = RedisPositionLedger()

    /// Items per settle, give-back or reaper script.
    static let chunk = 1000

    var keyType: String { "list" }
    var acknowledgementsNeedCommands: Bool { true }

    /// Registers the consumer, refreshes its liveness, and deals with its own processing list
    /// first: what an earlier run with this consumer name left there (it crashed) goes back to
    /// the head of the list, in order, and a new epoch starts, so every position is known.
    func prepare(_ context: HiredisContext) throws(RedisError) {
        let register = RedisCommand("SADD", self.keys.registry, self.configuration.consumer)
        try context.command(register) { _ throws(RedisError) in }
        try self.refreshLiveness(context)
        // Nothing was read in this run yet, so nothing leaves the window.
        try self.reset(context)
        _ = try self.reap(context)
    }

    /// Starts a new epoch: scripts of the old one change nothing from now on; then returns the
    /// whole processing list to the head of the list (in chunks) and zeroes the positions.
    /// Returns what the ledger held settled (it leaves the read window now).
    @discardableResult
    func reset(_ context: HiredisContext) throws(RedisError) -> RedisRelease {
        var next = RedisCommand("EVAL")
        next.append(RedisScripts.nextEpoch)
        next.append(1)
        next.append(self.keys.positions)
        next.append(self.ledger.epoch)
        let epoch = try context.command(next) { reply throws(RedisError) in reply.integer }
        try self.giveBackAll(self.keys.processing, context)
        var zero = RedisCommand("HSET")
        zero.append(self.keys.positions)
        for field in ["moved", "0", "trimmed", "0"] { zero.append(field) }
        try context.command(zero) { _ throws(RedisError) in }
        return self.ledger.reset(epoch: epoch)
    }

    /// Returns all of `list` to the head of the source, one bounded script per chunk.
    @discardableResult
    private func giveBackAll(_ list: String, _ context: HiredisContext) throws(RedisError) -> Int {
        var total = 0
        while true {
            let moved = try context.command(self.keys.giveBack(from: list, limit: Self.chunk)) { reply throws(RedisError) in reply.integer }
            total += moved
            if moved < Self.chunk { return total }
        }
    }

    func startHousekeeping(on acks: RedisConnection, logger: Logger) {
        acks.every(self.configuration.livenessTTL / 3) { link in
            _ = try? link.perform { context throws(RedisError) in try self.refreshLiveness(context) }
        }
        acks.every(self.configuration.reapInterval) { link in
            do {
                let moved = try link.perform { context throws(RedisError) in try self.reap(context) }
                if moved > 0 {
                    logger.info("returned the items of dead consumers to the list", metadata: [RedisLogKey.count: "\(moved)"])
                }
            } catch {
                logger.debug("reaper failed", metadata: [RedisLogKey.error: "\(error)"])
            }
        }
    }

    private func refreshLiveness(_ context: HiredisContext) throws(RedisError) {
        var set = RedisCommand("SET")
        set.append(self.keys.alive)
        set.append("1")
        set.append("PX")
        set.append(self.configuration.livenessTTL.inMilliseconds)
        try context.command(set) { _ throws(RedisError) in }
    }

    /// The reaper: for each registered consumer other than this one whose liveness key is
    /// gone, returns its processing list to the head of the list (one bounded script per
    /// chunk) and forgets it. Returns how many items moved.
    private func reap(_ context: HiredisContext) throws(RedisError) -> Int {
        let names = try context.command(RedisCommand("SMEMBERS", self.keys.registry)) { reply throws(RedisError) in
            reply.kind == .array ? (0..<reply.count).map { reply[$0].text } : []
        }
        var moved = 0
        for name in names where name != self.configuration.consumer {
            let alive = try context.command(RedisCommand("EXISTS", self.keys.alivePrefix + name)) { reply throws(RedisError) in reply.integer }
            guard alive == 0 else { continue }
            moved += try self.giveBackAll(self.keys.processingPrefix + name, context)
            let forget = RedisCommand("SREM", self.keys.registry, name)
            let positions = RedisCommand("DEL", self.keys.positionsPrefix + name)
            try context.pipeline([forget, positions]) { _, _ throws(RedisError) in }
        }
        return moved
    }

    func makeReader(session: RedisSession) -> any RedisModeReader {
        RedisSingleReader(
            session: session,
            source: Reader(mode: self, blockSeconds: self.configuration.blockSecondsText, byteBudget: self.configuration.maxReadBytes)
        )
    }

    /// Marks each message's position settled; every contiguous settled run at the head of the
    /// processing list becomes one ``RedisScripts/trim`` (at most ``chunk`` items), which
    /// releases its items from the window once answered. Messages of an earlier epoch (the
    /// list was reset since: they are back in the list) leave the window at once.
    func settleWork(_ settlements: [Settlement<RedisMetadata>]) -> RedisSettleWork {
        var work = RedisSettleWork()
        let (epoch, runs) = self.ledger.settle(settlements, immediate: &work.immediate)
        for run in runs {
            let command = self.keys.positional(RedisScripts.trim, "\(epoch)", "\(run.start)", run.operations)
            work.append(command, releasing: run.release)
        }
        return work
    }

    /// Empties the processing list from its tail: what is still open (read and not settled,
    /// among it what never reached the stage) goes back to the head of the list in its order;
    /// what was settled behind an open item is removed (or pushed where its disposition
    /// says). Then forgets this consumer.
    func finish(unemitted: [[Message<RedisMetadata>]], on acks: RedisConnection, logger: Logger) async {
        let keys = self.keys
        let consumer = self.configuration.consumer
        let tails = self.ledger.tails(chunk: Self.chunk)
        _ = try? await acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                var exact = true
                for tail in tails {
                    let command = keys.positional(RedisScripts.untail, "\(tails.epoch)", "\(tail.top)", tail.operations)
                    let removed = try context.command(command) { reply throws(RedisError) in reply.integer }
                    if removed < 0 {
                        exact = false
                        break
                    }
                }
                if !exact {
                    // Not where the positions say (Redis lost writes): give back all of it.
                    _ = try self.giveBackAll(keys.processing, context)
                }
                let given = tails.open
                if given > 0 {
                    logger.debug("gave unfinished items back to the list", metadata: [RedisLogKey.count: "\(given)"])
                }
                let forget = RedisCommand("SREM", keys.registry, consumer)
                let delete = RedisCommand("DEL", keys.alive, keys.positions)
                try context.pipeline([forget, delete]) { _, _ throws(RedisError) in }
            }
        }
    }

    /// Moves up to `count` items into the processing list with one script; on an empty list
    /// waits with `BLMOVE key key LEFT LEFT` (which wakes as soon as an item arrives and
    /// leaves the list as it is), then moves. Used only on the read connection's thread.
    final class Reader: RedisBatchSource {
        let mode: RedisReliableMode
        let keys: RedisKeys
        let blockSeconds: String
        let byteBudget: Int
        /// Whether the read connection broke since the last read.
        private var resync = false

        init(mode: RedisReliableMode, blockSeconds: String, byteBudget: Int) {
            self.mode = mode
            self.keys = mode.keys
            self.blockSeconds = blockSeconds
            self.byteBudget = byteBudget
        }

        func connectionBroke() {
            self.resync = true
        }

        func read(_ context: HiredisContext, count: Int, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>] {
            if self.resync {
                try self.synchronize(session)
                self.resync = false
            }
            let moved = try self.move(context, count: count)
            guard let moved else {
                // The positions are not what this consumer knows: Redis lost writes.
                self.resync = true
                return []
            }
            if !moved.isEmpty { return moved }
            let wait = RedisCommand("BLMOVE", self.keys.source, self.keys.source, "LEFT", "LEFT", self.blockSeconds)
            guard session.beginBlocking() else { return [] }
            let arrived = try { () throws(RedisError) -> Bool in
                defer { session.endBlocking() }
                return try context.command(wait) { reply throws(RedisError) in reply.kind == .string }
            }()
            guard arrived else { return [] }
            return try self.move(context, count: count) ?? []
        }

        /// The move script; `nil` when the positions hash is at another epoch.
        private func move(_ context: HiredisContext, count: Int) throws(RedisError) -> [Message<RedisMetadata>]? {
            var move = RedisCommand("EVAL")
            move.append(RedisScripts.move)
            move.append(3)
            move.append(self.keys.source)
            move.append(self.keys.processing)
            move.append(self.keys.positions)
            let ledger = self.mode.ledger
            move.append(ledger.epoch)
            move.append(count)
            move.append(self.byteBudget)
            return try context.command(move) { reply throws(RedisError) -> [Message<RedisMetadata>]? in
                guard reply.kind == .array else { return reply.kind == .integer ? nil : [] }
                guard reply.count > 0 else { return [] }
                let first = ledger.moved(reply.count)
                return RedisListPopper.messages(reply, key: self.keys.source, first: first)
            }
        }

        /// After the read connection broke: checks the positions against what this consumer
        /// knows. A move whose reply was lost left items at the tail of the processing list
        /// beyond the last position handed out: they go back to the head of the list (at most
        /// one read's worth). If Redis lost writes (another epoch, or fewer items moved or
        /// trimmed than this consumer knows of), the list is reset: everything in it goes back
        /// and a new epoch starts (what is in flight is delivered again: at least once).
        ///
        /// Runs on the acknowledgement connection between settle batches, so every trim sent
        /// so far was answered and none runs meanwhile, and this thread waits, so no move runs
        /// either: the comparison is exact.
        private func synchronize(_ session: RedisSession) throws(RedisError) {
            let mode = self.mode
            let keys = self.keys
            let release = try session.acks.runBlocking { link throws(RedisError) -> RedisRelease in
                try link.perform { context throws(RedisError) -> RedisRelease in
                    let known = mode.ledger.position
                    let fields = RedisCommand("HMGET", keys.positions, "epoch", "moved", "trimmed")
                    let (epoch, moved, trimmed) = try context.command(fields) { reply throws(RedisError) in
                        reply.kind == .array && reply.count == 3
                            ? (Int(reply[0].text) ?? -1, Int(reply[1].text) ?? 0, Int(reply[2].text) ?? 0) : (-1, 0, 0)
                    }
                    if epoch == known.epoch && moved >= known.moved && trimmed == known.trimmed {
                        let orphans = moved - known.moved
                        guard orphans > 0 else { return RedisRelease() }
                        let operations = String(repeating: "k", count: orphans)
                        let command = keys.positional(RedisScripts.untail, "\(epoch)", "\(moved)", operations)
                        let removed = try context.command(command) { reply throws(RedisError) in reply.integer }
                        if removed >= 0 {
                            session.logger.info("returned items whose read reply was lost to the list", metadata: [RedisLogKey.count: "\(orphans)"])
                            return RedisRelease()
                        }
                    }
                    session.logger.info("the processing list is not where this consumer left it (Redis lost writes); giving it back")
                    return try mode.reset(context)
                }
            }
            if release.count > 0 || release.bytes > 0 { session.releaseWindow(count: release.count, bytes: release.bytes) }
        }
    }
}

/// What a reliable source knows about its processing list: the epoch, how many items it
/// moved in (whose reply arrived), and which positions were settled and not yet trimmed from
/// the head. Shared by the read connection (moves) and the acknowledgement connection
/// (settlements, trims); every access is one short critical section.
final class RedisPositionLedger: Sendable {
    /// How a position was settled.
    struct Mark: Sendable {
        /// `a`, `x`, `r` or `d` (see ``RedisScripts/trim``).
        var operation: UInt8
        var bytes: Int
    }

    /// A contiguous settled run at the head of the processing list.
    struct Run {
        var start: Int
        var operations: String
        var release: RedisRelease
    }

    /// A chunk of the processing list's tail, for ``RedisScripts/untail``.
    struct Tail {
        var top: Int
        var operations: String
    }

    /// The chunks that empty the processing list from its tail.
    struct Tails: Sequence {
        var epoch: Int
        var chunks: [Tail]
        /// How many of the items are open (given back).
        var open: Int

        func makeIterator() -> IndexingIterator<[Tail]> { self.chunks.makeIterator() }
    }

    private struct State {
        var epoch = 0
        var moved = 0
        var run = ContiguousSettlement<Mark>()
    }

    private let state = Mutex(State())

    /// The current epoch.
    var epoch: Int { self.state.withLock { $0.epoch } }

    /// The epoch, the items moved in, and the first position not trimmed.
    var position: (epoch: Int, moved: Int, trimmed: Int) {
        self.state.withLock { ($0.epoch, $0.moved, $0.run.start) }
    }

    /// A new epoch with an empty processing list; returns what was settled and not trimmed.
    func reset(epoch: Int) -> RedisRelease {
        self.state.withLock { state in
            state.epoch = epoch
            state.moved = 0
            var release = RedisRelease()
            for mark in state.run.reset(to: 0) {
                release.count += 1
                release.bytes += mark.bytes
            }
            return release
        }
    }

    /// `count` items were moved in: returns the position of the first.
    func moved(_ count: Int) -> RedisPosition {
        self.state.withLock { state in
            defer { state.moved += count }
            return RedisPosition(epoch: state.epoch, index: state.moved)
        }
    }

    /// Marks the settlements' positions, adding to `immediate` what needs no command, and
    /// takes the contiguous settled runs at the head (chunks of ``RedisReliableMode/chunk``).
    func settle(_ settlements: [Settlement<RedisMetadata>], immediate: inout RedisRelease) -> (epoch: Int, runs: [Run]) {
        self.state.withLock { state in
            func mark(_ message: Message<RedisMetadata>, _ operation: Character) {
                guard let position = message.metadata.position, position.epoch == state.epoch else {
                    immediate.add(message)
                    return
                }
                state.run.settle(position.index, Mark(operation: operation.asciiValue!, bytes: message.metadata.value.count))
            }
            for settlement in settlements {
                for message in settlement.acknowledged { mark(message, "a") }
                for (message, disposition) in settlement.failed {
                    mark(message, disposition == .requeue ? "r" : disposition == .deadLetter ? "d" : "x")
                }
            }
            var runs: [Run] = []
            while let (start, marks) = state.run.takeRun(max: RedisReliableMode.chunk) {
                var release = RedisRelease()
                var operations: [UInt8] = []
                operations.reserveCapacity(marks.count)
                for mark in marks {
                    operations.append(mark.operation)
                    release.count += 1
                    release.bytes += mark.bytes
                }
                runs.append(Run(start: start, operations: String(decoding: operations, as: UTF8.self), release: release))
            }
            return (state.epoch, runs)
        }
    }

    /// The chunks (tail first) that empty the processing list: positions from the last moved
    /// down to the first not trimmed, each open one `k` (back to the head of the list), each
    /// settled one as it was settled.
    func tails(chunk: Int) -> Tails {
        self.state.withLock { state in
            var chunks: [Tail] = []
            var open = 0
            var top = state.moved
            while top > state.run.start {
                let bottom = max(state.run.start, top - chunk)
                var operations: [UInt8] = []
                operations.reserveCapacity(top - bottom)
                for position in stride(from: top - 1, through: bottom, by: -1) {
                    if let mark = state.run.mark(at: position) {
                        operations.append(mark.operation)
                    } else {
                        operations.append(UInt8(ascii: "k"))
                        open += 1
                    }
                }
                chunks.append(Tail(top: top, operations: String(decoding: operations, as: UTF8.self)))
                top = bottom
            }
            return Tails(epoch: state.epoch, chunks: chunks, open: open)
        }
    }
}
