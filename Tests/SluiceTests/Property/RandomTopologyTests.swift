//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SluiceTestKit
import Testing

@testable import Sluice

// A randomized property test over random topologies, with a fixed-seed generator so every
// failure is reproducible. In about half of the cases subscriptions churn while the events flow
// (paced by the test): subscribers cancel and subscribe again, producers and relays cancel
// subscribers; then everything subscribes again and the producers finish. Each case prints its
// seed in its name; to rerun one case:
//
//   SLUICE_FUZZ_SEED=0x1234abcd swift test --filter RandomTopologyTests
//
// SLUICE_FUZZ_CASES sets how many cases run (default 40).

/// SplitMix64: a tiny, fast, well-mixed generator; the same seed always gives the same stream.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func chance(_ probability: Double) -> Bool {
        Double.random(in: 0..<1, using: &self) < probability
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        Int.random(in: range, using: &self)
    }

    mutating func yields(upTo maximum: Int) async {
        guard maximum > 0 else { return }
        for _ in 0..<self.int(0...maximum) { await Task.yield() }
    }
}

/// The seeds of the cases: derived from a fixed base seed, or one seed from the environment.
enum FuzzSeeds {
    static let base: UInt64 = 0x5151_C3E5_5EED

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    static var all: [UInt64] {
        if let text = environment("SLUICE_FUZZ_SEED") {
            let seed = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
            if let seed { return [seed] }
        }
        let count = environment("SLUICE_FUZZ_CASES").flatMap { Int($0) } ?? 40
        var generator = SplitMix64(seed: base)
        return (0..<count).map { _ in generator.next() }
    }
}

/// How one producing stage spreads its events.
enum FuzzDispatch: String, Sendable {
    case demand, broadcast, partition
}

/// A producer of `total` unique events that pays its demand in random chunks, some of it
/// later (through its own mailbox), and sometimes emits events nobody asked for.
struct FuzzProducer: Producer {
    typealias Output = Int

    enum Info: Sendable {
        case pay
        /// Paced: this many more events may be emitted.
        case allow(Int)
        /// Paced: emit the rest, and end once everything was emitted.
        case finish
    }

    let base: Int
    let total: Int
    let maxYields: Int
    let spontaneous: Double
    var random: SplitMix64
    /// How many more events the producer may emit; paced (while subscriptions churn) it starts
    /// at 0, grows with `.allow`, and the producer ends only after `.finish`.
    var allowance = Int.max
    var handle: StageHandle<Self>?
    var next = 0
    var owed = 0
    var payScheduled = false

    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Int>) {
        self.handle = handle
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) async {
        self.owed += demand
        await self.random.yields(upTo: self.maxYields)
        self.pay(&context)
    }

    mutating func handleInfo(_ info: Info, context: inout StageContext<Int>) async {
        switch info {
        case .pay:
            self.payScheduled = false
            await self.random.yields(upTo: self.maxYields)
        case .allow(let count):
            self.allowance += count
        case .finish:
            self.allowance = .max
            if self.next == self.total { context.stop(.normal) }
        }
        self.pay(&context)
    }

    private mutating func pay(_ context: inout StageContext<Int>) {
        guard self.next < self.total else { return }
        var count = 0
        if self.owed > 0 {
            count = min(self.random.chance(0.5) ? self.owed : self.random.int(1...self.owed), self.allowance)
            self.owed -= count
        }
        if self.random.chance(self.spontaneous), self.allowance > count { count += min(self.random.int(1...5), self.allowance - count) }
        count = min(count, self.total - self.next)
        if count > 0 {
            context.emit(Array((self.base + self.next)..<(self.base + self.next + count)))
            self.next += count
            if self.allowance != .max { self.allowance -= count }
        }
        if self.next == self.total {
            if self.allowance == .max { context.stop(.normal) }
        } else if self.owed > 0 && self.allowance > 0 && !self.payScheduled {
            self.payScheduled = true
            self.handle?.send(.pay)
        }
    }
}

/// Which producers of a consumer or relay ended, and when it may end itself.
struct FuzzUpstreams: Sendable {
    /// How many producers the stage subscribes to (each again after a churned subscription).
    let count: Int
    /// Whether subscriptions churn: their cancellation (normal or shutdown) is expected then.
    let churn: Bool
    var producers: [SubscriptionID: StageID] = [:]
    var ended: Set<StageID> = []

    init(count: Int, churn: Bool) {
        self.count = count
        self.churn = churn
    }

