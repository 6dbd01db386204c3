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
    /// `nil` to discard it without using any subscriber's demand (discards are counted in
    /// ``StageStatistics/dispatcherDiscarded``). Each subscriber takes one partition
    /// (``SubscriptionOptions/partition``).
    ///
    /// A hash that names a partition the dispatcher does not have is a bug in the hash: the
    /// producer stops with ``SluiceError/Code-swift.struct/unknownPartition`` naming the value and
    /// the partitions that exist.
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
    /// Set when an event could not be dispatched at all (a partition hash named a partition that
    /// does not exist): the producer stops with this error.
    @usableFromInline
    var failure: SluiceError?

    @inlinable
    init(leftover: consuming [Event] = [], extraDemand: Int = 0, failure: SluiceError? = nil) {
        self.leftover = leftover
        self.extraDemand = extraDemand
        self.failure = failure
    }
}

/// A subscriber a dispatcher removed: whom to tell, and the demand its leaving released.
@usableFromInline
struct RemovedSubscriber<Event: Sendable> {
    @usableFromInline
    let sink: EventSink<Event>
    /// Demand that became available upstream (a broadcast dispatcher no longer waits for it).
    @usableFromInline
    let releasedDemand: Int

    @inlinable
    init(sink: EventSink<Event>, releasedDemand: Int) {
        self.sink = sink
        self.releasedDemand = releasedDemand
    }
}

/// Where the events a dispatcher holds stood at one moment: for each place that held some (a
/// partition's queue, a broadcast subscriber's backlog), how many events that place must have
/// sent in all for them to be gone. An info sent behind events waits until the dispatcher has
/// sent past this mark (GenStage's partition dispatcher queues the info in each partition).
@usableFromInline
struct HeldEventsMark: Sendable {
    /// The place (partition position or subscription), and the count of events it must have sent.
    @usableFromInline
    var positions: [(place: UInt64, sent: Int)] = []

    @inlinable
    init() {}

    /// Whether the dispatcher held nothing when the mark was taken.
    @inlinable
    var isEmpty: Bool { self.positions.isEmpty }
}

/// The engine's dispatcher contract. Implementations are plain value types whose decisions are
/// made in their mutating methods; they are not pure state machines in the strict sense, since
/// `ask` and `dispatch` deliver the batches they decide on to the subscribers' sinks themselves
/// (posting to a mailbox, which never blocks), so that a batch is moved once, not returned and
/// moved again.
@usableFromInline
protocol EventDispatcher<Event>: SendableMetatype {
    associatedtype Event: Sendable

    /// The dispatcher's kind, for status reports ("demand", "broadcast", "partition(0, 1)").
    var name: String { get }
    var subscriberCount: Int { get }
    /// Events discarded by this dispatcher so far (a partition hash answered "discard").
    var discarded: Int { get }
    /// Events the dispatcher itself holds for current subscribers (partition queues); a
    /// producer that stops normally first waits for these to be delivered.
    var undelivered: Int { get }
    /// Every event the dispatcher holds: ``undelivered`` and the queues of partitions nobody took
    /// (read on request, for ``StageStatus``).
    var heldCount: Int { get }

    func contains(_ subscription: SubscriptionID) -> Bool
    /// A mark behind every event the dispatcher holds now (partition queues, including those of
    /// partitions nobody took yet, and broadcast backlogs), for an info that must wait until they
    /// have been sent.
    func heldMark() -> HeldEventsMark
    /// Whether every event the dispatcher held when `mark` was taken has been sent (or left with
    /// the subscriber it was held for).
    func hasSent(past mark: HeldEventsMark) -> Bool

    /// Adds a subscriber with zero demand; throws a typed error to reject it.
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Event>,
        options: SubscriptionOptions<Event>
    ) throws(SluiceError)

    /// Removes a subscriber; `nil` if it is not one. The result names its sink and the demand
    /// that became available upstream (usually 0).
    mutating func cancel(_ subscription: SubscriptionID) -> RemovedSubscriber<Event>?

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

    /// Every subscriber with the demand it asked for and has not received yet (read on request,
    /// for ``StageStatus``).
    func subscriberStatus() -> [StageStatus.Subscriber]
}
