//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceRabbitMQ
import Testing

@Suite("RabbitMQ source lag", .timeLimit(.minutes(1)))
struct RabbitMQLagTests {
    @Test("the lag is the queue's ready count: N − the deliveries taken, as rabbitmqctl counts it; 0 once all were settled")
    func lagIsTheReadyCount() async throws {
        let (configuration, client) = try await preloadedQueue("lag", count: 40)
        let queue = configuration.queue
        let source = RabbitMQSource(configuration: configuration)
        await #expect(throws: RabbitMQError.self, "not running yet") { _ = try await source.lag() }
        let release = Flag()
        let handled = Recorder<String>()
        let pipeline = Pipeline("lag", source: source) {
            Processors(concurrency: 1, maxDemand: 4) { message in
                // Every delivery is held until released: the broker delivers the prefetch and stops.
                while !release.isSet { try await Task.sleep(for: .milliseconds(5)) }
                handled.append(message.text)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            try await waitUntil("the prefetch was delivered and the broker's count shows it") {
                let counts = try await RabbitControl.counts(queue)
                return counts.unacknowledged > 0 && counts.ready + counts.unacknowledged == 40
            }
            let counts = try await RabbitControl.counts(queue)
            let lag = try await source.lag()
            #expect(lag == counts.ready, "broker: \(counts)")
            #expect(lag == 40 - counts.unacknowledged)
            release.set()
            try await waitUntil("every message was handled and acknowledged") {
                let ready = try await source.lag()
                guard ready == 0, handled.count == 40 else { return false }
                return try await RabbitControl.counts(queue).unacknowledged == 0
            }
            pipeline.drain()
            try await group.waitForAll()
        }
        await #expect(throws: RabbitMQError.self, "ended") { _ = try await source.lag() }
        try await client.delete(queue: queue)
        await client.close()
    }
}
