//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// How often and how fast a failed message (or batch) is tried again.
public struct RetryPolicy: Hashable, Sendable {
    /// Total attempts, the first included (1 means no retry).
    public var maxAttempts: Int
    /// The wait before the second attempt.
    public var initialBackoff: Duration
    /// The longest wait between attempts.
    public var maxBackoff: Duration
    /// How much the wait grows after each attempt.
    public var multiplier: Double
    /// The fraction (0…1) of each wait that is random: a wait `w` becomes a uniform value in
    /// `w × (1 − jitter) … w`.
    public var jitter: Double

    /// Creates a retry policy.
    @inlinable
    public init(
        maxAttempts: Int = 3,
        initialBackoff: Duration = .milliseconds(100),
        maxBackoff: Duration = .seconds(10),
        multiplier: Double = 2,
        jitter: Double = 0.2
    ) {
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    @inlinable
    public func backoff(afterAttempt attempt: Int) -> Duration {
        var wait = self.initialBackoff
        for _ in 1..<max(1, attempt) {
            wait = wait * self.multiplier
            if wait >= self.maxBackoff { return self.maxBackoff }
        }
        return min(wait, self.maxBackoff)
    }

    /// The wait after failed attempt `attempt`, with jitter drawn from `generator`.
    @inlinable
    public func delay(afterAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let wait = self.backoff(afterAttempt: attempt)
        guard self.jitter > 0 else { return wait }
        let factor = 1 - Double.random(in: 0...min(1, self.jitter), using: &generator)
        return wait * factor
    }

    @inlinable
    func validate() throws(SluiceError) {
        guard self.maxAttempts >= 1 else { throw .invalidOption("retry.maxAttempts", self.maxAttempts, "must be 1 or more") }
        guard self.initialBackoff >= .zero else {
            throw .invalidOption("retry.initialBackoff", self.initialBackoff, "must not be negative")
        }
        guard self.maxBackoff >= self.initialBackoff else {
            throw .invalidOption("retry.maxBackoff", self.maxBackoff, "must be at least initialBackoff (\(self.initialBackoff))")
        }
        guard self.multiplier >= 1 else { throw .invalidOption("retry.multiplier", self.multiplier, "must be 1 or more") }
        guard (0...1).contains(self.jitter) else { throw .invalidOption("retry.jitter", self.jitter, "must be between 0 and 1") }
    }
}

/// What a pipeline does with messages whose handler throws (or that are marked failed).
///
/// A failed message is tried again per ``retry`` (with exponential backoff and jitter, so a
/// poison message cannot loop hot), then settled with ``disposition``. A handler can choose a
/// disposition for one message with ``Message/fail(_:disposition:)``, which skips the retries.
/// Messages the broker already delivered more than ``maxDeliveries`` times are settled with
/// ``disposition`` without running the handler again.
public struct FailurePolicy: Hashable, Sendable {
    /// Retries within the pipeline; `nil` for none.
    public var retry: RetryPolicy?
    /// What happens once retries are exhausted.
    public var disposition: FailureDisposition
    /// The most deliveries (as counted by the broker) a message may have; `nil` for no cap.
    public var maxDeliveries: Int?

    /// Creates a failure policy.
    @inlinable
    public init(retry: RetryPolicy? = RetryPolicy(), disposition: FailureDisposition = .deadLetter, maxDeliveries: Int? = 5) {
        self.retry = retry
        self.disposition = disposition
        self.maxDeliveries = maxDeliveries
    }

    /// Retries up to `attempts` in total, then settles with `disposition`.
    @inlinable
    public static func retry(
        attempts: Int,
        initialBackoff: Duration = .milliseconds(100),
        maxBackoff: Duration = .seconds(10),
        jitter: Double = 0.2,
        then disposition: FailureDisposition = .deadLetter
    ) -> FailurePolicy {
        FailurePolicy(
            retry: RetryPolicy(maxAttempts: attempts, initialBackoff: initialBackoff, maxBackoff: maxBackoff, jitter: jitter),
            disposition: disposition
        )
    }

    /// No retry: dead-letter at once.
    @inlinable
    public static var deadLetter: FailurePolicy { FailurePolicy(retry: nil, disposition: .deadLetter) }
    /// No retry: give back to the broker at once.
    @inlinable
    public static var requeue: FailurePolicy { FailurePolicy(retry: nil, disposition: .requeue) }
    /// No retry: acknowledge, discard and count.
    @inlinable
    public static var drop: FailurePolicy { FailurePolicy(retry: nil, disposition: .drop) }

    @inlinable
    var maxAttempts: Int { self.retry?.maxAttempts ?? 1 }

    @inlinable
    func validate() throws(SluiceError) {
        try self.retry?.validate()
        if let maxDeliveries, maxDeliveries < 1 {
            throw .invalidOption("maxDeliveries", maxDeliveries, "must be 1 or more")
        }
    }
}

extension Duration {
    @inlinable
    static func * (lhs: Duration, rhs: Double) -> Duration {
        let attoseconds = Double(lhs.components.seconds) * 1e18 + Double(lhs.components.attoseconds)
        let scaled = attoseconds * rhs
        return .seconds(Int64(scaled / 1e18)) + .nanoseconds(Int64(scaled.truncatingRemainder(dividingBy: 1e18) / 1e9))
    }
}
