//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

package import Sluice

/// The reconnect schedule of one connection: jittered exponential backoff (the engine's
/// ``Backoff``) over consecutive failures, reset by a successful connection.
///
/// A pure value; the connection loop asks it how long to wait and waits itself.
package struct Reconnect<Random: RandomNumberGenerator & Sendable>: Sendable {
    /// The backoff between attempts.
    package let backoff: Backoff
    private var random: Random
    /// Consecutive failures since the last successful connection.
    private(set) package var failures = 0

    /// Creates a schedule that draws its jitter from `random`.
    package init(backoff: Backoff, random: Random) {
        self.backoff = backoff
        self.random = random
    }

    /// An attempt failed: how long to wait before the next one.
    package mutating func failed() -> Duration {
        self.failures += 1
        return self.backoff.delay(forAttempt: self.failures, using: &self.random)
    }

    /// Whether the failure just recorded should be logged (the first, then every 20th), so a
    /// long outage does not flood the log.
    package var shouldLog: Bool { self.failures == 1 || self.failures % 20 == 0 }

    /// A connection was established. Returns whether it follows failures (a reconnect).
    @discardableResult
    package mutating func connected() -> Bool {
        defer { self.failures = 0 }
        return self.failures > 0
    }
}

extension Reconnect where Random == SystemRandomNumberGenerator {
    /// Creates a schedule with the system's random numbers.
    package init(backoff: Backoff) {
        self.init(backoff: backoff, random: SystemRandomNumberGenerator())
    }
}
