//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Synchronization

/// At most ``messages`` messages per ``interval``, enforced by withholding demand.
public struct RateLimit: Hashable, Sendable, CustomStringConvertible {
    /// Messages allowed per interval.
    public var messages: Int
    /// The interval.
    public var interval: Duration

    /// Creates a rate limit.
    @inlinable
    public init(messages: Int, per interval: Duration) {
        self.messages = messages
        self.interval = interval
    }

    @inlinable
    func validate() throws(SluiceError) {
        guard self.messages > 0 else { throw .invalidOption("rateLimit.messages", self.messages, "must be greater than 0") }
        guard self.interval > .zero else { throw .invalidOption("rateLimit.interval", self.interval, "must be positive") }
    }

    @inlinable
    public var description: String { "\(self.messages) per \(self.interval)" }
}

/// Tokens shared by the processors of a pipeline: a fixed window of ``RateLimit/messages`` per
/// ``RateLimit/interval``. Processors ask upstream only for what they were granted.
@usableFromInline
final class RateLimiter: Sendable {
    @usableFromInline
    struct State {
        @usableFromInline
        var limit: RateLimit?
        @usableFromInline
        var windowStart: Duration = .zero
        @usableFromInline
        var used = 0
    }

    @usableFromInline
    let state: Mutex<State>

    @usableFromInline
    init(_ limit: RateLimit?) {
        self.state = Mutex(State(limit: limit))
    }

    @usableFromInline
    var limit: RateLimit? { self.state.withLock { $0.limit } }

    @usableFromInline
    func set(_ limit: RateLimit?) {
        self.state.withLock { state in
            state.limit = limit
            state.used = 0
        }
    }

    /// Grants up to `wanted` tokens at time `now` (time since an arbitrary origin).
    ///
    /// - Returns: The tokens granted, and when more become available if fewer were granted.
    @usableFromInline
    func take(_ wanted: Int, now: Duration) -> (granted: Int, retryAt: Duration?) {
        self.state.withLock { state in
            guard let limit = state.limit else { return (wanted, nil) }
            if now - state.windowStart >= limit.interval {
                // Start a new window aligned to the interval.
                let elapsed = now - state.windowStart
                let windows = Int(elapsed / limit.interval)
                state.windowStart += limit.interval * windows
                state.used = 0
            }
            let granted = min(wanted, limit.messages - state.used)
            state.used += granted
            return (granted, granted < wanted ? state.windowStart + limit.interval : nil)
        }
    }
}
