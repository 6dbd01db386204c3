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
public enum StopReason: Sendable, CustomStringConvertible {
    /// The stage finished its work (for example a finite producer ran out of events).
    case normal
    /// The stage was asked to shut down.
    case shutdown
    /// The stage crashed: a handler threw this error.
    case failure(any Error)

    /// Whether the reason is ``normal`` or ``shutdown``, the two reasons that are not crashes.
    public var isNormalOrShutdown: Bool {
        switch self {
        case .normal, .shutdown: return true
        case .failure: return false
        }
    }

    /// The error of a ``failure``, or `nil`.
    public var error: (any Error)? {
        if case .failure(let error) = self { return error }
        return nil
    }

    public var description: String {
        switch self {
        case .normal: return "normal"
        case .shutdown: return "shutdown"
        case .failure(let error): return "failure(\(error))"
        }
    }
}
