//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The clock a pipeline uses for batch timeouts, retry backoff and rate limits.
///
/// Any `Clock` with `Duration` works; tests pass a manual clock (SluiceTestKit's
/// `ManualClock`) to control time.
public struct PipelineClock: Sendable {
    @usableFromInline
    let elapsed: @Sendable () -> Duration
    @usableFromInline
    let sleepFor: @Sendable (Duration) async throws -> Void

    /// Wraps `clock`.
    @inlinable
    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        self.elapsed = { origin.duration(to: clock.now) }
        self.sleepFor = { duration in try await clock.sleep(for: duration) }
    }

    /// The system's continuous clock.
    @inlinable
    public static var continuous: PipelineClock { PipelineClock(ContinuousClock()) }

    /// Time since the clock was wrapped.
    @inlinable
    public var now: Duration { self.elapsed() }

    /// Sleeps for `duration` on this clock.
    @inlinable
    public func sleep(for duration: Duration) async throws {
        try await self.sleepFor(duration)
    }
}
