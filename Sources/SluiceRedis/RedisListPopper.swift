//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice

/// Builds list pops and reads their replies. Used only on the read connection's thread.
struct RedisListPopper {
    let keys: RedisKeys
    let blockSeconds: String

    init(keys: RedisKeys, blockSeconds: String) {
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
        return Self.messages(items, key: String(decoding: Array(self.keys.source.utf8), as: UTF8.self))
    }

    /// Messages for the items of a list reply, each holding `key`; their payloads share one
    /// buffer (see `Payload.packing`). With `first`, the items get consecutive positions from
    /// it (reliable mode).
    static func messages(_ items: RedisReplyRef, key: String, first: RedisPosition? = nil) -> [Message<RedisMetadata>] {
        let payloads = Payload.packing((0..<items.count).lazy.map { items[$0].unsafeBytes })
        var messages: [Message<RedisMetadata>] = []
        messages.reserveCapacity(payloads.count)
        var position = first
        for payload in payloads {
            messages.append(Message(payload: payload, metadata: RedisMetadata(key: key, entryID: nil, deliveryCount: nil, value: payload, position: position)))
            position?.index += 1
        }
        return messages
    }
}
