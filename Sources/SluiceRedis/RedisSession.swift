//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import Synchronization

/// One running source: its two connections (blocking reads; acknowledgements and
/// housekeeping), the demand bookkeeping of its stage, and what it settles.
final class RedisSession: Sendable {
    let configuration: RedisConfiguration
    let logger: Logger
    /// Reads, blocking ones among them (`LPOP`/`BLMPOP`, `BLMOVE`, `XREADGROUP … BLOCK`).
    let reads: RedisThread
    /// Acknowledgements, liveness refresh, reaper.
    let acks: RedisThread
    let keys: Keys
    /// Reader state, touched only on the `reads` thread.
    let reader: ReaderBox

    private let fetch = Mutex(FetchState())
    private let stage = Mutex<StageHandle<RedisSourceStage>?>(nil)
    private let settling = Mutex(SettleState())
    /// Items moved into the processing list by reads whose reply arrived (reliable mode).
    /// Written only on the `reads` thread.
    let delivered = Atomic<Int>(0)
    /// Items whose settle command Redis answered, on the first try or a retry (reliable mode).
    /// Each of them is gone from the processing list, whatever the script reported (a retry
    /// after a lost reply finds nothing left to remove). Written only on the `acks` thread.
    let settled = Atomic<Int>(0)

    struct Keys: Sendable {
        var source: String
        var dead: String
        var processing: String
        var alive: String
        var registry: String
        var processingPrefix: String
        var alivePrefix: String

        init(_ configuration: RedisConfiguration) {
            self.source = configuration.key
            self.dead = configuration.effectiveDeadLetterKey
            self.processingPrefix = "\(configuration.key):processing:"
            self.alivePrefix = "\(configuration.key):alive:"
            self.processing = self.processingPrefix + configuration.consumer
            self.alive = self.alivePrefix + configuration.consumer
            self.registry = "\(configuration.key):consumers"
        }
    }

    /// The stage's demand as the reader sees it, and what was read for it.
    struct FetchState {
        /// Demand received and not yet served.
        var wanted = 0
        /// Whether a read job is queued or running.
        var running = false
        var draining = false
        var stopped = false
        /// Batches read and not yet taken by the stage. They stay here until the stage takes
        /// them, so a batch whose `fetched` note never reaches the stage (it ended first) is
        /// not lost: ``RedisSession/shutdown()`` gives it back.
        var outbox: [[Message<RedisMetadata>]] = []
        /// Whether a `fetched` note is on its way to the stage (one note covers every batch
        /// in the outbox).
        var notified = false
    }

    struct SettleState {
        var pending: [Settlement<RedisMetadata>] = []
        var scheduled = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// `@unchecked Sendable`: the reader is used only by jobs on the `reads` thread, one at a time.
    final class ReaderBox: @unchecked Sendable {
        var reader: RedisReader
        init(_ reader: RedisReader) { self.reader = reader }
    }

    init(configuration: RedisConfiguration, logger: Logger) {
        var logger = logger
        logger[metadataKey: RedisLogKey.address] = "\(configuration.address)"
        logger[metadataKey: RedisLogKey.key] = "\(configuration.key)"
        logger[metadataKey: RedisLogKey.mode] = "\(configuration.mode)"
        logger[metadataKey: RedisLogKey.consumer] = "\(configuration.consumer)"
        self.configuration = configuration
        self.logger = logger
        self.keys = Keys(configuration)
        self.reads = RedisThread(name: "sluice-redis-read", configuration: configuration, blocking: true, replyArena: true, logger: logger)
        self.acks = RedisThread(name: "sluice-redis-ack", configuration: configuration, blocking: false, logger: logger)
        self.reader = ReaderBox(RedisReader(configuration: configuration, keys: self.keys))
    }

    // MARK: Start

