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

#if canImport(Glibc)
import Glibc
#endif

/// One running source: its two connections (reads, blocking ones among them;
/// acknowledgements and housekeeping), its mode, its read credit and what it read for its
/// stage, and its settler.
final class RedisSession: Sendable {
    let configuration: RedisConfiguration
    let logger: Logger
    let keys: RedisKeys
    let mode: any RedisMode
    /// Reads, blocking ones among them (`LPOP`/`BLMPOP`, `BLMOVE`, `XREADGROUP … BLOCK`).
    let reads: RedisConnection
    /// Acknowledgements, liveness refresh, reaper.
    let acks: RedisConnection
    let settler: RedisSettler

    private let fetch: Fetch
    private let stage = Mutex<StageHandle<RedisSourceStage>?>(nil)
    private let readClientID: ReadClientID

    /// The read credit, and what was read for the stage.
    private struct FetchState {
        var credit: ReadCredit
        /// Batches read and not yet taken by the stage. They stay here until the stage takes
        /// them, so a batch whose `fetched` note never reaches the stage (it ended first) is
        /// not lost: ``RedisSession/shutdown()`` gives it back.
        var outbox: [[Message<RedisMetadata>]] = []
        /// Whether a `fetched` note is on its way to the stage (one note covers every batch
        /// in the outbox).
        var notified = false
        /// Whether the stage was told that reads ended after a drain.
        var toldStopped = false
        /// Whether a blocking command is (about to be) waiting for its reply.
        var blocking = false
        /// The most items the next read asks for: ``RedisConfiguration/batchSize``, or fewer
        /// when the largest item of the last read says that a full read would exceed
        /// ``RedisConfiguration/maxReadBytes`` (list and stream replies cannot be cut by
        /// bytes in Redis; reliable mode's move script also stops at the budget).
        var readCap: Int
    }

    /// The fetch state, shared with the settler's callback.
    private final class Fetch: Sendable {
        let state: Mutex<FetchState>
        init(_ state: FetchState) { self.state = Mutex(state) }
    }

    /// The read connection's `CLIENT ID` (-1 before it connected), so that the other
    /// connection can end a blocking read early.
    private final class ReadClientID: Sendable {
        let value = Atomic<Int>(-1)
    }

    /// A session whose read window is ``RedisConfiguration/maxInFlight``, or `window` (the
    /// pipeline's) when that is `nil`.
    init(configuration: RedisConfiguration, window: Int, logger: Logger) {
        var logger = logger
        logger[metadataKey: RedisLogKey.address] = "\(configuration.address)"
        logger[metadataKey: RedisLogKey.key] = "\(configuration.key)"
        logger[metadataKey: RedisLogKey.mode] = "\(configuration.mode)"
        logger[metadataKey: RedisLogKey.consumer] = "\(configuration.consumer)"
        self.configuration = configuration
        self.logger = logger
        self.keys = RedisKeys(configuration)
        self.mode = configuration.makeMode(keys: self.keys)
        let readClientID = ReadClientID()
        self.readClientID = readClientID
        self.fetch = Fetch(
            FetchState(
                credit: ReadCredit(
                    window: ReadCredit.Window(count: configuration.maxInFlight ?? max(1, window), bytes: configuration.maxInFlightBytes),
                    limit: configuration.limit
                ),
                // Until the first items show their size, a read asks for few: a full first
                // read of large items could be one reply of gigabytes.
                readCap: min(configuration.batchSize, 64)
            )
        )
        self.reads = RedisConnection(
            name: "sluice-redis-read",
            configuration: configuration,
            blocking: true,
            replyArena: true,
            logger: logger
        ) { context throws(RedisError) in
            let id = try context.command(RedisCommand("CLIENT", "ID")) { reply throws(RedisError) in reply.integer }
            readClientID.value.store(id, ordering: .relaxed)
        }
        let acks = RedisConnection(name: "sluice-redis-ack", configuration: configuration, blocking: false, logger: logger)
        self.acks = acks
        let fetch = self.fetch
        let reads = self.reads
        self.settler = RedisSettler(mode: self.mode, acks: acks, logger: logger) { count, bytes in
            if fetch.state.withLock({ $0.credit.settled(count: count, bytes: bytes) }) == .wakeReader { reads.wake() }
        }
    }

