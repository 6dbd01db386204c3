//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
@_spi(Internal) import SluiceKafka
import SluiceTestKit
import Synchronization
import Testing

/// The source conformance kit against the real broker.
///
/// A Kafka broker does not know what a consumer fetched and has not committed, so the probe
/// counts "held" (not taken by any source, or given back uncommitted, so delivered again) as
/// what was pushed minus the distinct messages the sources took and kept, and "pending" (taken, not settled)
/// from the sources' own counters; "acknowledged" is what the broker says the group committed.
@Suite("Kafka source conformance", .timeLimit(.minutes(2)))
struct KafkaConformanceTests {
    enum Check: String, CaseIterable, Sendable {
        case demandPerSubscription, backPressure, settlesEveryMessageOnce, acknowledgesOnlyProcessed
        case drainGivesBackUnemitted, cancelMidBatchLosesNothing

        func run(_ kit: SourceConformance<KafkaSource>) async throws {
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

    @Test("a Kafka source keeps the conformance kit's rules", arguments: Check.allCases)
    func keepsTheRule(check: Check) async throws {
        let configuration = try await KafkaTestEnvironment.configuration("conformance-\(check.rawValue)", partitions: 2)
        let counters = KafkaSourceCounters()
        let pushed = Atomic<Int>(0)
        let admin = KafkaTestEnvironment.admin(configuration)
        let topic = configuration.topics[0]
        let probe = BrokerProbe(
            push: { payloads in
                let keys = payloads.indices.map { Array("key-\($0)".utf8) }
                try await admin.produce(topic: topic, values: payloads, keys: keys)
                pushed.add(payloads.count, ordering: .relaxed)
            },
            held: { pushed.load(ordering: .relaxed) - counters.kept },
            pending: { counters.unsettled },
            acknowledged: { Int(try await KafkaTestEnvironment.committedTotal(configuration, partitions: 2)) }
        )
        let kit = try SourceConformance(guarantee: .atLeastOnce, logger: KafkaTestEnvironment.logger, probe: probe) {
            var source = KafkaSource(configuration: configuration)
            source.counters = counters
            return source
        }
        try await check.run(kit)
    }
}