    /// Connects both connections and prepares the mode (type check, consumer group, own
    /// unfinished items, reaper, liveness refresh).
    func start() async throws(RedisError) {
        let configuration = self.configuration
        let keys = self.keys
        try await self.reads.run { link throws(RedisError) in
            _ = try link.connected()
        }
        try await self.acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                try Self.prepare(context, configuration: configuration, keys: keys)
            }
        }
        if configuration.mode == .reliable {
            let ttl = configuration.livenessTTL
            self.acks.every(ttl / 3) { link in
                _ = try? link.perform { context throws(RedisError) in try Self.refreshLiveness(context, keys: keys, ttl: ttl) }
            }
            let logger = self.logger
            self.acks.every(configuration.reapInterval) { link in
                do {
                    let moved = try link.perform { context throws(RedisError) in try Self.reap(context, keys: keys, consumer: configuration.consumer) }
                    if moved > 0 {
                        logger.info("returned the items of dead consumers to the list", metadata: [RedisLogKey.count: "\(moved)"])
                    }
                } catch {
                    logger.debug("reaper failed", metadata: [RedisLogKey.error: "\(error)"])
                }
            }
        }
    }

    private static func prepare(_ context: HiredisContext, configuration: RedisConfiguration, keys: Keys) throws(RedisError) {
        var type = RedisCommand("TYPE")
        type.append(keys.source)
        let found = try context.command(type) { reply throws(RedisError) in reply.text }
        let needed = configuration.mode == .stream ? "stream" : "list"
        guard found == "none" || found == needed else {
            throw RedisError(
                .wrongType,
                "key \"\(keys.source)\" holds a \(found), but mode \(configuration.mode) reads a \(needed); "
                    + "use another key or mode=\(found == "stream" ? "stream" : "list or reliable")"
            )
        }
        switch configuration.mode {
        case .stream:
            try Self.createGroup(context, configuration: configuration)
        case .reliable:
            var register = RedisCommand("SADD")
            register.append(keys.registry)
            register.append(configuration.consumer)
            try context.command(register) { _ throws(RedisError) in }
            try Self.refreshLiveness(context, keys: keys, ttl: configuration.livenessTTL)
            // Our own processing list holds what an earlier run with this consumer name did
            // not finish: nothing of it is in flight now.
            var giveBack = RedisCommand("EVAL")
            giveBack.append(RedisScripts.giveBack)
            giveBack.append(2)
            giveBack.append(keys.processing)
            giveBack.append(keys.source)
            try context.command(giveBack) { _ throws(RedisError) in }
            _ = try Self.reap(context, keys: keys, consumer: configuration.consumer)
        default:
            break
        }
    }

    static func createGroup(_ context: HiredisContext, configuration: RedisConfiguration) throws(RedisError) {
        var create = RedisCommand("XGROUP")
        create.append("CREATE")
        create.append(configuration.key)
        create.append(configuration.group)
        create.append(configuration.groupStartID)
        create.append("MKSTREAM")
        do {
            try context.command(create) { _ throws(RedisError) in }
        } catch where error.message.contains("BUSYGROUP") {
            // The group exists already.
        }
    }

    private static func refreshLiveness(_ context: HiredisContext, keys: Keys, ttl: Duration) throws(RedisError) {
        var set = RedisCommand("SET")
        set.append(keys.alive)
        set.append("1")
        set.append("PX")
        set.append(Int(RedisThread.seconds(ttl) * 1000))
        try context.command(set) { _ throws(RedisError) in }
    }

    private static func reap(_ context: HiredisContext, keys: Keys, consumer: String) throws(RedisError) -> Int {
        var reap = RedisCommand("EVAL")
        reap.append(RedisScripts.reap)
        reap.append(2)
        reap.append(keys.source)
        reap.append(keys.registry)
        reap.append(keys.processingPrefix)
        reap.append(keys.alivePrefix)
        reap.append(consumer)
        return try context.command(reap) { reply throws(RedisError) in reply.integer }
    }

    // MARK: Reading on demand

    func attach(_ handle: StageHandle<RedisSourceStage>) {
        self.stage.withLock { $0 = handle }
    }

    private func post(_ info: RedisSourceInfo) {
        let handle = self.stage.withLock { $0 }
        handle?.send(info)
    }

    /// The stage got `demand` more: read it (never more) on the read thread.
    func request(_ demand: Int) {
        let start = self.fetch.withLock { state -> Bool in
            state.wanted += demand
            guard !state.running, !state.draining, !state.stopped else { return false }
            state.running = true
            return true
        }
        if start { self.startReading() }
    }

    private func startReading() {
        let queued = self.reads.enqueue { [self] link in self.readLoop(link) }
        if !queued { self.fetch.withLock { $0.running = false } }
    }

    /// Stop reading (the stage then takes what was read with ``takeFetched()``).
    func drain() {
        self.fetch.withLock { $0.draining = true }
        self.reads.wake()
    }

    /// Hands the stage every batch read so far. `finished` is `true` once the source is
    /// draining and no read runs any more, so nothing else will arrive; otherwise the read job
    /// posts `fetched` or `fetcherStopped` later.
    func takeFetched() -> (batches: [[Message<RedisMetadata>]], finished: Bool) {
        self.fetch.withLock { state in
            let batches = state.outbox
            state.outbox = []
            state.notified = false
            return (batches, state.draining && !state.running)
        }
    }

    /// The stage ended: stop reading for good.
    func stopReading() {
        self.fetch.withLock { $0.stopped = true }
        self.reads.wake()
    }

    private func readLoop(_ link: RedisLink) {
        if self.configuration.mode == .list {
            self.listReadLoop(link)
            return
        }
        let batchSize = self.configuration.batchSize
        while true {
            let (count, draining) = self.fetch.withLock { state -> (Int, Bool) in
                if state.draining || state.stopped || state.wanted == 0 {
                    state.running = false
                    return (0, state.draining && !state.stopped)
                }
                return (min(state.wanted, batchSize), false)
            }
            guard count > 0 else {
                if draining { self.post(RedisSourceInfo(.fetcherStopped)) }
                return
            }
            do {
                let messages = try link.perform { context throws(RedisError) in
                    try self.reader.reader.read(context, count: count, link: link, session: self)
                }
                guard !messages.isEmpty else { continue }
                if self.configuration.mode == .reliable { self.delivered.add(messages.count, ordering: .relaxed) }
                self.publish(messages, unmetDemand: -messages.count)
            } catch where error.code == .shutDown {
                // Stopping while waiting for the acknowledgement connection.
                self.fetch.withLock { $0.running = false }
                return
            } catch where error.isTransient {
                self.reader.reader.connectionBroke()
                if !link.backOff(after: error) {
                    self.fetch.withLock { $0.running = false }
                    return
                }
            } catch {
                self.fetch.withLock { $0.running = false }
                self.logger.debug("read failed", metadata: [RedisLogKey.error: "\(error)"])
                self.post(RedisSourceInfo(.failed(error)))
                return
            }
        }
    }

    /// Puts a batch read for the stage in the outbox and changes the unmet demand by
    /// `unmetDemand`, in one step; tells the stage unless a note is already on its way.
    /// Called from a read job.
    private func publish(_ messages: [Message<RedisMetadata>], unmetDemand: Int) {
        let notify = self.fetch.withLock { state -> Bool in
            state.wanted += unmetDemand
            guard !messages.isEmpty else { return false }
            state.outbox.append(messages)
            guard !state.notified else { return false }
            state.notified = true
            return true
        }
        if notify { self.post(RedisSourceInfo(.fetched)) }
    }

    /// After the read connection broke: returns to the head of the list what a read moved
    /// into the processing list but whose reply was lost (the tail of the processing list
    /// beyond the items handed out and not settled yet). Called from a read job.
    ///
    /// Runs on the acknowledgement thread between settle batches, so every settle script sent
    /// so far was answered and counted in ``settled``, and none runs meanwhile; the read
    /// thread waits, so ``delivered`` does not change either. The count is therefore exact:
    /// no orphan is left behind and no handed-out item is given back.
    func recoverOrphans(from link: RedisLink) throws(RedisError) -> Int {
        let keys = self.keys
        return try self.acks.runBlocking(from: link.thread) { [self] ackLink throws(RedisError) in
            let handedOut = self.delivered.load(ordering: .relaxed) - self.settled.load(ordering: .relaxed)
            var recover = RedisCommand("EVAL")
            recover.append(RedisScripts.recoverOrphans)
            recover.append(2)
            recover.append(keys.processing)
            recover.append(keys.source)
            recover.append(max(0, handedOut))
            return try ackLink.perform { context throws(RedisError) in
                try context.command(recover) { reply throws(RedisError) in reply.integer }
            }
        }
    }

    /// How many list pops may be in flight at once (each for demand reserved when it is sent).
    static let listPipelineDepth = 4

    /// List mode: keeps up to ``listPipelineDepth`` pops in flight, so that Redis pops the
    /// next batch while this thread turns the last reply into messages. Each pop asks for
    /// demand reserved (taken from `wanted`) when it is sent and returns what its reply did not
    /// use, so the pops in flight together never take more than the unmet demand. While the
    /// list is empty, one blocking `BLMPOP` waits for it.
    ///
    /// Replies of pops sent before a drain or stop are still read and their items put in the
    /// outbox: the stage emits them, or ``shutdown()`` pushes them back.
    private func listReadLoop(_ link: RedisLink) {
        let batchSize = self.configuration.batchSize
        let depth = Self.listPipelineDepth
        let reader = RedisListPopper(keys: self.keys, blockSeconds: self.reader.reader.blockSecondsText)
        // Counts of the pops sent and not answered yet, oldest first.
        var inFlight: [Int] = []
        inFlight.reserveCapacity(depth)
        // Whether the last reply found the list empty (or ran it empty).
        var empty = false
        while true {
            let (sends, finished, draining) = self.fetch.withLock { state -> ([Int], Bool, Bool) in
                var sends: [Int] = []
                if !state.draining && !state.stopped {
                    let slots = empty ? (inFlight.isEmpty ? 1 : 0) : depth - inFlight.count
                    while sends.count < slots && state.wanted > 0 {
                        let count = min(state.wanted, batchSize)
                        state.wanted -= count
                        sends.append(count)
                    }
                }
                guard inFlight.isEmpty && sends.isEmpty else { return (sends, false, false) }
                state.running = false
                return ([], true, state.draining && !state.stopped)
            }
            if finished {
                if draining { self.post(RedisSourceInfo(.fetcherStopped)) }
                return
            }
            do {
                let (messages, asked) = try link.perform { context throws(RedisError) -> ([Message<RedisMetadata>], Int) in
                    if !sends.isEmpty {
                        let blocking = empty
                        for count in sends {
                            // Counted before sending: if the send fails, the demand comes back.
                            inFlight.append(count)
                            try context.append(reader.pop(count, blocking: blocking))
                        }
                        try context.flush("LPOP")
                    }
                    let asked = inFlight[0]
                    let messages = try context.nextReply("LPOP") { reply in reader.messages(reply) }
                    inFlight.removeFirst()
                    return (messages, asked)
                }
                empty = messages.count < asked
                // The pop's demand was reserved when it was sent: what it did not use is unmet again.
                self.publish(messages, unmetDemand: asked - messages.count)
            } catch {
                // The replies of the pops in flight are lost with the connection (list mode is at
                // most once); their demand is unmet again.
                let unanswered = inFlight.reduce(0, +)
                inFlight.removeAll()
                empty = false
                self.fetch.withLock { $0.wanted += unanswered }
                link.close()
                if error.isTransient {
                    if link.backOff(after: error) { continue }
                    self.fetch.withLock { $0.running = false }
                    return
                }
                self.fetch.withLock { $0.running = false }
                self.logger.debug("read failed", metadata: [RedisLogKey.error: "\(error)"])
                self.post(RedisSourceInfo(.failed(error)))
                return
            }
        }
    }

    // MARK: Settling

    /// Queues a settlement for the ack connection; never blocks.
    func settle(_ settlement: Settlement<RedisMetadata>) {
        guard !settlement.isEmpty else { return }
        if self.configuration.mode == .list && settlement.failed.isEmpty { return }
        let start = self.settling.withLock { state -> Bool in
            state.pending.append(settlement)
            guard !state.scheduled else { return false }
            state.scheduled = true
            return true
        }
        if start {
            let queued = self.acks.enqueue { [self] link in self.settleLoop(link) }
            if !queued {
                self.logger.info("settlement after shutdown ignored; Redis delivers those messages again")
                self.settling.withLock { $0.scheduled = false }
            }
        }
    }

    private func settleLoop(_ link: RedisLink) {
        while true {
            let (batch, waiters) = self.settling.withLock { state -> ([Settlement<RedisMetadata>], [CheckedContinuation<Void, Never>]) in
                if state.pending.isEmpty {
                    state.scheduled = false
                    defer { state.idleWaiters = [] }
                    return ([], state.idleWaiters)
                }
                defer { state.pending = [] }
                return (state.pending, [])
            }
            if batch.isEmpty {
                for waiter in waiters { waiter.resume() }
                return
            }
            let commands = RedisSettler.commands(for: batch, configuration: self.configuration, keys: self.keys)
            while true {
                // Items of settle scripts Redis answered in this attempt (reliable mode).
                var confirmed = 0
                defer { if confirmed > 0 { self.settled.add(confirmed, ordering: .relaxed) } }
                do {
                    try link.perform { context throws(RedisError) in
                        try context.pipeline(commands) { index, _ throws(RedisError) in
                            confirmed += RedisSettler.settledItems(commands[index])
                        }
                    }
                    break
                } catch where error.isTransient {
                    // Replies of this attempt that did arrive are counted again on the retry.
                    confirmed = 0
                    if !link.backOff(after: error) {
                        self.logger.info(
                            "shut down with settlements not sent; Redis delivers those messages again",
                            metadata: [RedisLogKey.count: "\(batch.reduce(0) { $0 + $1.count })"]
                        )
                        break
                    }
                } catch {
                    self.logger.info("settling messages failed", metadata: [RedisLogKey.error: "\(error)"])
                    break
                }
            }
        }
    }

    /// List mode: pushes batches that were popped but never reached the stage (it ended
    /// before taking them) back to the head of the list, in their order. (Reliable mode gives
    /// back the whole processing list below; stream entries stay pending and are read again.)
    private func giveBackUnemitted() async {
        let batches = self.fetch.withLock { state in
            defer { state.outbox = [] }
            return state.outbox
        }
        guard self.configuration.mode == .list, !batches.isEmpty else { return }
        let values = batches.flatMap { $0.map(\.metadata.value) }
        var commands: [RedisCommand] = []
        // LPUSH puts its last argument at the head: push from the end, in chunks, so that the
        // first popped item ends up first again.
        var end = values.count
        while end > 0 {
            let start = max(0, end - 1000)
            var push = RedisCommand("LPUSH")
            push.append(self.keys.source)
            for value in values[start..<end].reversed() { push.append(value) }
            commands.append(push)
            end = start
        }
        let pushed = commands
        let logger = self.logger
        do {
            try await self.acks.run { link throws(RedisError) in
                try link.perform { context throws(RedisError) in
                    try context.pipeline(pushed) { _, _ throws(RedisError) in }
                }
            }
            logger.debug("pushed items that were popped but not emitted back to the list", metadata: [RedisLogKey.count: "\(values.count)"])
        } catch {
            logger.error(
                "could not push popped items back to the list; they are lost",
                metadata: [RedisLogKey.count: "\(values.count)", RedisLogKey.error: "\(error)"]
            )
        }
    }

    /// Waits until every queued settlement was sent.
    func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = self.settling.withLock { state -> Bool in
                if !state.scheduled && state.pending.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    // MARK: Shutdown

    /// Stops reading, sends what is left to settle, gives unfinished items back (reliable
    /// mode), and closes both connections.
    func shutdown() async {
        self.stopReading()
        await self.reads.stopAndWait()
        await self.giveBackUnemitted()
        await self.flush()
        if self.configuration.mode == .reliable {
            let keys = self.keys
            let consumer = self.configuration.consumer
            let logger = self.logger
            _ = try? await self.acks.run { link throws(RedisError) in
                try link.perform { context throws(RedisError) in
                    var giveBack = RedisCommand("EVAL")
                    giveBack.append(RedisScripts.giveBack)
                    giveBack.append(2)
                    giveBack.append(keys.processing)
                    giveBack.append(keys.source)
                    let moved = try context.command(giveBack) { reply throws(RedisError) in reply.integer }
                    if moved > 0 {
                        logger.debug("gave unfinished items back to the list", metadata: [RedisLogKey.count: "\(moved)"])
                    }
                    var forget = RedisCommand("SREM")
                    forget.append(keys.registry)
                    forget.append(consumer)
                    var delete = RedisCommand("DEL")
                    delete.append(keys.alive)
                    try context.pipeline([forget, delete]) { _, _ throws(RedisError) in }
                }
            }
        }
        await self.acks.stopAndWait()
    }
}