    mutating func subscribed(_ subscription: SubscriptionInfo) {
        self.producers[subscription.id] = subscription.producer
    }

    /// Records the end of an upstream subscription; returns a problem, and whether every
    /// producer has now ended.
    mutating func ended(_ subscription: SubscriptionID, reason: CancelReason) -> (problem: String?, done: Bool) {
        guard let producer = self.producers.removeValue(forKey: subscription) else { return (nil, false) }
        guard case .down(let stop) = reason else {
            // Cancelled by either side: the stage subscribes to that producer again.
            return (self.churn && reason.reason.isNormalOrShutdown ? nil : "upstream ended with \(reason)", false)
        }
        self.ended.insert(producer)
        return (stop == .normal ? nil : "upstream ended with \(reason)", self.ended.count == self.count)
    }
}

/// A producer-consumer passing events through; ends once all its producers ended.
struct FuzzRelay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    let maxYields: Int
    let problems: Observed<[String]>
    /// Every event handled, and the upstream subscriptions they came on.
    let handled: Observed<(events: [Int], subscriptions: Set<SubscriptionID>)>
    var random: SplitMix64
    var upstreams: FuzzUpstreams
    var slices: [SubscriptionID: Int] = [:]

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Int>) -> DemandMode {
        self.upstreams.subscribed(subscription)
        self.slices[subscription.id] = subscription.maxDemand - subscription.minDemand
        self.handled.update { _ = $0.subscriptions.insert(subscription.id) }
        return .automatic
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) async {
        if let slice = self.slices[subscription], events.count > slice {
            self.problems.append("relay \(context.stageName) got a slice of \(events.count) > \(slice)")
        }
        self.handled.update { $0.events += events }
        await self.random.yields(upTo: self.maxYields)
        context.emit(events)
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Int>) {
        // Subscribers of this relay are reported here too; only its producers count.
        let (problem, done) = self.upstreams.ended(subscription, reason: reason)
        if let problem { self.problems.append("relay \(context.stageName): \(problem)") }
        if done { context.stop(.normal) }
    }
}

/// A consumer recording what it receives, in automatic or manual mode; ends once all its
/// producers ended.
struct FuzzConsumer: Consumer {
    typealias Input = Int

    let manual: Bool
    let maxYields: Int
    /// What arrived, per subscription.
    let received: Observed<[SubscriptionID: [Int]]>
    let problems: Observed<[String]>
    var random: SplitMix64
    var upstreams: FuzzUpstreams
    var slices: [SubscriptionID: Int] = [:]

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
        self.upstreams.subscribed(subscription)
        self.slices[subscription.id] = subscription.maxDemand - subscription.minDemand
        if self.manual {
            context.ask(subscription.maxDemand, on: subscription.id)
            return .manual
        }
        return .automatic
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) async {
        if !self.manual, let slice = self.slices[subscription], events.count > slice {
            self.problems.append("consumer \(context.stageName) got a slice of \(events.count) > \(slice)")
        }
        self.received.update { $0[subscription, default: []] += events }
        await self.random.yields(upTo: self.maxYields)
        if self.manual { context.ask(events.count, on: subscription) }
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Never>) {
        let (problem, done) = self.upstreams.ended(subscription, reason: reason)
        if let problem { self.problems.append("consumer \(context.stageName): \(problem)") }
        if done { context.stop(.normal) }
    }
}

/// One random topology and what it must satisfy.
struct FuzzCase: CustomStringConvertible {
    let seed: UInt64
    var random: SplitMix64
    /// `demand` everywhere, `broadcast` everywhere, or a mix (`nil`).
    let uniform: FuzzDispatch?
    let producerTotals: [Int]
    let producerDispatch: [FuzzDispatch]
    let relayDispatch: [FuzzDispatch]
    let consumerCount: Int
    let manualConsumers: [Bool]
    let maxYields: Int
    /// Churn steps while events flow (random cancels, resubscribes and producer-side cancels);
    /// 0 for about half of the cases. Drawn from a generator of its own, so that the topology
    /// of a seed is the same with and without churn.
    let churnSteps: Int
    /// Drives the churn.
    var churnRandom: SplitMix64
    /// What the churn did, for messages.
    var churned = ""

