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

/// Reads at most `count` items per call, for the source's mode. Used only on the read thread.
struct RedisReader {
    private enum StreamPhase: Equatable {
        /// Re-reading this consumer's own pending entries after an id.
        case pending(after: RedisEntryID)
        /// Reading new entries (`>`).
        case new
    }

    let configuration: RedisConfiguration
    let keys: RedisSession.Keys
    private let blockSeconds: String
    /// The block timeout as a command argument, in seconds.
    var blockSecondsText: String { self.blockSeconds }
    private let blockMilliseconds: Int
    private var phase: StreamPhase = .pending(after: .zero)
    private var highestDelivered: RedisEntryID = .zero
    private var claimCursor: RedisEntryID = .zero
    private var nextClaim: ContinuousClock.Instant = .now
    private var recoverOrphans = false

    init(configuration: RedisConfiguration, keys: RedisSession.Keys) {
        self.configuration = configuration
        self.keys = keys
        let milliseconds = max(1, Int(RedisThread.seconds(configuration.blockTimeout) * 1000))
        self.blockMilliseconds = milliseconds
        self.blockSeconds = "\(Double(milliseconds) / 1000)"
    }

    /// The connection broke: a read may have taken items whose reply was lost.
    mutating func connectionBroke() {
        switch self.configuration.mode {
        case .stream: self.phase = .pending(after: self.highestDelivered)
        case .reliable: self.recoverOrphans = true
        default: break
        }
    }

    mutating func read(_ context: HiredisContext, count: Int, link: RedisLink, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>] {
        switch self.configuration.mode {
        case .list: preconditionFailure("list mode reads in RedisSession.listReadLoop")
        case .reliable: return try self.readReliable(context, count: count, link: link, session: session)
        default: return try self.readStream(context, count: count, link: link)
        }
    }

    // MARK: Lists

    private func listMessages(_ items: RedisReplyRef) -> [Message<RedisMetadata>] {
        listItemMessages(items, key: self.keys.source)
    }

    /// Moves up to `count` items into the processing list with one script; on an empty list
    /// waits for one with `BLMOVE`.
    private mutating func readReliable(
        _ context: HiredisContext,
        count: Int,
        link: RedisLink,
        session: RedisSession
    ) throws(RedisError) -> [Message<RedisMetadata>] {
        if self.recoverOrphans {
            let moved = try session.recoverOrphans(from: link)
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
            reply.kind == .array ? self.listMessages(reply) : []
        }
        if !moved.isEmpty { return moved }
        var wait = RedisCommand("BLMOVE")
        wait.append(self.keys.source)
        wait.append(self.keys.processing)
        wait.append("LEFT")
        wait.append("RIGHT")
        wait.append(self.blockSeconds)
        return try context.command(wait) { reply throws(RedisError) in
            guard reply.kind == .string else { return [] }
            let payload = Payload(reply.bytes)
            return [Message(payload: payload, metadata: RedisMetadata(key: self.keys.source, entryID: nil, deliveryCount: nil, value: payload))]
        }
    }

    // MARK: Streams

    private mutating func readStream(_ context: HiredisContext, count: Int, link: RedisLink) throws(RedisError) -> [Message<RedisMetadata>] {
        do {
            return try self.readStreamOnce(context, count: count)
        } catch where error.code == .noGroup {
            // The stream or group vanished (deleted, or Redis restarted without its data).
            try RedisSession.createGroup(context, configuration: self.configuration)
            return try self.readStreamOnce(context, count: count)
        }
    }

