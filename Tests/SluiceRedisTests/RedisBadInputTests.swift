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

@Suite("Redis bad input", .timeLimit(.minutes(1)))
struct RedisBadInputTests {
    private func runExpectingError(_ configuration: RedisConfiguration) async throws -> RedisError? {
        let pipeline = Pipeline("bad", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { _ in }
        }
        do {
            try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
            Issue.record("the pipeline ran although it should not")
            return nil
        } catch let error as RedisError {
            return error
        }
    }

    @Test func unreachableRedisAtStartIsATypedError() async throws {
        var configuration = RedisConfiguration(key: "unreachable")
        configuration.port = 1
        configuration.connectTimeout = .seconds(1)
        let error = try #require(try await self.runExpectingError(configuration))
        #expect(error.code == .connectionFailed)
        #expect(error.message.contains("127.0.0.1:1"))
    }

    @Test func wrongPasswordIsATypedErrorThatHidesThePassword() async throws {
        var configuration = try RedisTestEnvironment.configuration("auth", mode: .reliable)
        configuration.password = "s3cret-do-not-show"
        let error = try #require(try await self.runExpectingError(configuration))
        #expect(error.code == .authenticationFailed)
        #expect(!error.description.contains("s3cret-do-not-show"))
        #expect(!configuration.description.contains("s3cret-do-not-show"))
    }

    @Test func keyOfTheWrongTypeIsATypedErrorAndNothingIsTaken() async throws {
        for mode in [RedisConfiguration.Mode.list, .reliable, .stream] {
            let configuration = try RedisTestEnvironment.configuration("wrongtype", mode: mode)
            let client = RedisClient(configuration: configuration)
            _ = try await client.command(["HSET", configuration.key, "field", "value"])
            let error = try #require(try await self.runExpectingError(configuration))
            #expect(error.code == .wrongType, "\(mode)")
            #expect(error.message.contains(configuration.key))
            #expect(try await client.command(["HGET", configuration.key, "field"]).text == "value")
            await client.cleanUp(configuration.key)
            await client.close()
        }
    }

    /// An error reply to a pop (read, like every reply on the read connection, through the
    /// source's reply arena) ends the pipeline with a typed error.
    @Test func aListKeyReplacedByAnotherTypeMidRunEndsThePipelineWithATypedError() async throws {
        let configuration = try RedisTestEnvironment.configuration("retyped", mode: .list)
        let client = RedisClient(configuration: configuration)
        defer { Task { await client.cleanUp(configuration.key); await client.close() } }
        try await client.push(configuration.key, payloads(50))
        let handled = Recorder<String>()
        let pipeline = Pipeline("retyped", source: RedisSource(configuration: configuration)) {
            Processors(concurrency: 1, maxDemand: 10) { message in handled.append(message.text) }
        }
        let error = try await withTimeLimit(.seconds(20)) { () -> RedisError? in
            try await withThrowingTaskGroup(of: RedisError?.self) { group in
                group.addTask {
                    do {
                        try await pipeline.run()
                        return nil
                    } catch let error as RedisError {
                        return error
                    }
                }
                try await waitUntil("50 handled") { handled.count >= 50 }
                _ = try await client.command(["SET", configuration.key, "not a list"])
                return try await group.next() ?? nil
            }
        }
        #expect(error?.code == .wrongType)
        #expect(Set(handled.all).count == 50)
    }

    @Test func streamModeOnAListIsATypedErrorAndTheListIsUntouched() async throws {
        let configuration = try RedisTestEnvironment.configuration("list-as-stream", mode: .stream)
        let client = RedisClient(configuration: configuration)
        try await client.push(configuration.key, payloads(3))
        let error = try #require(try await self.runExpectingError(configuration))
        #expect(error.code == .wrongType)
        #expect(try await client.length(configuration.key) == 3)
        await client.cleanUp(configuration.key)
        await client.close()
    }

    @Test(arguments: [
        "redis://127.0.0.1:6379",  // no key
        "http://127.0.0.1/?key=a",  // scheme
        "redis://127.0.0.1:6379/notanumber?key=a",
        "redis://127.0.0.1:6379/0?key=a&mode=fifo",
        "redis://127.0.0.1:6379/0?key=a&bogus=1",
        "redis://:hunter2@127.0.0.1:6379/0?key=a&batch=0",
        "redis://127.0.0.1:99999/0?key=a",
        "not a url at all ::::",
    ])
    func malformedURLIsATypedError(url: String) throws {
        #expect {
            _ = try RedisSource(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidURL && !error.description.contains("hunter2")
        }
    }

    @Test func urlsAreRead() throws {
        let full = try RedisConfiguration(url: "redis://alice:p%40ss@redis.example:6380/3?key=jobs&mode=stream&group=g&consumer=c&batch=500")
        #expect(full.host == "redis.example")
        #expect(full.port == 6380)
        #expect(full.database == 3)
        #expect(full.username == "alice")
        #expect(full.password == "p@ss")
        #expect(full.key == "jobs")
        #expect(full.mode == .stream)
        #expect(full.group == "g")
        #expect(full.consumer == "c")
        #expect(full.batchSize == 500)
        #expect(!full.description.contains("p@ss"))
        let unix = try RedisConfiguration(url: "unix:///var/run/redis.sock?key=q&db=2&mode=list")
        #expect(unix.unixSocketPath == "/var/run/redis.sock")
        #expect(unix.database == 2)
        #expect(unix.mode == .list)
        #expect(try RedisConfiguration(url: "redis://127.0.0.1?key=k").mode == .reliable)
    }
}
