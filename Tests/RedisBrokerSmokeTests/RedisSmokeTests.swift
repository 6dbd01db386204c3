//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import Testing

@Suite("Redis through hiredis", .timeLimit(.minutes(1)))
struct RedisSmokeTests {
    /// RPUSH a batch, then take it back in slices with `LPOP key count` (Redis 6.2+), the
    /// destructive read the Redis list source uses.
    @Test func pushAndPopInBatches() async throws {
        let url = try BrokerEnvironment.require(BrokerEnvironment.redisURL)
        let key = BrokerEnvironment.uniqueName("list")
        let values = (0..<10).map { "message-\($0)" }

        let replies = try await onDedicatedThread(named: "redis-smoke") { () throws -> [RedisValue] in
            let redis = try HiredisContext.connect(url: url)
            defer { _ = try? redis.command(["DEL", key]) }
            return [
                try redis.command(["RPUSH", key] + values),
                try redis.command(["LPOP", key, "4"]),
                try redis.command(["LPOP", key, "100"]),
                try redis.command(["LPOP", key, "100"]),
                try redis.command(["EXISTS", key]),
            ]
        }

        #expect(replies[0] == .integer(10))
        #expect(replies[1] == .array(values[0..<4].map { .string($0) }))
        #expect(replies[2] == .array(values[4...].map { .string($0) }))
        #expect(replies[3] == .null, "LPOP with a count on an empty list answers nil")
        #expect(replies[4] == .integer(0))
    }
}
