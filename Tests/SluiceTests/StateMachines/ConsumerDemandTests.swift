//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Testing

@testable import Sluice

/// `ConsumerDemand` driven directly: a producer that always sends exactly what is pending, and a
/// consumer that takes slices and re-asks after each one, like the runner does.
@Suite("ConsumerDemand state machine")
struct ConsumerDemandTests {
    /// Simulates `rounds` deliveries where each delivery is exactly the outstanding ask of the
    /// previous round; returns the asks and the slice sizes the stage would see.
    private func simulate(maxDemand: Int, minDemand: Int, deliveries: Int) -> (asks: [Int], slices: [Int]) {
        var demand = ConsumerDemand(maxDemand: maxDemand, minDemand: minDemand, manual: false)
        var asks = [demand.initialAsk()]
        var slices: [Int] = []
        var inFlight = [asks[0]]  // batches the producer sends, one per ask, in order
        for _ in 0..<deliveries {
            let batch = inFlight.removeFirst()
            var start = 0
            while start < batch {
                let slice = min(demand.sliceSize, batch - start)
                let (ask, excess) = demand.consume(slice)
                #expect(excess == 0)
                slices.append(slice)
                if ask > 0 {
                    asks.append(ask)
                    inFlight.append(ask)
                }
                start += slice
            }
        }
        return (asks, slices)
    }

    @Test("10/5 asks 10, then 5, 5, … in slices of 5")
    func tenFive() {
        let (asks, slices) = self.simulate(maxDemand: 10, minDemand: 5, deliveries: 5)
        #expect(asks == [10, 5, 5, 5, 5, 5, 5])
        #expect(slices == [5, 5, 5, 5, 5, 5])
    }

    @Test("100/20 asks 100, 80, 100, 80 in slices of at most 80")
    func hundredTwenty() {
        let (asks, slices) = self.simulate(maxDemand: 100, minDemand: 20, deliveries: 4)
        #expect(asks == [100, 80, 100, 80, 100])
        #expect(slices == [80, 20, 80, 80, 20, 80])
    }

    @Test("the default minimum demand is half the maximum")
    func defaultMinDemand() {
        #expect(SubscriptionOptions<Int>().maxDemand == 1000)
        #expect(SubscriptionOptions<Int>().effectiveMinDemand == 500)
        #expect(SubscriptionOptions<Int>(maxDemand: 7).effectiveMinDemand == 3)
        #expect(SubscriptionOptions<Int>(maxDemand: 1).effectiveMinDemand == 0)
    }

    @Test("minDemand 0 hands over whole batches and re-asks only when nothing is pending")
    func minDemandZero() {
        var demand = ConsumerDemand(maxDemand: 4, minDemand: 0, manual: false)
        #expect(demand.sliceSize == 4)
        #expect(demand.initialAsk() == 4)
        #expect(demand.consume(3) == (ask: 0, excess: 0))
        #expect(demand.pending == 1)
        #expect(demand.consume(1) == (ask: 4, excess: 0))
        #expect(demand.pending == 4)
    }

    @Test("pending falling exactly to minDemand re-asks; staying above does not")
    func boundary() {
        var demand = ConsumerDemand(maxDemand: 10, minDemand: 4, manual: false)
        _ = demand.initialAsk()
        #expect(demand.consume(5) == (ask: 0, excess: 0))  // pending 5 > 4
        #expect(demand.consume(1) == (ask: 6, excess: 0))  // pending 4 <= 4: back up to 10
        #expect(demand.pending == 10)
    }

    @Test("manual mode never asks by itself and counts the stage's own asks")
    func manual() {
        var demand = ConsumerDemand(maxDemand: 10, minDemand: 5, manual: true)
        #expect(demand.initialAsk() == 0)
        #expect(demand.pending == 0)
        demand.asked(30)
        #expect(demand.consume(30) == (ask: 0, excess: 0))
        #expect(demand.pending == 0)
        demand.asked(2)
        #expect(demand.consume(1) == (ask: 0, excess: 0))
        #expect(demand.pending == 1)
    }

    @Test("events beyond what was asked are reported as excess")
    func excess() {
        var demand = ConsumerDemand(maxDemand: 10, minDemand: 5, manual: true)
        demand.asked(3)
        #expect(demand.consume(5) == (ask: 0, excess: 2))
        #expect(demand.pending == 0)
        var automatic = ConsumerDemand(maxDemand: 10, minDemand: 5, manual: false)
        _ = automatic.initialAsk()
        #expect(automatic.consume(12) == (ask: 10, excess: 2))
    }
}