    private mutating func readStreamOnce(_ context: HiredisContext, count: Int) throws(RedisError) -> [Message<RedisMetadata>] {
        if case .pending(let after) = self.phase {
            var read = self.readGroup(count: count)
            read.append("STREAMS")
            read.append(self.keys.source)
            read.append(after.description)
            var entries = try context.command(read) { reply throws(RedisError) in try self.streamEntries(reply) }
            entries.removeAll { $0.metadata.entryID == nil }
            guard let last = entries.last?.metadata.entryID else {
                self.phase = .new
                return try self.readStreamOnce(context, count: count)
            }
            self.phase = .pending(after: last)
            try self.fillDeliveryCounts(&entries, context)
            self.noteDelivered(entries)
            return entries
        }
        if self.nextClaim <= .now {
            var claim = RedisCommand("XAUTOCLAIM")
            claim.append(self.keys.source)
            claim.append(self.configuration.group)
            claim.append(self.configuration.consumer)
            claim.append(Int(RedisThread.seconds(self.configuration.claimMinIdle) * 1000))
            claim.append(self.claimCursor.description)
            claim.append("COUNT")
            claim.append(count)
            var (cursor, entries) = try context.command(claim) { reply throws(RedisError) -> (RedisEntryID, [Message<RedisMetadata>]) in
                guard reply.kind == .array, reply.count >= 2 else {
                    throw RedisError(.unexpectedReply, "XAUTOCLAIM answered with an unexpected reply")
                }
                let cursor = RedisEntryID(reply[0].text) ?? .zero
                return (cursor, try self.entries(reply[1], deliveryCount: nil))
            }
            self.claimCursor = cursor
            if cursor == .zero { self.nextClaim = .now + self.configuration.claimInterval }
            entries.removeAll { $0.metadata.entryID == nil }
            if !entries.isEmpty {
                try self.fillDeliveryCounts(&entries, context)
                self.noteDelivered(entries)
                return entries
            }
        }
        var read = self.readGroup(count: count)
        read.append("BLOCK")
        read.append(self.blockMilliseconds)
        read.append("STREAMS")
        read.append(self.keys.source)
        read.append(">")
        let entries = try context.command(read) { reply throws(RedisError) in try self.streamEntries(reply, deliveryCount: 1) }
        self.noteDelivered(entries)
        return entries
    }

    private func readGroup(count: Int) -> RedisCommand {
        var read = RedisCommand("XREADGROUP")
        read.append("GROUP")
        read.append(self.configuration.group)
        read.append(self.configuration.consumer)
        read.append("COUNT")
        read.append(count)
        return read
    }

    private mutating func noteDelivered(_ entries: [Message<RedisMetadata>]) {
        for entry in entries {
            if let id = entry.metadata.entryID, id > self.highestDelivered { self.highestDelivered = id }
        }
    }

    /// Entries of an `XREADGROUP` reply: `[[stream, [[id, [field, value, …]], …]]]` or nil.
    private func streamEntries(_ reply: RedisReplyRef, deliveryCount: Int? = nil) throws(RedisError) -> [Message<RedisMetadata>] {
        guard reply.kind == .array, reply.count > 0 else { return [] }
        let stream = reply[0]
        guard stream.kind == .array, stream.count == 2 else {
            throw RedisError(.unexpectedReply, "XREADGROUP answered with an unexpected reply")
        }
        return try self.entries(stream[1], deliveryCount: deliveryCount)
    }

    /// `[[id, [field, value, …]], …]`; an entry deleted from the stream but still pending has
    /// nil fields and gets no entry id (the caller drops it; it is acknowledged with the rest).
    private func entries(_ list: RedisReplyRef, deliveryCount: Int?) throws(RedisError) -> [Message<RedisMetadata>] {
        guard list.kind == .array else { return [] }
        let key = self.keys.source
        let field = Array(self.configuration.payloadField.utf8)
        // The payloads of the read go into one buffer (see `Payload.packing`).
        var found: [(id: RedisEntryID, bytes: UnsafeRawBufferPointer)] = []
        found.reserveCapacity(list.count)
        for index in 0..<list.count {
            let entry = list[index]
            guard entry.kind == .array, entry.count == 2, let id = entry[0].entryID else {
                throw RedisError(.unexpectedReply, "a stream entry of an unexpected shape")
            }
            let fields = entry[1]
            guard fields.kind == .array, fields.count >= 2 else { continue }
            var payloadIndex = 1
            var position = 0
            while position + 1 < fields.count {
                if fields[position].equals(field) {
                    payloadIndex = position + 1
                    break
                }
                position += 2
            }
            found.append((id, fields[payloadIndex].unsafeBytes))
        }
        let payloads = Payload.packing(found.lazy.map(\.bytes))
        var messages: [Message<RedisMetadata>] = []
        messages.reserveCapacity(found.count)
        for (entry, payload) in zip(found, payloads) {
            messages.append(
                Message(payload: payload, metadata: RedisMetadata(key: key, entryID: entry.id, deliveryCount: deliveryCount, value: payload))
            )
        }
        return messages
    }

