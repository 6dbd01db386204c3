//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
@_spi(Internal) import SluiceRedis
import Testing

@Suite("Redis reads pack their payloads into one buffer", .timeLimit(.minutes(2)))
struct RedisPayloadTests {
    @Test(arguments: [RedisConfiguration.Mode.list, .reliable, .stream])
    func theMessagesOfOneReadShareABuffer(mode: RedisConfiguration.Mode) async throws {
        let configuration = try RedisTestEnvironment.configuration("packed", mode: mode)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        let items = payloads(2000)
        if mode == .stream {
            try await client.add(configuration.key, items)
        } else {
            try await client.push(configuration.key, items)
        }
        // One processor handles each read's messages in order; record where each payload lies.
        let seen = Recorder<(text: String, address: UInt, count: Int)>()
        let pipeline = Pipeline("packed", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 1000) { message in
                let address = message.payload.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
                seen.append((message.text, address, message.payload.count))
            }
        }
        try await withRunningPipeline(pipeline) {
            try await waitUntil("2000 handled") { seen.count >= 2000 }
        }
        let all = seen.all
        #expect(Set(all.map(\.text)) == Set(items.map { String(decoding: $0, as: UTF8.self) }))
        // A payload that does not follow the one before in memory starts a buffer: one per read,
        // not one per message (each read takes up to the pending demand (asked and not yet served), here hundreds).
        let starts = zip(all.dropFirst(), all).filter { $0.0.address != $0.1.address + UInt($0.1.count) }.count + 1
        #expect(starts < 50, "\(starts) buffers for \(all.count) messages")
    }
}
