//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Why a stage ended.
///
/// The reason travels to every subscriber of the stage and decides, together with each
/// subscription's ``CancelMode``, whether those subscribers end too.
///
/// Two reasons are equal when they are the same case; two failures are equal when their errors
/// are of the same `Equatable` type and equal (a failure whose error is not `Equatable` equals
/// no other failure, not even one with the same error).
public enum StopReason: Sendable, Equatable, CustomStringConvertible {
    /// The stage finished its work (for example a finite producer ran out of events).
    case normal
    /// The stage was asked to shut down.
    case shutdown
    /// The stage was killed (``StageHandle/kill()``): its task was cancelled mid-callback.
    /// Unlike ``shutdown`` this is an abnormal end, so a transient consumer of a killed producer
    /// ends too.
    case killed
    /// The stage crashed: a handler threw this error.
    case failure(any Error)

    /// Whether the reason is ``normal`` or ``shutdown``, the two reasons that are not crashes.
    public var isNormalOrShutdown: Bool {
        switch self {
        case .normal, .shutdown: return true
        case .killed, .failure: return false
        }
    }

    /// The error of a ``failure``, or `nil`.
    public var error: (any Error)? {
        if case .failure(let error) = self { return error }
        return nil
    }

    /// The reason as written in logs and messages ("normal", "failure(…)").
    public var description: String {
        switch self {
        case .normal: return "normal"
        case .shutdown: return "shutdown"
        case .killed: return "killed"
        case .failure(let error): return "failure(\(error))"
        }
    }

    /// Whether two reasons are the same case; failures compare their errors where those are
    /// `Equatable`.
    public static func == (lhs: StopReason, rhs: StopReason) -> Bool {
        switch (lhs, rhs) {
        case (.normal, .normal), (.shutdown, .shutdown), (.killed, .killed):
            return true
        case (.failure(let left), .failure(let right)):
            return Self.equalErrors(left, right)
        default:
            return false
        }
    }

    private static func equalErrors(_ left: any Error, _ right: any Error) -> Bool {
        // Through `Any`: the compiler would otherwise claim the cast from `any Error` always succeeds.
        let boxed: Any = left
        guard let left = boxed as? any Equatable else { return false }
        return Self.isEqual(left, right)
    }

    private static func isEqual<E: Equatable>(_ left: E, _ right: any Error) -> Bool {
        guard let right = right as? E else { return false }
        return left == right
    }
}

/// Why a subscription ended, as seen by either of its two stages.
///
/// A subscription ends either because one side *cancelled* it (a consumer cancelling its own
/// subscription, a producer cancelling a subscriber) or because the stage at the other end went
/// *down* (finished, shut down, crashed or was killed). Both carry the ``StopReason`` given; the
/// consumer's ``CancelMode`` is applied to that reason either way.
public enum CancelReason: Sendable, Equatable, CustomStringConvertible {
    /// One of the two stages cancelled the subscription with this reason.
    case cancelled(StopReason)
    /// The stage at the other end ended with this reason.
    case down(StopReason)

    /// The reason given with the cancellation, or the reason the other stage ended with.
    public var reason: StopReason {
        switch self {
        case .cancelled(let reason), .down(let reason): return reason
        }
    }

    /// Whether a stage cancelled the subscription (rather than the other end going down).
    public var isCancellation: Bool {
        if case .cancelled = self { return true }
        return false
    }

    /// The reason as written in logs and messages ("cancelled(normal)", "down(shutdown)").
    public var description: String {
        switch self {
        case .cancelled(let reason): return "cancelled(\(reason))"
        case .down(let reason): return "down(\(reason))"
        }
    }
}