    /// Reads the delivery counts of `entries` (all pending for this consumer) from `XPENDING`.
    private func fillDeliveryCounts(_ entries: inout [Message<RedisMetadata>], _ context: HiredisContext) throws(RedisError) {
        guard let first = entries.first?.metadata.entryID, let last = entries.last?.metadata.entryID else { return }
        let low = min(first, entries.lazy.compactMap(\.metadata.entryID).min() ?? first)
        let high = max(last, entries.lazy.compactMap(\.metadata.entryID).max() ?? last)
        var pending = RedisCommand("XPENDING")
        pending.append(self.keys.source)
        pending.append(self.configuration.group)
        pending.append(low.description)
        pending.append(high.description)
        pending.append(max(entries.count, 10) * 4)
        pending.append(self.configuration.consumer)
        var counts: [RedisEntryID: Int] = [:]
        try context.command(pending) { reply throws(RedisError) in
            for index in 0..<reply.count {
                let row = reply[index]
                guard row.count == 4, let id = RedisEntryID(row[0].text) else { continue }
                counts[id] = row[3].integer
            }
        }
        for index in entries.indices {
            // Metadata is constant in a message: a fresh read's message is made again with it.
            var metadata = entries[index].metadata
            guard let id = metadata.entryID else { continue }
            metadata.deliveryCount = counts[id] ?? 1
            entries[index] = Message(payload: entries[index].payload, metadata: metadata)
        }
    }
}

/// Builds the commands that settle a batch, for the source's mode.
enum RedisSettler {
    static func commands(
        for settlements: [Settlement<RedisMetadata>],
        configuration: RedisConfiguration,
        keys: RedisSession.Keys
    ) -> [RedisCommand] {
        switch configuration.mode {
        case .list: return self.listCommands(settlements, keys: keys)
        case .reliable: return self.reliableCommands(settlements, keys: keys)
        default: return self.streamCommands(settlements, configuration: configuration, keys: keys)
        }
    }

    private static let chunk = 1000

    /// How many items a settle command built here settles in the processing list: the
    /// `(operation, value)` pairs of a reliable-mode settle script, 0 for other commands.
    static func settledItems(_ command: RedisCommand) -> Int {
        // EVAL script 3 processing source dead, then the pairs.
        command.name == "EVAL" ? (command.argumentCount - 6) / 2 : 0
    }

    /// List mode: acknowledged items are already gone; failed ones are pushed back or to the
    /// dead-letter list.
    private static func listCommands(_ settlements: [Settlement<RedisMetadata>], keys: RedisSession.Keys) -> [RedisCommand] {
        var requeue = RedisCommand("RPUSH")
        requeue.append(keys.source)
        var dead = RedisCommand("RPUSH")
        dead.append(keys.dead)
        for settlement in settlements {
            for (message, disposition) in settlement.failed {
                if disposition == .requeue {
                    requeue.append(message.metadata.value)
                } else if disposition == .deadLetter {
                    dead.append(message.metadata.value)
                }
            }
        }
        return [requeue, dead].filter { $0.argumentCount > 2 }
    }