    init(seed: UInt64) {
        self.seed = seed
        var churnRandom = SplitMix64(seed: seed ^ 0xC4_0A_11_CE)
        self.churnSteps = churnRandom.chance(0.5) ? churnRandom.int(5...40) : 0
        self.churnRandom = churnRandom
        var random = SplitMix64(seed: seed)
        let roll = random.int(0...9)
        let uniform: FuzzDispatch? = roll < 4 ? .demand : (roll < 6 ? .broadcast : nil)
        self.uniform = uniform
        let pick = { (random: inout SplitMix64) -> FuzzDispatch in
            uniform ?? [FuzzDispatch.demand, .broadcast, .partition][random.int(0...2)]
        }
        let producers = random.int(1...3)
        let budget = random.int(600...3_000)
        self.producerTotals = (0..<producers).map { _ in max(1, budget / producers + random.int(-50...50)) }
        self.producerDispatch = (0..<producers).map { _ in pick(&random) }
        let relays = random.chance(0.5) ? random.int(1...2) : 0
        self.relayDispatch = (0..<relays).map { _ in pick(&random) }
        self.consumerCount = random.int(1...5)
        self.manualConsumers = (0..<self.consumerCount).map { _ in random.chance(0.2) }
        self.maxYields = random.int(0...3)
        self.random = random
    }

    var description: String {
        let relays = self.relayDispatch.isEmpty ? "no relays" : "relays \(self.relayDispatch.map(\.rawValue))"
        return "seed 0x\(String(self.seed, radix: 16)): producers \(self.producerTotals) "
            + "\(self.producerDispatch.map(\.rawValue)), \(relays), \(self.consumerCount) consumers "
            + "(manual \(self.manualConsumers)), yields ≤ \(self.maxYields), churn steps \(self.churnSteps)\(self.churned)"
    }

    /// Random demand bounds: mostly moderate, sometimes tiny or large.
    mutating func demandBounds() -> (maxDemand: Int, minDemand: Int?) {
        Self.demandBounds(using: &self.random)
    }

    static func demandBounds(using random: inout SplitMix64) -> (maxDemand: Int, minDemand: Int?) {
        let maxDemand: Int
        switch random.int(0...7) {
        case 0...1: maxDemand = random.int(1...4)
        case 2...5: maxDemand = random.int(5...60)
        default: maxDemand = random.int(61...400)
        }
        let minDemand: Int? = random.chance(0.3) ? nil : random.int(0...(maxDemand - 1))
        return (maxDemand, minDemand)
    }

    /// Options for subscribing `link` again during the churn.
    mutating func churnOptions(_ link: FuzzLink) -> SubscriptionOptions<Int> {
        let (maxDemand, minDemand) = Self.demandBounds(using: &self.churnRandom)
        return .init(maxDemand: maxDemand, minDemand: minDemand, cancel: .transient, partition: link.partition)
    }

    mutating func dispatcher(_ kind: FuzzDispatch, subscribers: Int) -> Dispatcher<Int> {
        switch kind {
        case .demand: return .demand
        case .broadcast: return .broadcast
        case .partition:
            let discardEvery = self.random.int(5...40)
            return .partition(count: subscribers) { event in
                event % discardEvery == 3 ? nil : .index(event % subscribers)
            }
        }
    }

    mutating func split() -> SplitMix64 {
        SplitMix64(seed: self.random.next())
    }
}

/// One subscription of a random topology as the churn sees it: the subscribing stage, its
/// producer, and how to cancel it from either side or subscribe again.
struct FuzzLink: Sendable {
    let downstream: StageID
    let upstream: StageID
    let label: String
    let partition: PartitionKey?
    let downstreamStatus: @Sendable () async throws -> StageStatus
    let upstreamStatus: @Sendable () async throws -> StageStatus
    let cancelFromDownstream: @Sendable (SubscriptionID, StopReason) -> Void
    let cancelFromUpstream: @Sendable (SubscriptionID, StopReason) -> Void
    let subscribe: @Sendable (SubscriptionOptions<Int>) async throws -> SubscriptionID

    init<D: Stage, U: Stage>(
        _ downstream: StageHandle<D>,
        to upstream: StageHandle<U>,
        partition: PartitionKey?,
        ledger: DemandLedger
    ) where D.Input == Int, U.Output == Int {
        self.downstream = downstream.id
        self.upstream = upstream.id
        self.label = "\(downstream.name) → \(upstream.name)"
        self.partition = partition
        self.downstreamStatus = { try await withTimeout("status of \(downstream.name)", seconds: 20) { try await downstream.status() } }
        self.upstreamStatus = { try await withTimeout("status of \(upstream.name)", seconds: 20) { try await upstream.status() } }
        self.cancelFromDownstream = { downstream.cancel($0, reason: $1) }
        self.cancelFromUpstream = { upstream.cancel($0, reason: $1) }
        let watched = ledger.watch(upstream)
        self.subscribe = { options in
            try await withTimeout("\(downstream.name) to subscribe to \(upstream.name)", seconds: 20) {
                try await downstream.subscribe(to: watched, options: options)
            }
        }
    }

