//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
import Testing

/// The test kit's waits end when their task is cancelled, so a time limit fails a stuck test
/// instead of hanging the run.
@Suite(.timeLimit(.minutes(1))) struct TestKitTests {
    @Test func aTimeLimitEndsAWaitForSleepersThatNeverCome() async throws {
        let clock = ManualClock()
        await #expect(throws: TimeLimitExceeded.self) {
            try await withTimeLimit(.milliseconds(100)) { await clock.waitForSleepers(1) }
        }
    }

    @Test func aCancelledWaitForAnOutcomeSaysTheMessageWasNotSettled() async throws {
        let source = InMemorySource()
        let waiting = Task { await source.waitForOutcome(of: 42) }
        try await Task.sleep(for: .milliseconds(20))
        waiting.cancel()
        #expect(await waiting.value == .notSettled)
        await #expect(throws: TimeLimitExceeded.self) {
            try await withTimeLimit(.milliseconds(100)) { await source.testMessage("never settled") }
        }
    }
}
