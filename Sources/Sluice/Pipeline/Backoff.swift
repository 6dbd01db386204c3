//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Jittered exponential backoff: how long to wait before attempt `n + 1` after `n` failed.
///
/// The wait after the first failure is ``initial``; each further failure multiplies it by
/// ``multiplier``, up to ``maximum``. ``jitter`` makes a random fraction of each wait shorter,
/// so that many clients failing together do not retry in step:
///
/// ```swift
/// let backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(2), multiplier: 2, jitter: 0.5)
/// backoff.delay(forAttempt: 1) // 50 ms
/// backoff.delay(forAttempt: 3) // 200 ms
/// var random = SystemRandomNumberGenerator()
/// backoff.delay(forAttempt: 3, using: &random) // 100…200 ms
/// ```
///
/// ``RetryPolicy`` (retries of failed messages) and the broker connectors' reconnects both use
/// this type.
public struct Backoff: Hashable, Sendable {
    /// The wait after the first failed attempt (0 or more).
    public var initial: Duration
    /// The longest wait (at least ``initial``).
    public var maximum: Duration
    /// How much the wait grows after each failed attempt (1 or more).
    public var multiplier: Double
    /// The fraction (0…1) of each wait that is random: a wait `w` becomes a uniform value in
    /// `w × (1 − jitter) … w`.
    public var jitter: Double

    /// Creates a backoff.
    @inlinable
    public init(initial: Duration, maximum: Duration, multiplier: Double = 2, jitter: Double = 0.2) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    @inlinable
    public func delay(forAttempt attempt: Int) -> Duration {
        // A wait that never grows needs no loop (a retry count may be large).
        if self.initial == .zero || self.multiplier == 1 { return min(self.initial, self.maximum) }
        var wait = self.initial
        for _ in 1..<max(1, attempt) {
            wait = wait.scaled(by: self.multiplier)
            if wait >= self.maximum { return self.maximum }
        }
        return min(wait, self.maximum)
    }

    /// The wait after failed attempt number `attempt` (1-based), with jitter drawn from
    /// `generator`.
    @inlinable
    public func delay(forAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let wait = self.delay(forAttempt: attempt)
        guard self.jitter > 0 else { return wait }
        return wait.scaled(by: 1 - Double.random(in: 0...min(1, self.jitter), using: &generator))
    }

    /// Checks the ranges: `initial` 0 or more, `maximum` at least `initial`, `multiplier` 1 or
    /// more, `jitter` within 0…1.
    ///
    /// - Throws: ``SluiceError`` `invalidOption` naming the first field out of its range.
    @inlinable
    public func validate() throws(SluiceError) {
        try self.validate(initial: "initial", maximum: "maximum", multiplier: "multiplier", jitter: "jitter")
    }

    /// Checks the ranges; `initial`, `maximum`, `multiplier` and `jitter` name the fields in
    /// the error (for example `retry.initialBackoff`).
    ///
    /// - Throws: ``SluiceError`` `invalidOption` for the first field out of its range.
    @inlinable
    package func validate(initial: String, maximum: String, multiplier: String, jitter: String) throws(SluiceError) {
        guard self.initial >= .zero else { throw .invalidOption(initial, self.initial, "must not be negative") }
        guard self.maximum >= self.initial else {
            throw .invalidOption(maximum, self.maximum, "must be at least \(initial) (\(self.initial))")
        }
        guard self.multiplier >= 1 else { throw .invalidOption(multiplier, self.multiplier, "must be 1 or more") }
        guard (0...1).contains(self.jitter) else { throw .invalidOption(jitter, self.jitter, "must be between 0 and 1") }
    }
}

extension Duration {
    /// This duration multiplied by `factor` (the package's one way to scale a duration).
    @inlinable
    package func scaled(by factor: Double) -> Duration {
        let attoseconds = Double(self.components.seconds) * 1e18 + Double(self.components.attoseconds)
        let scaled = attoseconds * factor
        return .seconds(Int64(scaled / 1e18)) + .nanoseconds(Int64(scaled.truncatingRemainder(dividingBy: 1e18) / 1e9))
    }

    /// This duration in seconds, as a `Double` (for rates and command arguments).
    @inlinable
    package var inSeconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }

    /// This duration in whole milliseconds, rounded down.
    @inlinable
    package var inMilliseconds: Int {
        Int(self.components.seconds) * 1000 + Int(self.components.attoseconds / 1_000_000_000_000_000)
    }
}
