//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import DequeModule

/// Routes each event to one partition; each partition has at most one subscriber and its own
/// queue of events waiting for that subscriber's demand.
///
/// Events the hash discards (`nil`) are counted in ``discarded`` and use no subscriber's demand:
/// the producer may emit that many more. An event routed to a partition that does not exist is
/// a failure of the hash: dispatching stops there and the outcome carries
/// ``SluiceError/Code-swift.struct/unknownPartition``, which stops the producer.
@usableFromInline
struct PartitionDispatcher<Event: Sendable>: EventDispatcher {
    @usableFromInline
    struct Partition {
        @usableFromInline
        let key: PartitionKey
        @usableFromInline
        var subscriber: (subscription: SubscriptionID, sink: EventSink<Event>)?
        @usableFromInline
        var demand = 0
        @usableFromInline
        var queue: Deque<Event> = []
        /// Events ever sent from the queue (positions for ``HeldEventsMark``).
        @usableFromInline
        var queueSent = 0

        @inlinable
        init(key: PartitionKey) { self.key = key }
    }

    @usableFromInline
    var partitions: [Partition]
    @usableFromInline
    let indexByKey: [PartitionKey: Int]
    @usableFromInline
    let route: PartitionRoute<Event>
    @usableFromInline
    var partitionBySubscription: [SubscriptionID: Int] = [:]
    /// Demand passed upstream and not yet satisfied by emitted events.
    @usableFromInline
    var waiting = 0
    /// Unmet demand of cancelled subscribers.
    @usableFromInline
    var cancelledDemand = 0
    @usableFromInline
    var discarded = 0

    @usableFromInline
    init(partitions: [PartitionKey], route: @escaping @Sendable (Event) -> (Event, PartitionKey)?) {
        self.init(partitions: partitions, routing: .transform(route))
    }

    @usableFromInline
    init(partitions: [PartitionKey], routing route: PartitionRoute<Event>) {
        self.partitions = partitions.map { Partition(key: $0) }
        var indexByKey: [PartitionKey: Int] = [:]
        for (index, key) in partitions.enumerated() { indexByKey[key] = index }
        self.indexByKey = indexByKey
        self.route = route
    }

    @usableFromInline
    var name: String { "partition(\(self.partitionList))" }

    /// The partitions, for messages.
    @usableFromInline
    var partitionList: String { self.partitions.map(\.key.description).joined(separator: ", ") }

    @inlinable
    var subscriberCount: Int { self.partitionBySubscription.count }

    @inlinable
    func contains(_ subscription: SubscriptionID) -> Bool {
        self.partitionBySubscription[subscription] != nil
    }

    @usableFromInline
    func heldMark() -> HeldEventsMark {
        var mark = HeldEventsMark()
        for (index, partition) in self.partitions.enumerated() where !partition.queue.isEmpty {
            mark.positions.append((UInt64(index), partition.queueSent + partition.queue.count))
        }
        return mark
    }

    @usableFromInline
    func hasSent(past mark: HeldEventsMark) -> Bool {
        // Partitions outlive their subscribers, and so do their queues.
        mark.positions.allSatisfy { place, sent in self.partitions[Int(place)].queueSent >= sent }
    }

    @inlinable
    var undelivered: Int {
        self.partitions.reduce(0) { $0 + ($1.subscriber == nil ? 0 : $1.queue.count) }
    }

    /// Events queued in partitions, waiting for their subscriber's demand (or for a subscriber).
    @usableFromInline
    var heldCount: Int { self.partitions.reduce(0) { $0 + $1.queue.count } }

    // The signature is EventDispatcher.subscribe's, hence its likeness to DemandDispatcher.subscribe
    // and BroadcastDispatcher.subscribe; the bodies differ (a partition must be named and free).
    @usableFromInline
    mutating func subscribe(
        _ subscription: SubscriptionID,
        sink: EventSink<Event>,
        options: SubscriptionOptions<Event>
    ) throws(SluiceError) {
        guard let key = options.partition else {
            throw SluiceError(
                .invalidOption,
                "invalid option partition=nil: a subscriber of a partition dispatcher must name its partition "
                    + "(one of \(self.partitions.map(\.key.description).joined(separator: ", ")))"
            )
        }
        guard let index = self.indexByKey[key] else {
            throw SluiceError(
                .unknownPartition,
                "unknown partition \(key); this dispatcher has \(self.partitionList)"
            )
        }
        if let holder = self.partitions[index].subscriber {
            throw SluiceError(.partitionTaken, "partition \(key) is already taken by \(holder.subscription)")
        }
        self.partitions[index].subscriber = (subscription, sink)
        self.partitions[index].demand = 0
        self.partitionBySubscription[subscription] = index
    }

    @usableFromInline
    mutating func cancel(_ subscription: SubscriptionID) -> RemovedSubscriber<Event>? {
        guard let index = self.partitionBySubscription.removeValue(forKey: subscription),
            let subscriber = self.partitions[index].subscriber
        else { return nil }
        self.partitions[index].subscriber = nil
        // Its events may have gone to other partitions: never count on more than is owed.
        self.cancelledDemand = min(self.cancelledDemand + self.partitions[index].demand, self.waiting)
        self.partitions[index].demand = 0
        return RemovedSubscriber(sink: subscriber.sink, releasedDemand: 0)
    }

    @inlinable
    mutating func buffered(_ count: Int) {
        // With subscribers, events are buffered only once `waiting` was used up; what it holds
        // now is fresh demand (refunds) the producer has yet to see.
        guard self.partitionBySubscription.isEmpty else { return }
        self.waiting -= min(self.waiting, count)
        self.cancelledDemand = min(self.cancelledDemand, self.waiting)
    }

