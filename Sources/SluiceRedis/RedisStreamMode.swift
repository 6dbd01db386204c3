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

/// Stream mode (at least once): `XREADGROUP COUNT n BLOCK t`, `XACK` in batches, own pending
/// entries re-read at start, stale ones claimed with `XAUTOCLAIM`, delivery counts from the
/// pending entries list, dead letters copied to a dead-letter stream.
///
/// Its stored properties and first requirements read like ``RedisReliableMode``'s: both are
/// ``RedisMode`` conformances over the same configuration and keys.
struct RedisStreamMode: RedisMode {
    let configuration: RedisConfiguration
    let keys: RedisKeys

    /// Entry ids per `XACK`.
    private static let chunk = 1000

    var keyType: String { "stream" }
    var acknowledgementsNeedCommands: Bool { true }

    func prepare(_ context: HiredisContext) throws(RedisError) {
        try Self.createGroup(context, configuration: self.configuration)
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

    func startHousekeeping(on acks: RedisConnection, logger: Logger) {}

    func makeReader(session: RedisSession) -> any RedisModeReader {
        RedisSingleReader(session: session, source: Reader(configuration: self.configuration, keys: self.keys))
    }

    /// Stream mode: `XACK` in chunks (each releases its entries from the window once
    /// answered); dead letters are copied to the dead-letter stream first; `.requeue` leaves
    /// the entry pending, to be claimed again after `claimMinIdle`.
    func settleWork(_ settlements: [Settlement<RedisMetadata>]) -> RedisSettleWork {
        let configuration = self.configuration
        let keys = self.keys
        var work = RedisSettleWork()
        var ack: RedisCommand?
        var inAck = RedisRelease()
        func acknowledge(_ message: Message<RedisMetadata>) {
            guard let id = message.metadata.entryID else {
                work.immediate.add(message)
                return
            }
            if ack == nil {
                var command = RedisCommand("XACK")
                command.append(keys.source)
                command.append(configuration.group)
                ack = command
            }
            ack!.append(id)
            inAck.add(message)
            if inAck.count >= Self.chunk {
                work.append(ack!, releasing: inAck)
                ack = nil
                inAck = RedisRelease()
            }
        }
        for settlement in settlements {
            for message in settlement.acknowledged { acknowledge(message) }
            for (message, disposition) in settlement.failed {
                if disposition == .requeue, message.metadata.entryID != nil {
                    // Pending until claimed again: no longer read and unsettled here.
                    work.immediate.add(message)
                    continue
                }
                if disposition == .deadLetter, let id = message.metadata.entryID {
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
                    work.append(add)
                }
                acknowledge(message)
            }
        }
        if let ack { work.append(ack, releasing: inAck) }
        return work
    }

    /// Nothing to give back: unsettled entries stay pending and are read again. A consumer
    /// that holds nothing pending is removed from the group (a drain's random name would
    /// otherwise stay in the group for ever); one with pending entries stays, so that they can
    /// be re-read or claimed.
    func finish(unemitted: [[Message<RedisMetadata>]], on acks: RedisConnection, logger: Logger) async {
        let configuration = self.configuration
        _ = try? await acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                var pending = RedisCommand("XPENDING")
                for argument in [configuration.key, configuration.group, "-", "+", "1", configuration.consumer] { pending.append(argument) }
                let holds = try context.command(pending) { reply throws(RedisError) in reply.kind == .array && reply.count > 0 }
                guard !holds else { return }
                var remove = RedisCommand("XGROUP")
                for argument in ["DELCONSUMER", configuration.key, configuration.group, configuration.consumer] { remove.append(argument) }
                try context.command(remove) { _ throws(RedisError) in }
                logger.debug("removed the consumer from the group: it holds nothing pending")
            }
        }
    }

    /// Reads the group's entries. Used only on the read connection's thread.
    final class Reader: RedisBatchSource {
        private enum Phase: Equatable {
            /// Re-reading this consumer's own pending entries after an id.
            case pending(after: RedisEntryID)
            /// Reading new entries (`>`).
            case new
        }

        let configuration: RedisConfiguration
        let keys: RedisKeys
        private let blockMilliseconds: Int
        private var phase: Phase = .pending(after: .zero)
        private var highestDelivered: RedisEntryID = .zero
        private var claimCursor: RedisEntryID = .zero
        private var nextClaim: ContinuousClock.Instant = .now

        init(configuration: RedisConfiguration, keys: RedisKeys) {
            self.configuration = configuration
            self.keys = keys
            self.blockMilliseconds = configuration.blockMilliseconds
        }

        /// A read may have taken entries whose reply was lost: read own pending entries again.
        func connectionBroke() {
            self.phase = .pending(after: self.highestDelivered)
        }

        func read(_ context: HiredisContext, count: Int, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>] {
            do {
                return try self.readOnce(context, count: count, session: session)
            } catch where error.code == .noGroup {
                // The stream or group vanished (deleted, or Redis restarted without its data).
                try RedisStreamMode.createGroup(context, configuration: self.configuration)
                return try self.readOnce(context, count: count, session: session)
            }
        }

        private func readOnce(_ context: HiredisContext, count: Int, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>] {
            if case .pending(let after) = self.phase {
                var read = self.readGroup(count: count)
                read.append("STREAMS")
                read.append(self.keys.source)
                read.append(after.description)
                var entries = try context.command(read) { reply throws(RedisError) in try self.streamEntries(reply) }
                guard let last = entries.last?.metadata.entryID else {
                    self.phase = .new
                    return try self.readOnce(context, count: count, session: session)
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
                claim.append(self.configuration.claimMinIdle.inMilliseconds)
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
            guard session.beginBlocking() else { return [] }
            defer { session.endBlocking() }
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

        private func noteDelivered(_ entries: [Message<RedisMetadata>]) {
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

        /// `[[id, [field, value, …]], …]`. Every message has its entry id. An entry deleted from
        /// the stream but still pending has nil fields and is skipped: it has no payload to
        /// handle, and `XAUTOCLAIM` (Redis 7) removes such entries from the pending list.
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
            // Entries come in id order, so the first and last bound them.
            let (low, high) = (first, last)
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
}
