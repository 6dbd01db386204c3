//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// When a reducing stage of a ``Flow`` hands on what it accumulated.
///
/// Each stage that runs a ``Flow/reduce(into:window:_:)`` keeps its own accumulator. Its window
/// decides when that accumulator is emitted and started afresh:
///
/// - ``global``: one window for the whole input; the result is emitted when the input ends.
/// - ``fixed(every:clock:)``: a new window every interval of the clock: at each tick the
///   stage emits what it accumulated since the previous tick and starts again; when the input
///   ends it emits the window in progress.
///
/// A ``FlowTrigger`` added with ``trigger(_:)`` emits partial results inside a window, which is
/// how an infinite source yields results at all under the global window.
///
/// ```swift
/// let window = FlowWindow.fixed(every: .seconds(1)).trigger(.every(1000))
/// ```
public struct FlowWindow: Sendable {
    // Same shape as Dispatcher (Dispatcher.swift): a public struct over an internal Kind with static
    // factories, so cases can be added without breaking clients (STYLE habit 7); the kinds differ.
    @usableFromInline
    enum Kind: Sendable {
        case global
        case fixed(Duration, PipelineClock)
    }

    @usableFromInline
    let kind: Kind
    @usableFromInline
    var triggers: FlowTrigger?

    @usableFromInline
    init(kind: Kind, triggers: FlowTrigger? = nil) {
        self.kind = kind
        self.triggers = triggers
    }

    /// One window holding every event; results are emitted when the input ends (and at each
    /// trigger).
    public static var global: FlowWindow { FlowWindow(kind: .global) }

    /// Windows of `interval` on `clock`, starting when the stage starts. `interval` must be
    /// greater than zero.
    public static func fixed<C: Clock>(every interval: Duration, clock: C) -> FlowWindow where C.Duration == Duration {
        FlowWindow(kind: .fixed(interval, PipelineClock(clock)))
    }

    /// Windows of `interval` on the continuous clock.
    public static func fixed(every interval: Duration) -> FlowWindow {
        Self.fixed(every: interval, clock: ContinuousClock())
    }

    /// This window, also emitting partial results whenever `trigger` fires.
    public func trigger(_ trigger: FlowTrigger) -> FlowWindow {
        var window = self
        window.triggers = trigger
        return window
    }

    @usableFromInline
    func validate() throws(SluiceError) {
        if case .fixed(let interval, _) = self.kind, interval <= .zero {
            throw .invalidOption("window interval", interval, "must be greater than zero")
        }
        try self.triggers?.validate()
    }
}

/// Emits a reducing stage's partial result inside its window.
public struct FlowTrigger: Sendable {
    /// What the accumulator holds after a trigger fired.
    public enum Accumulation: Sendable, Hashable {
        /// The accumulator goes on: each partial result includes the previous ones.
        case keep
        /// The accumulator starts afresh: each partial result covers only the events since the
        /// previous one.
        case reset
    }

    /// The largest event count a trigger accepts.
    public static let maximumCount = 1 << 40

    /// How many events the stage reduces between two partial results.
    public let count: Int
    /// What happens to the accumulator after each partial result.
    public let accumulation: Accumulation

    /// Fires after every `count` events the stage reduced (1...``maximumCount``).
    public static func every(_ count: Int, _ accumulation: Accumulation = .keep) -> FlowTrigger {
        FlowTrigger(count: count, accumulation: accumulation)
    }

    @usableFromInline
    func validate() throws(SluiceError) {
        guard self.count >= 1 && self.count <= Self.maximumCount else {
            throw .invalidOption("trigger count", self.count, "must be 1...\(Self.maximumCount)")
        }
    }
}
