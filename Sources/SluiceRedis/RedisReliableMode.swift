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

/// Reliable-list mode (at least once): a script moves n items atomically into the consumer's
/// processing list, `BLMOVE` waits while the list is empty; settling removes them from it; a
/// liveness key and a reaper return a dead consumer's items.
struct RedisReliableMode: RedisMode {
    let configuration: RedisConfiguration
    let keys: RedisKeys

    /// Items per settle script.
    private static let chunk = 1000

    var keyType: String { "list" }
    var acknowledgementsNeedCommands: Bool { true }

    func prepare(_ context: HiredisContext) throws(RedisError) {
        let register = RedisCommand("SADD", self.keys.registry, self.configuration.consumer)
        try context.command(register) { _ throws(RedisError) in }
        try self.refreshLiveness(context)
        // Our own processing list holds what an earlier run with this consumer name did not
        // finish: nothing of it is in flight now.
        try context.command(self.keys.giveBack()) { _ throws(RedisError) in }
        _ = try self.reap(context)
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

    private func reap(_ context: HiredisContext) throws(RedisError) -> Int {
        var reap = RedisCommand("EVAL")
        reap.append(RedisScripts.reap)
        reap.append(2)
        reap.append(self.keys.source)
        reap.append(self.keys.registry)
        reap.append(self.keys.processingPrefix)
        reap.append(self.keys.alivePrefix)
        reap.append(self.configuration.consumer)
        return try context.command(reap) { reply throws(RedisError) in reply.integer }
    }

    func makeReader(session: RedisSession) -> any RedisModeReader {
        RedisSingleReader(session: session, source: Reader(keys: self.keys, blockSeconds: self.configuration.blockSecondsText))
    }

    func settleCommands(_ settlements: [Settlement<RedisMetadata>]) -> [RedisCommand] {
        var commands: [RedisCommand] = []
        var current: RedisCommand?
        var inCurrent = 0
        func add(_ operation: String, _ value: Payload) {
            if current == nil {
                var command = RedisCommand("EVAL")
                command.reserve(arguments: 2 * Self.chunk + 5, bytes: Self.chunk * (value.count + 1) + 1024)
                command.append(RedisScripts.settle)
                command.append(3)
                command.append(self.keys.processing)
                command.append(self.keys.source)
                command.append(self.keys.dead)
                current = command
            }
            current!.append(operation)
            current!.append(value)
            inCurrent += 1
            if inCurrent == Self.chunk {
                commands.append(current!)
                current = nil
                inCurrent = 0
            }
        }
        for settlement in settlements {
            for message in settlement.acknowledged { add("a", message.metadata.value) }
            for (message, disposition) in settlement.failed {
                let operation = disposition == .requeue ? "r" : disposition == .deadLetter ? "d" : "x"
                add(operation, message.metadata.value)
            }
        }
        if let current { commands.append(current) }
        return commands
    }

    /// The `(operation, value)` pairs of a settle script: `EVAL script 3 processing source
    /// dead`, then the pairs.
    func settledItems(_ command: RedisCommand) -> Int {
        command.name == "EVAL" ? (command.argumentCount - 6) / 2 : 0
    }

    /// Gives the whole processing list back to the list and forgets this consumer.
    func finish(unemitted: [[Message<RedisMetadata>]], on acks: RedisConnection, logger: Logger) async {
        let keys = self.keys
        let consumer = self.configuration.consumer
        _ = try? await acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                let moved = try context.command(keys.giveBack()) { reply throws(RedisError) in reply.integer }
                if moved > 0 {
                    logger.debug("gave unfinished items back to the list", metadata: [RedisLogKey.count: "\(moved)"])
                }
                let forget = RedisCommand("SREM", keys.registry, consumer)
                let delete = RedisCommand("DEL", keys.alive)
                try context.pipeline([forget, delete]) { _, _ throws(RedisError) in }
            }
        }
    }

    /// Moves up to `count` items into the processing list with one script; on an empty list
    /// waits for one with `BLMOVE`. Used only on the read connection's thread.
    final class Reader: RedisBatchSource {
        let keys: RedisKeys
        let blockSeconds: String
        /// Items moved into the processing list by reads whose reply arrived.
        private var delivered = 0
        private var recoverOrphans = false

        init(keys: RedisKeys, blockSeconds: String) {
            self.keys = keys
            self.blockSeconds = blockSeconds
        }

        func connectionBroke() {
            self.recoverOrphans = true
        }

        func read(_ context: HiredisContext, count: Int, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>] {
            if self.recoverOrphans {
                let moved = try self.recover(session)
                self.recoverOrphans = false
                if moved > 0 {
                    session.logger.info("returned items whose read reply was lost to the list", metadata: [RedisLogKey.count: "\(moved)"])
                }
            }
            var move = RedisCommand("EVAL")
            move.append(RedisScripts.move)
            move.append(2)
            move.append(self.keys.source)
            move.append(self.keys.processing)
            move.append(count)
            let moved = try context.command(move) { reply throws(RedisError) in
                reply.kind == .array ? RedisListPopper.messages(reply, key: self.keys.source) : []
            }
            if !moved.isEmpty {
                self.delivered += moved.count
                return moved
            }
            let wait = RedisCommand("BLMOVE", self.keys.source, self.keys.processing, "LEFT", "RIGHT", self.blockSeconds)
            guard session.beginBlocking() else { return [] }
            defer { session.endBlocking() }
            let waited = try context.command(wait) { reply throws(RedisError) -> [Message<RedisMetadata>] in
                guard reply.kind == .string else { return [] }
                let payload = Payload(reply.bytes)
                return [Message(payload: payload, metadata: RedisMetadata(key: self.keys.source, entryID: nil, deliveryCount: nil, value: payload))]
            }
            self.delivered += waited.count
            return waited
        }

        /// After the read connection broke: returns to the head of the list what a read moved
        /// into the processing list but whose reply was lost (the tail of the processing list
        /// beyond the items handed out and not settled yet).
        ///
        /// Runs on the acknowledgement connection between settle batches, so every settle
        /// script sent so far was answered and counted, and none runs meanwhile; this thread
        /// waits, so ``delivered`` does not change either. The count is therefore exact: no
        /// orphan is left behind and no handed-out item is given back.
        private func recover(_ session: RedisSession) throws(RedisError) -> Int {
            let keys = self.keys
            let delivered = self.delivered
            let settler = session.settler
            return try session.acks.runBlocking { ackLink throws(RedisError) in
                let handedOut = delivered - settler.settledItems
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
    }
}