    /// The subscription the subscribing stage holds and has not cancelled, if any.
    func heldByDownstream() async throws -> SubscriptionID? {
        try await self.downstreamStatus().producers.first { $0.producer == self.upstream && !$0.isCancelling }?.id
    }

    /// The subscription the producer lists for the subscribing stage, if any.
    func heldByUpstream() async throws -> SubscriptionID? {
        try await self.upstreamStatus().subscribers.first { $0.consumer == self.downstream }?.id
    }

    /// Whether both sides hold the same subscription: it will see the producer's end.
    func isLive() async throws -> Bool {
        guard let upstream = try await self.heldByUpstream() else { return false }
        return try await self.heldByDownstream() == upstream
    }
}

@Suite("Random topologies", .serialized, .timeLimit(.minutes(2)))
struct RandomTopologyTests {
    @Test(
        "no subscription ever receives more than it asked, also under random cancels, resubscribes and producer-side cancels; the demand dispatcher loses and duplicates nothing; a relay loses nothing it received",
        arguments: FuzzSeeds.all
    )
    func randomTopology(seed: UInt64) async throws {
        var fuzz = FuzzCase(seed: seed)
        let churn = fuzz.churnSteps > 0
        let ledger = DemandLedger(keepEvents: true)
        let problems = Observed<[String]>([])

        // Producers first, holding demand until every subscription is in place.
        let downstreamOfProducers = fuzz.relayDispatch.isEmpty ? fuzz.consumerCount : fuzz.relayDispatch.count
        var producers: [StageHandle<FuzzProducer>] = []
        for (index, total) in fuzz.producerTotals.enumerated() {
            let stage = FuzzProducer(
                base: (index + 1) * 1_000_000,
                total: total,
                maxYields: fuzz.maxYields,
                spontaneous: fuzz.random.chance(0.5) ? 0.1 : 0,
                random: fuzz.split(),
                allowance: churn ? 0 : .max
            )
            let dispatcher = fuzz.dispatcher(fuzz.producerDispatch[index], subscribers: downstreamOfProducers)
            producers.append(
                try await StageHandle.start(
                    stage,
                    options: .init(name: "P\(index)", dispatcher: dispatcher, demandMode: .accumulate)
                )
            )
        }
        var relays: [StageHandle<FuzzRelay>] = []
        var relayHandled: [Observed<(events: [Int], subscriptions: Set<SubscriptionID>)>] = []
        var links: [FuzzLink] = []
        for (index, kind) in fuzz.relayDispatch.enumerated() {
            let handled = Observed<(events: [Int], subscriptions: Set<SubscriptionID>)>(([], []))
            relayHandled.append(handled)
            let relay = try await StageHandle.start(
                FuzzRelay(
                    maxYields: fuzz.maxYields,
                    problems: problems,
                    handled: handled,
                    random: fuzz.split(),
                    upstreams: FuzzUpstreams(count: producers.count, churn: churn)
                ),
                options: .init(name: "R\(index)", dispatcher: fuzz.dispatcher(kind, subscribers: fuzz.consumerCount))
            )
            for (producerIndex, producer) in producers.enumerated() {
                let (maxDemand, minDemand) = fuzz.demandBounds()
                let partition: PartitionKey? = fuzz.producerDispatch[producerIndex] == .partition ? .index(index) : nil
                let watched = ledger.watch(producer)
                try await withTimeout("R\(index) to subscribe to P\(producerIndex) (\(fuzz))", seconds: 20) {
                    try await relay.subscribe(
                        to: watched,
                        options: .init(maxDemand: maxDemand, minDemand: minDemand, cancel: .transient, partition: partition)
                    )
                }
                links.append(FuzzLink(relay, to: producer, partition: partition, ledger: ledger))
            }
            relays.append(relay)
        }
        let upstreams: [(ref: ProducerRef<Int>, kind: FuzzDispatch)] =
            relays.isEmpty
            ? producers.enumerated().map { ($1.producer, fuzz.producerDispatch[$0]) }
            : relays.enumerated().map { ($1.producer, fuzz.relayDispatch[$0]) }
        var consumers: [StageHandle<FuzzConsumer>] = []
        var received: [Observed<[SubscriptionID: [Int]]>] = []
        var filtered: Set<SubscriptionID> = []
        for index in 0..<fuzz.consumerCount {
            let log = Observed<[SubscriptionID: [Int]]>([:])
            let consumer = try await StageHandle.start(
                FuzzConsumer(
                    manual: fuzz.manualConsumers[index],
                    maxYields: fuzz.maxYields,
                    received: log,
                    problems: problems,
                    random: fuzz.split(),
                    upstreams: FuzzUpstreams(count: upstreams.count, churn: churn)
                ),
                options: .init(name: "C\(index)")
            )
            for (upstreamIndex, upstream) in upstreams.enumerated() {
                let (maxDemand, minDemand) = fuzz.demandBounds()
                var options = SubscriptionOptions<Int>(maxDemand: maxDemand, minDemand: minDemand, cancel: .transient)
                if upstream.kind == .partition { options.partition = .index(index) }
                links.append(
                    relays.isEmpty
                        ? FuzzLink(consumer, to: producers[upstreamIndex], partition: options.partition, ledger: ledger)
                        : FuzzLink(consumer, to: relays[upstreamIndex], partition: options.partition, ledger: ledger)
                )
                let filter = upstream.kind == .broadcast && fuzz.uniform == nil && fuzz.random.chance(0.3)
                if filter { options.selector = { $0 % 2 == 0 } }
                let watched = ledger.watch(upstream.ref)
                let subscription = try await withTimeout("C\(index) to subscribe (\(fuzz))", seconds: 20) { [options] in
                    try await consumer.subscribe(to: watched, options: options)
                }
                if filter { filtered.insert(subscription) }
            }
            consumers.append(consumer)
            received.append(log)
        }

        for producer in producers { producer.setDemandMode(.forward) }
        do {
            if churn {
                try await Self.churn(&fuzz, links: links, producers: producers)
                for producer in producers { producer.send(.finish) }
            }
            for consumer in consumers {
                let reason = try await withTimeout("\(consumer.name) to end (\(fuzz))", seconds: 20) {
                    await consumer.waitForTermination()
                }
                #expect("\(reason)" == "normal", "\(fuzz)")
            }
            // Every wait is bounded, so a stuck case reports what each stage still holds.
            for relay in relays {
                _ = try await withTimeout("\(relay.name) to end (\(fuzz))", seconds: 20) { try await relay.ended() }
            }
            for producer in producers {
                _ = try await withTimeout("\(producer.name) to end (\(fuzz))", seconds: 20) { try await producer.ended() }
            }
        } catch {
            await Self.report(fuzz, producers: producers, relays: relays, consumers: consumers, received: received)
            throw error
        }

        #expect(ledger.violations == [], "\(fuzz)")
        #expect(problems.value == [], "\(fuzz)")
        // Nothing a relay received was lost: it handled exactly what its producers sent it.
        for (index, handled) in relayHandled.enumerated() {
            let sent = handled.value.subscriptions.flatMap { ledger.account($0).events }.sorted()
            #expect(handled.value.events.sorted() == sent, "\(fuzz): R\(index) handled what it received")
        }
        let emitted = fuzz.producerTotals.enumerated().flatMap { index, total in
            ((index + 1) * 1_000_000)..<((index + 1) * 1_000_000 + total)
        }
        let copies = max(1, relays.count)
        switch fuzz.uniform {
        case .demand:
            // Every event reaches exactly one consumer.
            let all = received.flatMap { $0.value.values.joined() }.sorted()
            #expect(all == emitted, "\(fuzz): \(all.count) received, \(emitted.count) emitted")
        case .broadcast where churn:
            // A consumer misses what is broadcast while it is not subscribed, but never
            // receives an event more often than there are relays to send it.
            for (index, log) in received.enumerated() {
                var counts: [Int: Int] = [:]
                for event in log.value.values.joined() { counts[event, default: 0] += 1 }
                #expect(counts.values.allSatisfy { $0 <= copies }, "\(fuzz): consumer \(index)")
            }
        case .broadcast:
            // Every consumer receives every event from every relay.
            for (index, log) in received.enumerated() {
                let expected = emitted.flatMap { Array(repeating: $0, count: copies) }
                #expect(log.value.values.joined().sorted() == expected, "\(fuzz): consumer \(index)")
            }
        default:
            for log in received {
                for (subscription, events) in log.value where filtered.contains(subscription) {
                    #expect(events.allSatisfy { $0 % 2 == 0 }, "\(fuzz): \(subscription) selects even events")
                }
            }
            // Nothing is ever duplicated beyond what broadcasting explains.
            let limit = copies * fuzz.consumerCount
            var counts: [Int: Int] = [:]
            for log in received { for event in log.value.values.joined() { counts[event, default: 0] += 1 } }
            #expect(counts.values.allSatisfy { $0 <= limit }, "\(fuzz)")
        }
    }

