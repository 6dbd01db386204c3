//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// The session a source value runs, for queries asked from outside its pipeline (such as a
/// source's lag): the source holds one of these, its `makeParts` attaches the session it
/// started and its `shutdown` detaches it again.
///
/// Copies of a source share it (it is a reference), so the value a command gave to its
/// pipeline answers for the session that pipeline started. When several pipelines run the
/// same source value, the session attached last answers.
package final class RunningSession<Session: AnyObject & Sendable>: Sendable {
    private let current = Mutex<Session?>(nil)

    /// No session yet.
    package init() {}

    /// `session` runs now.
    package func attach(_ session: Session) {
        self.current.withLock { $0 = session }
    }

    /// `session` stopped (if it is the one attached).
    package func detach(_ session: Session) {
        self.current.withLock { current in
            if current === session { current = nil }
        }
    }

    /// The running session, if any.
    package var session: Session? { self.current.withLock { $0 } }

    /// The running session, or `notRunning` thrown when there is none.
    package func session<Failure: Error>(orThrow notRunning: @autoclosure () -> Failure) throws(Failure) -> Session {
        guard let session = self.session else { throw notRunning() }
        return session
    }
}