    private static func reliableCommands(_ settlements: [Settlement<RedisMetadata>], keys: RedisSession.Keys) -> [RedisCommand] {
        var commands: [RedisCommand] = []
        var current: RedisCommand?
        var inCurrent = 0
        func add(_ operation: String, _ value: Payload) {
            if current == nil {
                var command = RedisCommand("EVAL")
                command.reserve(arguments: 2 * self.chunk + 5, bytes: self.chunk * (value.count + 1) + 1024)
                command.append(RedisScripts.settle)
                command.append(3)
                command.append(keys.processing)
                command.append(keys.source)
                command.append(keys.dead)
                current = command
            }
            current!.append(operation)
            current!.append(value)
            inCurrent += 1
            if inCurrent == self.chunk {
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

    /// Stream mode: `XACK` in chunks; dead letters are copied to the dead-letter stream first;
    /// `.requeue` leaves the entry pending, to be claimed again after `claimMinIdle`.
    private static func streamCommands(
        _ settlements: [Settlement<RedisMetadata>],
        configuration: RedisConfiguration,
        keys: RedisSession.Keys
    ) -> [RedisCommand] {
        var commands: [RedisCommand] = []
        var ack: RedisCommand?
        func acknowledge(_ id: RedisEntryID) {
            if ack == nil {
                var command = RedisCommand("XACK")
                command.append(keys.source)
                command.append(configuration.group)
                ack = command
            }
            ack!.append(id)
            if ack!.argumentCount >= self.chunk + 3 {
                commands.append(ack!)
                ack = nil
            }
        }
        for settlement in settlements {
            for message in settlement.acknowledged {
                if let id = message.metadata.entryID { acknowledge(id) }
            }
            for (message, disposition) in settlement.failed {
                guard let id = message.metadata.entryID else { continue }
                if disposition == .requeue { continue }
                if disposition == .deadLetter {
                    var add = RedisCommand("XADD")
                    add.append(keys.dead)
                    add.append("*")
                    add.append(configuration.payloadField)
                    add.append(message.metadata.value)
                    add.append("source")
                    add.append(keys.source)
                    add.append("id")
                    add.append(id.description)
                    add.append("deliveries")
                    add.append(message.metadata.deliveryCount ?? 1)
                    add.append("error")
                    add.append(message.failure.map { "\($0)" } ?? "")
                    commands.append(add)
                }
                acknowledge(id)
            }
        }
        if let ack { commands.append(ack) }
        return commands
    }
}

/// Builds list-mode pops and reads their replies. Used only on the read thread.
struct RedisListPopper {
    let keys: RedisSession.Keys
    let blockSeconds: String

    init(keys: RedisSession.Keys, blockSeconds: String) {
        self.keys = keys
        self.blockSeconds = blockSeconds
    }

    /// `LPOP key n` (an array of at most n items, or nil), or when `blocking`,
    /// `BLMPOP t 1 key LEFT COUNT n` (`[key, items]`, or nil after the block timeout).
    func pop(_ count: Int, blocking: Bool) -> RedisCommand {
        if blocking {
            var pop = RedisCommand("BLMPOP")
            pop.append(self.blockSeconds)
            pop.append(1)
            pop.append(self.keys.source)
            pop.append("LEFT")
            pop.append("COUNT")
            pop.append(count)
            return pop
        }
        var pop = RedisCommand("LPOP")
        pop.append(self.keys.source)
        pop.append(count)
        return pop
    }

    /// The messages of a reply of ``pop(_:blocking:)``.
    func messages(_ reply: RedisReplyRef) -> [Message<RedisMetadata>] {
        guard reply.kind == .array, reply.count > 0 else { return [] }
        // BLMPOP answers [key, items]; LPOP answers the items.
        let items = reply.count == 2 && reply[1].kind == .array ? reply[1] : reply
        guard items.count > 0, items[0].kind == .string else { return [] }
        // Every message holds the key. A copy of its own per batch keeps this thread, retaining
        // it for new messages, off the reference count that processor threads release for the
        // messages of earlier batches.
        return listItemMessages(items, key: String(decoding: Array(self.keys.source.utf8), as: UTF8.self))
    }
}

/// Messages for the items of a list reply, each holding `key`; their payloads share one buffer
/// (see `Payload.packing`).
private func listItemMessages(_ items: RedisReplyRef, key: String) -> [Message<RedisMetadata>] {
    let payloads = Payload.packing((0..<items.count).lazy.map { items[$0].unsafeBytes })
    var messages: [Message<RedisMetadata>] = []
    messages.reserveCapacity(payloads.count)
    for payload in payloads {
        messages.append(Message(payload: payload, metadata: RedisMetadata(key: key, entryID: nil, deliveryCount: nil, value: payload)))
    }
    return messages
}
