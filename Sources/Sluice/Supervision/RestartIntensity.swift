//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A restart intensity, of a ``Supervisor`` or a ``ConcurrentConsumer``: at most `maxRestarts`
/// restarts within `period`, over all its children or tasks.
struct RestartIntensity: Sendable {
    let maxRestarts: Int
    let period: Duration
    /// When the reruns still inside the window happened, oldest first.
    private var restarts: [ContinuousClock.Instant] = []

    init(maxRestarts: Int, period: Duration) {
        self.maxRestarts = maxRestarts
        self.period = period
    }

    /// Checks a restart intensity's bounds, as the supervisor and the concurrent consumer take
    /// them.
    static func validate(maxRestarts: Int, period: Duration) throws(SluiceError) {
        guard maxRestarts >= 0 else { throw .invalidOption("maxRestarts", maxRestarts, "must be 0 or more") }
        guard period > .zero else { throw .invalidOption("period", period, "must be positive") }
    }

    /// Records a rerun at `now`; `false` if it is one more than the window allows.
    mutating func allowsRestart(at now: ContinuousClock.Instant) -> Bool {
        self.restarts.removeAll { now - $0 >= self.period }
        self.restarts.append(now)
        return self.restarts.count <= self.maxRestarts
    }
}
