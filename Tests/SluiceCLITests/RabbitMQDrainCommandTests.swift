//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import SluiceRabbitMQ
import Testing

@Suite("sluice drain amqp://", .timeLimit(.minutes(1)))
struct RabbitMQDrainCommandTests {
    @Test func drainsExactlyTheCountAndLeavesTheRest() async throws {
        let (url, queue, client) = try await Brokers.rabbitQueue("drain", holding: (0..<300).map { "item-\($0)" })
        let result = try await sluice(["drain", url, "--count", "200", "--max-demand", "50"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix("drained 200 in "))
        #expect(result.output.contains("msg/s)"))
        #expect(try await Brokers.readyCount(client, queue, reaching: 100) == 100)
        try await client.delete(queue: queue)
        await client.close()
    }

    @Test func aMissingQueueOrBadURLPrintsOneLineAndFails() async throws {
        let base = try Brokers.rabbitMQ()
        let missing = try await sluice(["drain", "\(base)?queue=sluice-cli-no-such-queue", "--count", "1"])
        #expect(missing.status != 0)
        #expect(missing.error.split(separator: "\n").count == 1)
        #expect(missing.error.contains("notFound"))
        let bad = try await sluice(["drain", "amqp://guest:hunter2@127.0.0.1:16672/?prefetch=1", "--count", "1"])
        #expect(bad.status != 0)
        #expect(bad.error.split(separator: "\n").count == 1)
        #expect(bad.error.contains("missing queue"))
        #expect(!bad.error.contains("hunter2"))
    }
}