    @inlinable
    mutating func ask(_ count: Int, from subscription: SubscriptionID) -> Int {
        guard let index = self.partitionBySubscription[subscription] else { return 0 }
        self.partitions[index].demand += count
        self.flush(index)
        let alreadyEmitted = min(self.cancelledDemand, count)
        self.cancelledDemand -= alreadyEmitted
        let upstream = count - alreadyEmitted
        self.waiting += upstream
        return upstream
    }

    @inlinable
    mutating func dispatch(_ events: consuming [Event]) -> DispatchOutcome<Event> {
        var events = consume events
        let now = min(self.waiting, events.count)
        guard now > 0 else { return DispatchOutcome(leftover: events) }
        self.waiting -= now
        // Cancelled subscribers cannot be owed more than the producer still owes at all.
        self.cancelledDemand = min(self.cancelledDemand, self.waiting)
        // `events` keeps what is dispatched now; the rest is moved out, not copied.
        let leftover = events.removeSuffixMoving(events.count - now)
        // Allocated only once the whole-batch fast path below does not apply.
        var outgoing: [[Event]] = []
        var refund = 0
        var failure: SluiceError?
        switch self.route {
        case .hash(let hash):
            // Fast path: every event goes to one partition that can take them all now; the
            // batch is handed over as it is, without copying event by event.
            if let first = hash(events[0]), let index = self.index(of: first),
                self.partitions[index].queue.isEmpty, self.partitions[index].demand >= now,
                let subscriber = self.partitions[index].subscriber,
                (1..<now).allSatisfy({ position in hash(events[position]).flatMap { self.index(of: $0) } == index })
            {
                self.partitions[index].demand -= now
                subscriber.sink.deliver(events, on: subscriber.subscription)
                return DispatchOutcome(leftover: leftover)
            }
            outgoing = [[Event]](repeating: [], count: self.partitions.count)
            events.reverseMoving()
            while let event = events.popLast() {
                guard let key = hash(event) else {
                    refund += 1
                    continue
                }
                guard let index = self.index(of: key) else {
                    failure = self.unknownPartition(key)
                    break
                }
                self.place(event, in: index, outgoing: &outgoing)
            }
        // Same loop as the .hash case above, kept apart: running hash through a transform closure
        // would add a closure call and a tuple per event on the dispatch hot path.
        case .transform(let transform):
            outgoing = [[Event]](repeating: [], count: self.partitions.count)
            events.reverseMoving()
            while let event = events.popLast() {
                guard let (changed, key) = transform(event) else {
                    refund += 1
                    continue
                }
                guard let index = self.index(of: key) else {
                    failure = self.unknownPartition(key)
                    break
                }
                self.place(changed, in: index, outgoing: &outgoing)
            }
        }
        for index in outgoing.indices where !outgoing[index].isEmpty {
            // demand > 0 implies a subscriber: demand is reset when a subscriber leaves.
            let subscriber = self.partitions[index].subscriber!
            subscriber.sink.deliver(outgoing[index], on: subscriber.subscription)
        }
        self.discarded += refund
        self.waiting += refund
        return DispatchOutcome(leftover: leftover, extraDemand: refund, failure: failure)
    }

    @usableFromInline
    func unknownPartition(_ key: PartitionKey) -> SluiceError {
        SluiceError(
            .unknownPartition,
            "the partition hash returned \(key), which is not a partition of this dispatcher (it has \(self.partitionList))"
        )
    }

    @usableFromInline
    func forEachSubscriber(_ body: (SubscriptionID, EventSink<Event>) -> Void) {
        for partition in self.partitions {
            if let subscriber = partition.subscriber { body(subscriber.subscription, subscriber.sink) }
        }
    }

    @usableFromInline
    func subscriberStatus() -> [StageStatus.Subscriber] {
        self.partitions.compactMap { partition in
            partition.subscriber.map {
                StageStatus.Subscriber(id: $0.subscription, consumer: $0.sink.stageID, pendingDemand: partition.demand)
            }
        }
    }

    /// The position of partition `key`: a name, a number, or (for any dispatcher) a position.
    @inlinable
    func index(of key: PartitionKey) -> Int? {
        if case .index(let position) = key {
            return position >= 0 && position < self.partitions.count ? position : nil
        }
        return self.indexByKey[key]
    }

    /// Adds an event to what partition `index` gets now, or to its queue.
    @inlinable
    mutating func place(_ event: consuming Event, in index: Int, outgoing: inout [[Event]]) {
        if self.partitions[index].demand > 0 && self.partitions[index].queue.isEmpty {
            self.partitions[index].demand -= 1
            outgoing[index].append(event)
        } else {
            self.partitions[index].queue.append(event)
        }
    }

    /// Sends queued events of a partition up to its demand.
    @inlinable
    mutating func flush(_ index: Int) {
        guard let subscriber = self.partitions[index].subscriber else { return }
        let count = min(self.partitions[index].demand, self.partitions[index].queue.count)
        guard count > 0 else { return }
        // Moved out of the queue one by one, not copied.
        let events = [Event](unsafeUninitializedCapacity: count) { buffer, initialized in
            for position in 0..<count {
                (buffer.baseAddress! + position).initialize(to: self.partitions[index].queue.removeFirst())
            }
            initialized = count
        }
        self.partitions[index].demand -= count
        self.partitions[index].queueSent += count
        subscriber.sink.deliver(events, on: subscriber.subscription)
    }
}
