//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
@_spi(Internal) import SluiceRedis
import SluiceTestKit
import Testing

/// The source conformance kit against the real Redis, for every mode.
@Suite("Redis source conformance", .timeLimit(.minutes(2)))
struct RedisConformanceTests {
    /// The kit's checks, each run for every mode that promises what it checks.
    enum Check: String, CaseIterable, Sendable {
        case demandPerSubscription, backPressure, settlesEveryMessageOnce, acknowledgesOnlyProcessed
        case drainGivesBackUnemitted, cancelMidBatchLosesNothing

        func run(_ kit: SourceConformance<RedisSource>) async throws {
            switch self {
            case .demandPerSubscription: try await kit.checkDemandPerSubscription()
            case .backPressure: try await kit.checkBackPressure()
            case .settlesEveryMessageOnce: try await kit.checkSettlesEveryMessageOnce()
            case .acknowledgesOnlyProcessed: try await kit.checkAcknowledgesOnlyProcessed()
            case .drainGivesBackUnemitted: try await kit.checkDrainGivesBackUnemitted()
            case .cancelMidBatchLosesNothing: try await kit.checkCancelMidBatchLosesNothing()
            }
        }
    }

    /// Every check for every mode, but the at-least-once one for list mode.
    static let cases: [(Check, RedisConfiguration.Mode)] = Check.allCases.flatMap { check in
        [RedisConfiguration.Mode.list, .reliable, .stream]
            .filter { check != .cancelMidBatchLosesNothing || $0 != .list }
            .map { (check, $0) }
    }

    @Test("a Redis source keeps the conformance kit's rules", arguments: Self.cases)
    func keepsTheRule(check: Check, mode: RedisConfiguration.Mode) async throws {
        try await Self.withKit(check.rawValue, mode: mode) { kit in try await check.run(kit) }
    }

    /// The kit refuses the at-least-once check for a mode that does not promise it.
    @Test func listModeDoesNotClaimAtLeastOnce() async throws {
        try await Self.withKit("claim", mode: .list) { kit in
            await #expect(throws: ConformanceFailure.self) { try await kit.checkCancelMidBatchLosesNothing() }
        }
    }

    /// Runs `body` with a harness on a key of its own, then deletes the key.
    static func withKit(
        _ purpose: String,
        mode: RedisConfiguration.Mode,
        _ body: (SourceConformance<RedisSource>) async throws -> Void
    ) async throws {
        let configuration = try RedisTestEnvironment.configuration("conformance-\(purpose)", mode: mode)
        let logger = Logger(label: "sluice.test.conformance")
        let client = RedisClient(configuration: configuration, logger: logger)
        try await client.connect()
        let kit = try SourceConformance(
            guarantee: mode == .list ? .atMostOnce : .atLeastOnce,
            logger: logger,
            probe: Self.probe(client, configuration)
        ) {
            RedisSource(configuration: configuration)
        }
        do {
            try await body(kit)
        } catch {
            await client.cleanUp(configuration.key)
            await client.close()
            throw error
        }
        await client.cleanUp(configuration.key)
        await client.close()
    }

    /// What Redis holds for `configuration`'s key: list length (and the processing list), or
    /// for a stream its group's lag, pending count and entries read.
    static func probe(_ client: RedisClient, _ configuration: RedisConfiguration) -> BrokerProbe {
        let key = configuration.key
        switch configuration.mode {
        case .stream:
            return BrokerProbe(
                push: { payloads in try await client.add(key, payloads) },
                held: {
                    if let group = try await client.streamGroup(configuration) { return group.lag }
                    return try await client.command(["XLEN", key]).integer ?? -1
                },
                pending: { try await client.streamGroup(configuration)?.pending ?? 0 },
                acknowledged: {
                    guard let group = try await client.streamGroup(configuration) else { return 0 }
                    return group.read - group.pending
                }
            )
        default:
            let processing = "\(key):processing:\(configuration.consumer)"
            return BrokerProbe(
                push: { payloads in try await client.push(key, payloads) },
                held: { try await client.length(key) },
                pending: { configuration.mode == .reliable ? try await client.length(processing) : 0 }
            )
        }
    }
}

extension RedisClient {
    /// The consumer group of `configuration` on its stream (`nil` before the group exists).
    func streamGroup(_ configuration: RedisConfiguration) async throws -> (lag: Int, pending: Int, read: Int)? {
        // Before the source made its group the stream may not exist either (an error reply).
        guard (try await self.command(["EXISTS", configuration.key]).integer ?? 0) == 1 else { return nil }
        let reply = try await self.command(["XINFO", "GROUPS", configuration.key])
        for group in reply.array ?? [] {
            let fields = group.array ?? []
            var values: [String: RedisValue] = [:]
            var index = 0
            while index + 1 < fields.count {
                if let name = fields[index].text { values[name] = fields[index + 1] }
                index += 2
            }
            guard values["name"]?.text == configuration.group else { continue }
            return (values["lag"]?.integer ?? -1, values["pending"]?.integer ?? -1, values["entries-read"]?.integer ?? 0)
        }
        return nil
    }
}
