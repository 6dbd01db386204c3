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
        // Field by field (no public memberwise init is synthesized); Processors' internal init only
        // shares the shape.
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The backoff these fields describe (reading and writing it changes the fields).
    @inlinable
    public var backoff: Backoff {
        get { Backoff(initial: self.initialBackoff, maximum: self.maxBackoff, multiplier: self.multiplier, jitter: self.jitter) }
        set {
            self.initialBackoff = newValue.initial
            self.maxBackoff = newValue.maximum
            self.multiplier = newValue.multiplier
            self.jitter = newValue.jitter
        }
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    @inlinable
    public func backoff(afterAttempt attempt: Int) -> Duration {
        self.backoff.delay(forAttempt: attempt)
    }

    /// The wait after failed attempt `attempt`, with jitter drawn from `generator`.
    @inlinable
    public func delay(afterAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        self.backoff.delay(forAttempt: attempt, using: &generator)
    }

    @inlinable
    func validate() throws(SluiceError) {
        guard self.maxAttempts >= 1 else { throw .invalidOption("retry.maxAttempts", self.maxAttempts, "must be 1 or more") }
        try self.backoff.validate(
            initial: "retry.initialBackoff",
            maximum: "retry.maxBackoff",
            multiplier: "retry.multiplier",
            jitter: "retry.jitter"
        )
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
