//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceConnector
import Testing

@Suite("Reconnect backoff")
struct ReconnectTests {
    @Test func withoutJitterTheWaitDoublesUpToTheMaximum() {
        let backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(500), multiplier: 2, jitter: 0)
        var reconnect = Reconnect(backoff: backoff, random: SeededRandom(seed: 1))
        let waits = (0..<7).map { _ in reconnect.failed() }
        #expect(waits == [50, 100, 200, 400, 500, 500, 500].map { Duration.milliseconds($0) })
        #expect(reconnect.failures == 7)
        let first = reconnect.connected()
        #expect(first, "a connection after failures is a reconnect")
        let afterReset = reconnect.failed()
        #expect(afterReset == .milliseconds(50), "a connection resets the schedule")
        let second = reconnect.connected()
        let third = reconnect.connected()
        #expect(second)
        #expect(!third, "no failure since: not a reconnect")
    }

    @Test func aWaitThatNeverGrowsIsAnsweredForAnyAttempt() {
        #expect(Backoff(initial: .zero, maximum: .seconds(1)).delay(forAttempt: Int.max) == .zero)
        #expect(Backoff(initial: .milliseconds(5), maximum: .seconds(1), multiplier: 1).delay(forAttempt: 1_000_000_000) == .milliseconds(5))
    }

    @Test func backoffRangesAreCheckedWithTypedErrors() throws {
        try Backoff(initial: .milliseconds(10), maximum: .seconds(1)).validate()
        let errors: [(Backoff, String)] = [
            (Backoff(initial: .milliseconds(-1), maximum: .seconds(1)), "initial"),
            (Backoff(initial: .seconds(2), maximum: .seconds(1)), "maximum"),
            (Backoff(initial: .milliseconds(10), maximum: .seconds(1), multiplier: 0.5), "multiplier"),
            (Backoff(initial: .milliseconds(10), maximum: .seconds(1), jitter: 2), "jitter"),
        ]
        for (backoff, field) in errors {
            let error = #expect(throws: SluiceError.self) { try backoff.validate() }
            #expect(error?.code == .invalidOption)
            #expect(error?.message.contains("invalid option \(field)=") == true)
        }
    }

    @Test func jitterShortensEachWaitByAtMostItsFraction() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10), multiplier: 3, jitter: 0.5)
        var reconnect = Reconnect(backoff: backoff, random: SeededRandom(seed: 7))
        var distinct: Set<Duration> = []
        for attempt in 1...8 {
            let wait = reconnect.failed()
            let full = backoff.delay(forAttempt: attempt)
            #expect(wait <= full && wait >= full.scaled(by: 0.5), "attempt \(attempt): \(wait) against \(full)")
            distinct.insert(wait)
        }
        #expect(distinct.count == 8)
    }

    @Test func onlyTheFirstAndEveryTwentiethFailureIsLogged() {
        var reconnect = Reconnect(backoff: Backoff(initial: .zero, maximum: .zero))
        var logged: [Int] = []
        for attempt in 1...45 {
            _ = reconnect.failed()
            if reconnect.shouldLog { logged.append(attempt) }
        }
        #expect(logged == [1, 20, 40])
    }

    @Test func retryPolicyUsesTheSameBackoff() {
        let policy = RetryPolicy(maxAttempts: 5, initialBackoff: .milliseconds(10), maxBackoff: .milliseconds(70), multiplier: 3, jitter: 0)
        #expect((1...4).map { policy.backoff(afterAttempt: $0) } == [10, 30, 70, 70].map { Duration.milliseconds($0) })
        #expect(policy.backoff == Backoff(initial: .milliseconds(10), maximum: .milliseconds(70), multiplier: 3, jitter: 0))
    }
}