    /// `count` items of `bytes` payload bytes left the read window without a settlement (the
    /// reliable processing list was reset: they are back in the list).
    func releaseWindow(count: Int, bytes: Int) {
        if self.fetch.state.withLock({ $0.credit.settled(count: count, bytes: bytes) }) == .wakeReader { self.reads.wake() }
    }

    // MARK: Start

    /// Connects both connections and prepares the mode (type check, consumer group, own
    /// unfinished items, reaper, liveness refresh).
    func start() async throws(RedisError) {
        try await self.reads.run { link throws(RedisError) in
            _ = try link.connected()
        }
        let keys = self.keys
        let mode = self.mode
        let configuration = self.configuration
        try await self.acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                let found = try context.command(RedisCommand("TYPE", keys.source)) { reply throws(RedisError) in reply.text }
                guard found == "none" || found == mode.keyType else {
                    throw RedisError(
                        .wrongType,
                        "key \"\(keys.source)\" holds a \(found), but mode \(configuration.mode) reads a \(mode.keyType); "
                            + "use another key or mode=\(found == "stream" ? "stream" : "list or reliable")"
                    )
                }
                try mode.prepare(context)
            }
        }
        self.mode.startHousekeeping(on: self.acks, logger: self.logger)
        self.reads.serve { [self] in
            let reader = self.mode.makeReader(session: self)
            return { link in reader.step(link) }
        }
    }

    // MARK: The stage's side

    func attach(_ handle: StageHandle<RedisSourceStage>) {
        self.stage.withLock { $0 = handle }
    }

    private func post(_ info: RedisSourceInfo) {
        let handle = self.stage.withLock { $0 }
        handle?.send(info)
    }

    /// The stage got `demand` more: the read connection reads it (never more).
    func request(_ demand: Int) {
        if self.fetch.state.withLock({ $0.credit.request(demand) }) == .wakeReader { self.reads.wake() }
    }

    /// Stop reading (the stage then takes what was read with ``takeFetched()``).
    func drain() {
        let blocking = self.fetch.state.withLock { state in
            _ = state.credit.drain()
            return state.blocking
        }
        self.endReads(blocking: blocking)
    }

    /// The stage ended: stop reading for good.
    func stopReading() {
        let blocking = self.fetch.state.withLock { state in
            _ = state.credit.stop()
            return state.blocking
        }
        self.endReads(blocking: blocking)
    }

    /// Wakes the reader, and ends a blocking read now rather than after its timeout: from the
    /// acknowledgement connection, `CLIENT UNBLOCK` makes it answer as after its timeout
    /// (nothing read is lost). The command may reach Redis just before the blocking read it
    /// is meant for, so it is sent again, briefly, while the read still waits.
    private func endReads(blocking: Bool) {
        self.reads.wake()
        guard blocking else { return }
        let id = self.readClientID.value.load(ordering: .relaxed)
        guard id >= 0 else { return }
        let fetch = self.fetch
        self.acks.enqueue { link in
            let unblock = RedisCommand("CLIENT", "UNBLOCK", "\(id)")
            for _ in 0..<20 {
                let ended = try? link.perform { context throws(RedisError) in
                    try context.command(unblock) { reply throws(RedisError) in reply.integer == 1 }
                }
                guard ended == false, fetch.state.withLock({ $0.blocking }) else { return }
                // This is the acknowledgement connection's own thread, not the cooperative pool.
                usleep(500)
            }
        }
    }

    /// Hands the stage every batch read so far. `finished` is `true` once the source is
    /// draining and no read is in flight any more, so nothing else will arrive; otherwise the
    /// reader posts `fetched` or `fetcherStopped` later. `exhausted`: the source took its
    /// ``RedisConfiguration/limit`` and drains by itself.
    func takeFetched() -> (batches: [[Message<RedisMetadata>]], finished: Bool, exhausted: Bool) {
        self.fetch.state.withLock { state in
            let batches = state.outbox
            state.outbox = []
            state.notified = false
            return (batches, state.credit.isEnding && state.credit.readsInFlight == 0, state.credit.isExhausted)
        }
    }

    // MARK: The reader's side (read connection's thread)

    /// Reserves credit for up to `slots` reads of at most ``RedisConfiguration/batchSize``.
    func reserveReads(slots: Int) -> [Int] {
        guard slots > 0 else { return [] }
        return self.fetch.state.withLock { state in
            var reads: [Int] = []
            while reads.count < slots, let count = state.credit.nextRead(cap: state.readCap) { reads.append(count) }
            return reads
        }
    }

    /// A read that reserved `asked` brought `messages` (none if it failed): they go to the
    /// outbox, and the stage is told unless a note is on its way already.
    func completeRead(asked: Int, messages: [Message<RedisMetadata>]) {
        var bytes = 0
        var largest = 0
        for message in messages {
            bytes += message.payload.count
            largest = max(largest, message.payload.count)
        }
        let budget = self.configuration.maxReadBytes
        let batchSize = self.configuration.batchSize
        let notify = self.fetch.state.withLock { state -> Bool in
            state.credit.completed(asked: asked, got: messages.count, bytes: bytes)
            if !messages.isEmpty {
                // Sized by the largest item of this read, not the average: a read of items no
                // larger than those seen stays within the budget.
                state.readCap = max(1, min(batchSize, budget / max(1, largest)))
            }
            guard !messages.isEmpty else { return false }
            state.outbox.append(messages)
            guard !state.notified else { return false }
            state.notified = true
            return true
        }
        if notify { self.post(RedisSourceInfo(.fetched)) }
    }

    /// The reader has nothing to do: tells a draining stage once that no more reads come, and
    /// waits for credit (``request(_:)`` or a settlement wakes it).
    func readerIdle() -> ServiceOutcome {
        let tell = self.fetch.state.withLock { state -> Bool in
            guard state.credit.isEnding, !state.credit.isStopped, state.credit.readsInFlight == 0, !state.toldStopped else { return false }
            state.toldStopped = true
            return true
        }
        if tell { self.post(RedisSourceInfo(.fetcherStopped)) }
        return .wait(socket: nil, timeout: nil)
    }

    /// A read failed for good: the stage stops with `error`.
    func readFailed(_ error: RedisError) {
        self.fetch.state.withLock { _ = $0.credit.stop() }
        self.logger.debug("read failed", metadata: [RedisLogKey.error: "\(error)"])
        self.post(RedisSourceInfo(.failed(error)))
    }

    /// Called before sending a blocking command: marks it, so that a drain or stop ends it
    /// early. Returns `false` (send nothing) when reads are ending already. Either this sees
    /// the drain or the drain sees the mark: both happen under the same lock.
    func beginBlocking() -> Bool {
        self.fetch.state.withLock { state in
            guard !state.credit.isEnding else { return false }
            state.blocking = true
            return true
        }
    }

    /// The blocking command answered (or failed).
    func endBlocking() {
        self.fetch.state.withLock { $0.blocking = false }
    }

    // MARK: Settling and shutdown

    /// Queues a settlement for the acknowledgement connection; never blocks.
    func settle(_ settlement: Settlement<RedisMetadata>) {
        self.settler.settle(settlement)
    }

    /// Stops reading, sends what is left to settle, gives unfinished items back, and closes
    /// both connections.
    func shutdown() async {
        self.stopReading()
        await self.reads.shutdown()
        let unemitted = self.fetch.state.withLock { state in
            defer { state.outbox = [] }
            return state.outbox
        }
        await self.settler.flush()
        await self.mode.finish(unemitted: unemitted, on: self.acks, logger: self.logger)
        await self.acks.shutdown()
    }
}