    /// Cancels subscriptions from either side and subscribes again while events flow, then
    /// subscribes everything again and returns once every subscription is live, so that every
    /// stage sees each of its producers end.
    static func churn(_ fuzz: inout FuzzCase, links: [FuzzLink], producers: [StageHandle<FuzzProducer>]) async throws {
        var (ownCancels, producerCancels, resubscribes) = (0, 0, 0)
        defer {
            fuzz.churned = " (\(ownCancels) cancels by subscribers, \(producerCancels) by producers, \(resubscribes) resubscribes)"
        }
        for step in 0..<fuzz.churnSteps {
            // The producers emit a share of their events at each step, so that subscriptions
            // churn while events flow (the last share waits for `.finish`).
            for (index, producer) in producers.enumerated() where step > 0 {
                producer.send(.allow(fuzz.producerTotals[index] / fuzz.churnSteps))
            }
            let link = links[fuzz.churnRandom.int(0...(links.count - 1))]
            switch fuzz.churnRandom.int(0...3) {
            case 0:
                // The subscriber cancels (normal or shutdown: a transient one keeps running),
                // and maybe subscribes again at once.
                guard let subscription = try await link.heldByDownstream() else { continue }
                link.cancelFromDownstream(subscription, fuzz.churnRandom.chance(0.5) ? .normal : .shutdown)
                ownCancels += 1
                // May be refused while a partition is still held for the cancelled subscription.
                if fuzz.churnRandom.chance(0.5), (try? await link.subscribe(fuzz.churnOptions(link))) != nil { resubscribes += 1 }
            case 1:
                // The producer cancels the subscriber.
                if let subscription = try await link.heldByUpstream() {
                    link.cancelFromUpstream(subscription, .normal)
                    producerCancels += 1
                }
            case 2:
                // A subscriber without a subscription subscribes again.
                if try await link.heldByDownstream() == nil, (try? await link.subscribe(fuzz.churnOptions(link))) != nil {
                    resubscribes += 1
                }
            default:
                await fuzz.churnRandom.yields(upTo: 20)
            }
        }
        // A stage whose subscription the producer cancelled still holds it until it handled the
        // end (a relay handles it behind its queued input), and a cancelled partition may still be
        // taken: keep trying until both sides of every subscription agree.
        let again = links.map { fuzz.churnOptions($0) }
        try await withTimeout("every subscription to be live again", seconds: 20) {
            while true {
                var live = true
                for (index, link) in links.enumerated() where try await !link.isLive() {
                    live = false
                    if try await link.heldByDownstream() == nil { _ = try? await link.subscribe(again[index]) }
                }
                if live { return }
                await Task.yield()
            }
        }
    }

    /// Prints what each stage still had when a case timed out.
    static func report(
        _ fuzz: FuzzCase,
        producers: [StageHandle<FuzzProducer>],
        relays: [StageHandle<FuzzRelay>],
        consumers: [StageHandle<FuzzConsumer>],
        received: [Observed<[SubscriptionID: [Int]]>]
    ) async {
        var lines = ["stuck: \(fuzz)"]
        func describe<S: Stage>(_ handle: StageHandle<S>) async -> String {
            if let reason = handle.stopReason { return "\(handle.name): ended \(reason)" }
            let statistics = try? await withTimeout("statistics", seconds: 2) { try await handle.statistics() }
            return "\(handle.name): \(statistics.map { "\($0)" } ?? "no answer")"
        }
        for producer in producers { lines.append(await describe(producer)) }
        for relay in relays { lines.append(await describe(relay)) }
        for (index, consumer) in consumers.enumerated() {
            lines.append(await describe(consumer) + ", received \(received[index].value.values.joined().count)")
        }
        Issue.record(Comment(rawValue: lines.joined(separator: "\n")))
    }
}
