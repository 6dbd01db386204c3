//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceConnector

extension RedisSource {
    /// How many messages wait in Redis for this source, not yet taken; asked from Redis
    /// while a pipeline runs the source.
    ///
    /// - ``RedisConfiguration/Mode/list`` and ``RedisConfiguration/Mode/reliable``: `LLEN` of
    ///   the source list (items moved to a consumer's processing list are taken, so they do
    ///   not count).
    /// - ``RedisConfiguration/Mode/stream``: the consumer group's `lag` in `XINFO GROUPS`
    ///   (Redis 7.0 or newer): entries not yet delivered to the group. `nil` when Redis
    ///   reports it unknown (after some deletions, or before Redis 7.0).
    ///
    /// Each call is one command with a reply of constant size (`XINFO GROUPS` answers one
    /// short entry per group of the stream), sent on the source's acknowledgement connection
    /// and its thread, so it never blocks the caller's thread and is cheap enough to call once
    /// a second. The session started last answers when several pipelines run this value.
    ///
    /// - Throws: ``RedisError``: `shutDown` while no pipeline runs the source (before it
    ///   connected, or after it ended); `connectionFailed` or `connectionLost` while Redis
    ///   cannot be reached; `noGroup` when the stream has no such group any more.
    public func lag() async throws(RedisError) -> Int? {
        let notRunning = RedisError(.shutDown, "the Redis source is not running: its lag is known only while a pipeline runs it")
        return try await self.running.session(orThrow: notRunning).lag()
    }
}

extension RedisSession {
    /// ``RedisSource/lag()`` of this session, on the acknowledgement connection.
    func lag() async throws(RedisError) -> Int? {
        let key = self.keys.source
        let group = self.configuration.group
        let stream = self.configuration.mode == .stream
        var command = stream ? RedisCommand("XINFO", "GROUPS") : RedisCommand("LLEN")
        command.append(key)
        let query = command
        return try await self.acks.run { link throws(RedisError) in
            try link.perform { context throws(RedisError) in
                try context.command(query) { reply throws(RedisError) -> Int? in
                    guard stream else {
                        guard reply.kind == .integer else { throw RedisError(.unexpectedReply, "LLEN \(key) answered no integer") }
                        return reply.integer
                    }
                    return try Self.groupLag(reply, group: group, key: key)
                }
            }
        }
    }

    /// The `lag` field of `group` in an `XINFO GROUPS` reply (`nil`: unknown or absent).
    private static func groupLag(_ reply: RedisReplyRef, group: String, key: String) throws(RedisError) -> Int? {
        for index in 0..<reply.count {
            let entry = reply[index]
            var name: String?
            var lag: Int?
            var field = 0
            while field + 1 < entry.count {
                let value = entry[field + 1]
                switch entry[field].text {
                case "name": name = value.text
                case "lag": lag = value.kind == .integer ? value.integer : nil
                default: break
                }
                field += 2
            }
            if name == group { return lag }
        }
        throw RedisError(.noGroup, "stream \(key) has no consumer group \(group)")
    }
}
