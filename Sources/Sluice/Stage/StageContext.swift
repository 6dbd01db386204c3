//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging

/// A producer's demand mode.
public enum ProducerDemandMode: Hashable, Sendable, CustomStringConvertible {
    /// Demand reaches ``Stage/handleDemand(_:context:)`` as it arrives (the default).
    case forward
    /// Demand is held, and so are the events the producer emits or has buffered: nothing is
    /// dispatched until the mode is switched to ``forward``. Then the buffered events are served
    /// first and each held demand is replayed separately, in order.
    case accumulate

    /// "forward" or "accumulate".
    public var description: String { self == .forward ? "forward" : "accumulate" }
}

/// What a stage callback can do besides changing its own state: emit events, ask for events in
/// manual mode, cancel subscriptions, change the demand mode, or stop.
///
/// Commands take effect when the callback returns, in the order they were given.
public struct StageContext<Output: Sendable> {
    @usableFromInline
    enum Command {
        case stop(StopReason)
        case ask(Int, SubscriptionID)
        case cancel(SubscriptionID, StopReason)
        case demandMode(ProducerDemandMode)
    }

    /// The running stage's identity.
    public let stageID: StageID
    /// The running stage's name (for logs).
    public let stageName: String
    /// The stage's logger, with `sluice.stage.name` metadata.
    public var logger: Logger

    @usableFromInline
    var emitted: [Output] = []
    @usableFromInline
    var commands: [Command] = []

    @inlinable
    init(stageID: StageID, stageName: String, logger: Logger) {
        self.stageID = stageID
        self.stageName = stageName
        self.logger = logger
    }

    /// Emits a batch of events to the subscribers (producers and producer-consumers).
    @inlinable
    public mutating func emit(_ events: consuming [Output]) {
        self.emitted.appendMoving(consume events)
    }

    /// Emits one event. Prefer ``emit(_:)-([Output])`` for many events.
    @inlinable
    public mutating func emit(_ event: Output) {
        self.emitted.append(event)
    }

    /// Ends the stage once the callback returns. A ``StopReason/normal`` stop first hands any
    /// buffered events to subscribers that ask for them.
    @inlinable
    public mutating func stop(_ reason: StopReason = .normal) {
        self.commands.append(.stop(reason))
    }

    /// Asks the producer of `subscription` for `count` more events (manual demand mode).
    /// Asking for 0 sends nothing.
    @inlinable
    public mutating func ask(_ count: Int, on subscription: SubscriptionID) {
        if count > 0 { self.commands.append(.ask(count, subscription)) }
    }

    /// Cancels one of this stage's subscriptions: an upstream one (this stage as consumer), or
    /// a subscriber of this stage (as producer). Both stages then see
    /// ``CancelReason/cancelled(_:)`` with `reason` in ``Stage/handleCancel(_:reason:context:)``,
    /// and the consumer's ``CancelMode`` decides whether it ends.
    @inlinable
    public mutating func cancel(_ subscription: SubscriptionID, reason: StopReason = .normal) {
        self.commands.append(.cancel(subscription, reason))
    }

    /// Switches a producer between forwarding and accumulating demand.
    @inlinable
    public mutating func setDemandMode(_ mode: ProducerDemandMode) {
        self.commands.append(.demandMode(mode))
    }
}

@available(*, unavailable)
extension StageContext: Sendable {}
