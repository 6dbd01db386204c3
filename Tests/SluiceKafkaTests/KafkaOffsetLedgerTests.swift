//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceKafka
import Testing

/// The contiguous-offset rule and stale settlements, without a broker.
@Suite struct KafkaOffsetLedgerTests {
    let key = KafkaPartitionKey(topic: "t", partition: 0)

    func ledger(taking offsets: [Int64]) -> (KafkaOffsetLedger, UInt64) {
        var ledger = KafkaOffsetLedger()
        let assignment = ledger.assign(self.key)
        for offset in offsets { ledger.took(self.key, offset: offset) }
        return (ledger, assignment)
    }

    @Test func commitsTheHighestContiguousSettledOffsetPlusOne() {
        var (ledger, assignment) = self.ledger(taking: [1, 2, 3, 4, 5])
        for offset: Int64 in [1, 2, 3, 5] { ledger.settle(self.key, offset: offset, assignment: assignment, as: .done) }
        let commits1 = ledger.takeCommits()
        #expect(commits1.map(\.1) == [4])
        #expect(ledger.inFlight == 1)
        // Nothing moved: nothing to commit again.
        let commits2 = ledger.takeCommits()
        #expect(commits2.isEmpty)
        ledger.settle(self.key, offset: 4, assignment: assignment, as: .done)
        let commits3 = ledger.takeCommits()
        #expect(commits3.map(\.1) == [6])
        #expect(ledger.inFlight == 0)
    }

    @Test func offsetsWithGapsAreContiguousByWhatWasTaken() {
        // A compacted topic: offsets 10, 12, 15 were taken.
        var (ledger, assignment) = self.ledger(taking: [10, 12, 15])
        ledger.settle(self.key, offset: 12, assignment: assignment, as: .done)
        let commits2 = ledger.takeCommits()
        #expect(commits2.isEmpty)
        ledger.settle(self.key, offset: 10, assignment: assignment, as: .done)
        let commits4 = ledger.takeCommits()
        #expect(commits4.map(\.1) == [13])
    }

    @Test func aHeldMessageStopsTheCommitBeforeIt() {
        var (ledger, assignment) = self.ledger(taking: [0, 1, 2])
        ledger.settle(self.key, offset: 0, assignment: assignment, as: .done)
        ledger.settle(self.key, offset: 1, assignment: assignment, as: .held)
        ledger.settle(self.key, offset: 2, assignment: assignment, as: .done)
        let commits5 = ledger.takeCommits()
        #expect(commits5.map(\.1) == [1])
        #expect(ledger.inFlight == 0)
    }

    @Test func aDeadLetterIsInFlightUntilConfirmed() {
        var (ledger, assignment) = self.ledger(taking: [0, 1])
        ledger.settle(self.key, offset: 0, assignment: assignment, as: .deadLettering)
        ledger.settle(self.key, offset: 1, assignment: assignment, as: .done)
        #expect(ledger.inFlight == 1)
        let commits2 = ledger.takeCommits()
        #expect(commits2.isEmpty)
        ledger.settle(self.key, offset: 0, assignment: assignment, as: .done)
        #expect(ledger.inFlight == 0)
        let commits6 = ledger.takeCommits()
        #expect(commits6.map(\.1) == [2])
    }

    @Test func settlementsOfARevokedAssignmentAreStale() {
        var (ledger, old) = self.ledger(taking: [0, 1])
        let abandoned = ledger.revoke([self.key])
        #expect(abandoned == 2)
        let new = ledger.assign(self.key)
        #expect(new != old)
        ledger.took(self.key, offset: 0)
        let staleAccepted = ledger.settle(self.key, offset: 0, assignment: old, as: .done)
        #expect(!staleAccepted)
        #expect(ledger.staleDropped == 1)
        let commits2 = ledger.takeCommits()
        #expect(commits2.isEmpty)
        let currentAccepted = ledger.settle(self.key, offset: 0, assignment: new, as: .done)
        #expect(currentAccepted)
        let commits5 = ledger.takeCommits()
        #expect(commits5.map(\.1) == [1])
    }

    @Test func onlyTheNamedPartitionsAreCommittedOnRevoke() {
        var ledger = KafkaOffsetLedger()
        let other = KafkaPartitionKey(topic: "t", partition: 1)
        let first = ledger.assign(self.key)
        let second = ledger.assign(other)
        ledger.took(self.key, offset: 0)
        ledger.took(other, offset: 0)
        ledger.settle(self.key, offset: 0, assignment: first, as: .done)
        ledger.settle(other, offset: 0, assignment: second, as: .done)
        let commits7 = ledger.takeCommits([other])
        #expect(commits7.map(\.0) == [other])
        let commits8 = ledger.takeCommits()
        #expect(commits8.map(\.0) == [self.key])
    }
}
