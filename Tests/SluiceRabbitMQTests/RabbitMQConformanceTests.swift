//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceRabbitMQ
import SluiceTestKit
import Testing

/// The source conformance kit against the real RabbitMQ.
@Suite("RabbitMQ source conformance", .timeLimit(.minutes(2)))
struct RabbitMQConformanceTests {
    enum Check: String, CaseIterable, Sendable {
        case demandPerSubscription, backPressure, settlesEveryMessageOnce, acknowledgesOnlyProcessed
        case drainGivesBackUnemitted, cancelMidBatchLosesNothing

        func run(_ kit: SourceConformance<RabbitMQSource>) async throws {
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

    @Test("a RabbitMQ source keeps the conformance kit's rules", arguments: Check.allCases)
    func keepsTheRule(check: Check) async throws {
        let configuration = try RabbitTestEnvironment.configuration("conformance-\(check.rawValue)")
        let logger = Logger(label: "sluice.test.amqp.conformance")
        let client = RabbitMQClient(configuration: configuration)
        try await client.declare(configuration)
        let queue = configuration.queue
        let probe = BrokerProbe(
            push: { payloads in try await client.publish(payloads) },
            held: { try await client.readyCount(queue) },
            pending: { try await RabbitControl.counts(queue).unacknowledged }
        )
        let kit = try SourceConformance(guarantee: .atLeastOnce, logger: logger, probe: probe) {
            RabbitMQSource(configuration: configuration)
        }
        do {
            try await check.run(kit)
        } catch {
            try? await client.delete(queue: queue)
            await client.close()
            throw error
        }
        try await client.delete(queue: queue)
        await client.close()
    }
}
