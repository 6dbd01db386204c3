//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// Identifies one subscription between a consumer and a producer.
///
/// Both sides know a subscription by this identifier; it is unique for the life of the process.
public struct SubscriptionID: Hashable, Sendable, CustomStringConvertible {
    /// The raw value of the identifier.
    public let rawValue: UInt64

    private static let counter = Atomic<UInt64>(0)

    @usableFromInline
    static func next() -> SubscriptionID {
        SubscriptionID(rawValue: Self.counter.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    /// The identifier as written in logs ("sub#12").
    public var description: String { "sub#\(self.rawValue)" }
}

/// Identifies a running stage; unique for the life of the process.
public struct StageID: Hashable, Sendable, CustomStringConvertible {
    // Same shape as SubscriptionID: separate types (each with its own counter) so a stage id and a
    // subscription id cannot be mixed up.
    /// The raw value of the identifier.
    public let rawValue: UInt64

    private static let counter = Atomic<UInt64>(0)

    @usableFromInline
    static func next() -> StageID {
        StageID(rawValue: Self.counter.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    /// The identifier as written in logs ("stage#3").
    public var description: String { "stage#\(self.rawValue)" }
}

/// Which stop reasons a `permanent`, `transient` or `temporary` setting reacts to: the one rule
/// behind ``CancelMode`` (does the consumer end?) and ``RestartPolicy`` (is the child restarted?).
enum EndingRule: Hashable, Sendable {
    /// Reacts to every reason.
    case permanent
    /// Reacts to a crash or a kill, not to ``StopReason/normal`` or ``StopReason/shutdown``.
    case transient
    /// Reacts to no reason.
    case temporary

    /// Whether a setting with this rule reacts to a stage that ended for `reason`.
    func applies(to reason: StopReason) -> Bool {
        switch self {
        case .permanent: return true
        case .transient: return !reason.isNormalOrShutdown
        case .temporary: return false
        }
    }

    /// The rule's name, as its setting describes itself.
    var name: String {
        switch self {
        case .permanent: return "permanent"
        case .transient: return "transient"
        case .temporary: return "temporary"
        }
    }
}

/// What a consumer does when the producer of one of its subscriptions goes away.
public struct CancelMode: Hashable, Sendable, CustomStringConvertible {
    private let rule: EndingRule

    /// The consumer ends whenever the producer ends, whatever the reason (the default).
    public static let permanent = CancelMode(rule: .permanent)
    /// The consumer ends unless the producer ended normally or was shut down.
    public static let transient = CancelMode(rule: .transient)
    /// The consumer keeps running; only the subscription is removed.
    public static let temporary = CancelMode(rule: .temporary)

    /// Whether a consumer with this mode ends when its producer ended for `reason`.
    public func endsConsumer(for reason: StopReason) -> Bool { self.rule.applies(to: reason) }

    /// The mode's name ("permanent", "transient", "temporary").
    public var description: String { self.rule.name }
}

/// How a consumer asks for events on a subscription.
public enum DemandMode: Hashable, Sendable {
    /// The engine asks for `maxDemand` first and re-asks whenever pending demand falls to
    /// `minDemand` (the default).
    case automatic
    /// Nothing is asked automatically; the stage asks with ``StageContext/ask(_:on:)``.
    case manual
}

/// A partition of a partition dispatcher, by number or by name.
public enum PartitionKey: Hashable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral,
    ExpressibleByStringLiteral
{
    /// The partition at this index (partitions created by count are numbered from 0).
    case index(Int)
    /// The partition with this name.
    case name(String)

    /// The partition at this index.
    public init(integerLiteral value: Int) { self = .index(value) }
    /// The partition with this name.
    public init(stringLiteral value: String) { self = .name(value) }

    /// The partition as written in messages: its index, or its name in quotes.
    public var description: String {
        switch self {
        case .index(let index): return "\(index)"
        case .name(let name): return "\"\(name)\""
        }
    }
}

/// How a consumer subscribes to a producer.
///
/// ```swift
/// try await consumer.subscribe(to: producer, options: .init(maxDemand: 10, minDemand: 5))
/// ```
public struct SubscriptionOptions<Event: Sendable>: Sendable {
    /// The most events this subscription ever has outstanding. Must be greater than 0.
    public var maxDemand: Int
    /// When pending demand falls to this value or below, the consumer asks back up to
    /// ``maxDemand``. Defaults to `maxDemand / 2`; must be at least 0 and less than ``maxDemand``.
    public var minDemand: Int?
    /// What the consumer does when the producer ends.
    public var cancel: CancelMode
    /// Whether demand is asked automatically or by the stage itself.
    public var demand: DemandMode
    /// The partition to take from a producer using a partition dispatcher.
    public var partition: PartitionKey?
    /// With a broadcast dispatcher: only events for which this returns `true` are sent to this
    /// subscriber; the demand of filtered events is given back.
    public var selector: (@Sendable (Event) -> Bool)?

    /// Creates subscription options.
    public init(
        maxDemand: Int = 1000,
        minDemand: Int? = nil,
        cancel: CancelMode = .permanent,
        demand: DemandMode = .automatic,
        partition: PartitionKey? = nil,
        selector: (@Sendable (Event) -> Bool)? = nil
    ) {
        // Field by field (no public memberwise init is synthesized); the inits of PipelineRuntime,
        // PipelineConfiguration, Batcher and SubscriptionInfo only share the shape.
        self.maxDemand = maxDemand
        self.minDemand = minDemand
        self.cancel = cancel
        self.demand = demand
        self.partition = partition
        self.selector = selector
    }

    /// The effective minimum demand (``minDemand`` or `maxDemand / 2`).
    public var effectiveMinDemand: Int { self.minDemand ?? self.maxDemand / 2 }

    /// Checks the demand bounds and throws ``SluiceError/Code-swift.struct/invalidOption`` naming
    /// the option and value that are wrong.
    public func validate() throws(SluiceError) {
        guard self.maxDemand > 0 else {
            throw .invalidOption("maxDemand", self.maxDemand, "must be greater than 0")
        }
        if let minDemand = self.minDemand {
            guard minDemand >= 0 else {
                throw .invalidOption("minDemand", minDemand, "must be 0 or more")
            }
            guard minDemand < self.maxDemand else {
                throw .invalidOption("minDemand", minDemand, "must be less than maxDemand (\(self.maxDemand))")
            }
        }
    }
}
