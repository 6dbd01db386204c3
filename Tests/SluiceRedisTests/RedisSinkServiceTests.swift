//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import ServiceLifecycle
import Sluice
@_spi(Internal) import SluiceRedis
import SluiceTestKit
import Testing

/// The sink and client connect in `run()` / `connect()`, not when they are created.
@Suite("Redis sink as a service", .timeLimit(.minutes(1)))
struct RedisSinkServiceTests {
    let logger = Logger(label: "sluice.test.sink-service")

    /// Nothing listens on port 1: creating succeeds (nothing connects), connecting fails with
    /// a typed error, and so does running the sink as a service.
    @Test func creatingConnectsNothingAndConnectingAnUnreachableRedisFails() async throws {
        var configuration = try RedisTestEnvironment.configuration("unreachable", mode: .list)
        configuration.port = 1
        configuration.host = "127.0.0.1"
        let sink = try RedisSink(configuration: configuration, logger: self.logger)
        let client = RedisClient(configuration: configuration, logger: self.logger)
        let connectError = await #expect(throws: RedisError.self) { try await sink.connect() }
        #expect(connectError?.code == .connectionFailed)
        let clientError = await #expect(throws: RedisError.self) { try await client.connect() }
        #expect(clientError?.code == .connectionFailed)
        let runError = await #expect(throws: RedisError.self) { try await sink.run() }
        #expect(runError?.code == .connectionFailed)
        await client.close()
    }

    /// In a service group the sink serves sends until graceful shutdown, then closes: a send
    /// after that fails with `shutDown`.
    @Test func aSinkRunsInAServiceGroupUntilGracefulShutdown() async throws {
        let configuration = try RedisTestEnvironment.configuration("sink-service", mode: .list)
        let client = RedisClient(configuration: configuration, logger: self.logger)
        try await client.connect()
        let sink = try RedisSink(configuration: configuration, logger: self.logger)
        let group = ServiceGroup(services: [sink], logger: self.logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await sink.send([Array("a".utf8), Array("b".utf8)])
            #expect(try await client.strings(configuration.key) == ["a", "b"])
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let late = await #expect(throws: RedisError.self) { try await sink.send([Array("late".utf8)]) }
        #expect(late?.code == .shutDown)
        #expect(try await client.strings(configuration.key) == ["a", "b"])
        await client.cleanUp(configuration.key)
        await client.close()
    }
}
