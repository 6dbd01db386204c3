//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// How a producer spreads its events over its subscribers.
///
/// ```swift
/// let options = StageOptions<Int>(dispatcher: .broadcast)
/// let byParity = StageOptions<Int>(dispatcher: .partition(count: 2) { .index($0 % 2) })
/// ```
public struct Dispatcher<Event: Sendable>: Sendable {
    @usableFromInline
    enum Kind: Sendable {
        case demand
        case broadcast
        case partition(partitions: [PartitionKey], route: PartitionRoute<Event>)
    }

    @usableFromInline
    let kind: Kind
    /// The partition count asked for, kept to name it if it is invalid.
    @usableFromInline
    let requestedCount: Int?

    @usableFromInline
    init(kind: Kind, requestedCount: Int? = nil) {
        self.kind = kind
        self.requestedCount = requestedCount
    }

    /// Each batch goes to the subscriber with the most pending demand, up to that demand, then to
    /// the next (the default). Every event reaches exactly one subscriber.
    public static var demand: Dispatcher { Dispatcher(kind: .demand) }

    /// Every event goes to every subscriber, never faster than the slowest one asked. A
    /// subscriber may filter with ``SubscriptionOptions/selector``.
    public static var broadcast: Dispatcher { Dispatcher(kind: .broadcast) }

    /// Events go to numbered partitions `0..<count`; `hash` returns the partition of an event, or
    /// `nil` to discard it without using any subscriber's demand. Each subscriber takes one
    /// partition (``SubscriptionOptions/partition``).
    public static func partition(count: Int, hash: @escaping @Sendable (Event) -> PartitionKey?) -> Dispatcher {
        Dispatcher(
            kind: .partition(
                partitions: (0..<max(count, 0)).map { PartitionKey.index($0) },
                route: .hash(hash)
            ),
            requestedCount: count
        )
    }

    /// Events go to named partitions; `hash` returns the partition of an event, or `nil` to
    /// discard it. Each subscriber takes one partition by name.
    public static func partition(names: [String], hash: @escaping @Sendable (Event) -> PartitionKey?) -> Dispatcher {
        Dispatcher(
            kind: .partition(
                partitions: names.map { PartitionKey.name($0) },
                route: .hash(hash)
            )
        )
    }

    /// Like ``partition(count:hash:)``, but `route` may also transform the event it routes.
    public static func partition(
        _ partitions: [PartitionKey],
        route: @escaping @Sendable (Event) -> (Event, PartitionKey)?
    ) -> Dispatcher {
        Dispatcher(kind: .partition(partitions: partitions, route: .transform(route)))
    }

    @usableFromInline
    func validate() throws(SluiceError) {
        guard case .partition(let partitions, _) = self.kind else { return }
        guard !partitions.isEmpty else {
            throw .invalidOption(
                "partitions",
                self.requestedCount ?? 0,
                "a partition dispatcher needs at least one partition"
            )
        }
        var seen = Set<PartitionKey>()
        for key in partitions where !seen.insert(key).inserted {
            throw .invalidOption("partitions", key, "partition names must be unique")
        }
    }
}

/// How a partition dispatcher finds an event's partition.
@usableFromInline
enum PartitionRoute<Event: Sendable>: Sendable {
    /// The event goes as it is to the partition the closure names (`nil`: discard).
    case hash(@Sendable (Event) -> PartitionKey?)
    /// The closure returns the event to send (possibly changed) and its partition.
    case transform(@Sendable (Event) -> (Event, PartitionKey)?)
}

/// What a dispatcher did with a batch.
@usableFromInline
struct DispatchOutcome<Event: Sendable> {
    /// Events no subscriber could take now; the producer buffers them.
    @usableFromInline
    var leftover: [Event] = []
    /// Demand given back to the producer: events that used no subscriber's demand (filtered by
    /// a selector, discarded by a partition hash) let the producer emit that many more.
    @usableFromInline
    var extraDemand = 0

    @inlinable
    init(leftover: consuming [Event] = [], extraDemand: Int = 0) {
        self.leftover = leftover
        self.extraDemand = extraDemand
    }
}

/// The engine's dispatcher contract. Implementations are plain value types; the only side
/// effect they have is posting batches to sinks, which never blocks.
@usableFromInline
protocol EventDispatcher<Event>: SendableMetatype {
    associatedtype Event: Sendable

    var subscriberCount: Int { get }
    /// Events discarded by this dispatcher so far (partition hash said "discard", or named a
    /// partition that does not exist).
    var discarded: Int { get }
    /// Events the dispatcher itself holds for current subscribers (partition queues); a
    /// producer that stops normally first waits for these to be delivered.
    var undelivered: Int { get }

    func contains(_ subscription: SubscriptionID) -> Bool

    /// Adds a subscriber with zero demand; throws a typed error to reject it.
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Event>,
        options: SubscriptionOptions<Event>
    ) throws(SluiceError)

    /// Removes a subscriber; returns demand that became available upstream (usually 0).
    mutating func cancel(_ subscription: SubscriptionID) -> Int

    /// The producer put `count` new events in its buffer because no subscriber could take them.
    /// They pay demand already passed upstream (for subscribers that left): later asks must not
    /// be reduced in the expectation that the producer still emits those events.
    mutating func buffered(_ count: Int)

    /// A subscriber asked for `count`; returns the demand the producer should now satisfy.
    mutating func ask(_ count: Int, from subscription: SubscriptionID) -> Int

    /// Sends what the subscribers asked for; returns what nobody could take.
    mutating func dispatch(_ events: consuming [Event]) -> DispatchOutcome<Event>

    /// Calls `body` for every subscriber (used to announce the producer's end).
    func forEachSubscriber(_ body: (SubscriptionID, EventSink<Event>) -> Void)
}
