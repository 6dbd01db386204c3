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
// failure is reproducible. Each case prints its seed in its name; to rerun one case:
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

    enum Info: Sendable { case pay }

    let base: Int
    let total: Int
    let maxYields: Int
    let spontaneous: Double
    var random: SplitMix64
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
        self.payScheduled = false
        await self.random.yields(upTo: self.maxYields)
        self.pay(&context)
    }

    private mutating func pay(_ context: inout StageContext<Int>) {
        guard self.next < self.total else { return }
        var count = 0
        if self.owed > 0 {
            count = self.random.chance(0.5) ? self.owed : self.random.int(1...self.owed)
            self.owed -= count
        }
        if self.random.chance(self.spontaneous) { count += self.random.int(1...5) }
        count = min(count, self.total - self.next)
        if count > 0 {
            context.emit(Array((self.base + self.next)..<(self.base + self.next + count)))
            self.next += count
        }
        if self.next == self.total {
            context.stop(.normal)
        } else if self.owed > 0 && !self.payScheduled {
            self.payScheduled = true
            self.handle?.send(.pay)
        }
    }
}

/// A producer-consumer passing events through; ends once all its producers ended.
struct FuzzRelay: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int

    let maxYields: Int
    let problems: Observed<[String]>
    var random: SplitMix64
    var slices: [SubscriptionID: Int] = [:]
    var subscribed = 0
    var ended = 0

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Int>) -> DemandMode {
        self.subscribed += 1
        self.slices[subscription.id] = subscription.maxDemand - subscription.minDemand
        return .automatic
    }

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) async {
        if let slice = self.slices[subscription], events.count > slice {
            self.problems.append("relay \(context.stageName) got a slice of \(events.count) > \(slice)")
        }
        await self.random.yields(upTo: self.maxYields)
        context.emit(events)
    }

    mutating func handleCancel(_ subscription: SubscriptionID, reason: CancelReason, context: inout StageContext<Int>) {
        // Subscribers of this relay are reported here too; only its producers count.
        guard self.slices[subscription] != nil else { return }
        if reason != .down(.normal) { self.problems.append("relay upstream ended with \(reason)") }
        self.ended += 1
        if self.ended == self.subscribed { context.stop(.normal) }
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
    var slices: [SubscriptionID: Int] = [:]
    var subscribed = 0
    var ended = 0

    mutating func handleSubscribe(_ subscription: SubscriptionInfo, context: inout StageContext<Never>) -> DemandMode {
        self.subscribed += 1
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
        if reason != .down(.normal) { self.problems.append("consumer upstream ended with \(reason)") }
        self.ended += 1
        if self.ended == self.subscribed { context.stop(.normal) }
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

    init(seed: UInt64) {
        self.seed = seed
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
            + "(manual \(self.manualConsumers)), yields ≤ \(self.maxYields)"
    }

    /// Random demand bounds: mostly moderate, sometimes tiny or large.
    mutating func demandBounds() -> (maxDemand: Int, minDemand: Int?) {
        let maxDemand: Int
        switch self.random.int(0...7) {
        case 0...1: maxDemand = self.random.int(1...4)
        case 2...5: maxDemand = self.random.int(5...60)
        default: maxDemand = self.random.int(61...400)
        }
        let minDemand: Int? = self.random.chance(0.3) ? nil : self.random.int(0...(maxDemand - 1))
        return (maxDemand, minDemand)
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

@Suite("Random topologies", .serialized, .timeLimit(.minutes(2)))
struct RandomTopologyTests {
    @Test("no subscription ever receives more than it asked; the demand dispatcher loses and duplicates nothing", arguments: FuzzSeeds.all)
    func randomTopology(seed: UInt64) async throws {
        var fuzz = FuzzCase(seed: seed)
        let ledger = DemandLedger()
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
                random: fuzz.split()
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
        for (index, kind) in fuzz.relayDispatch.enumerated() {
            let relay = try await StageHandle.start(
                FuzzRelay(maxYields: fuzz.maxYields, problems: problems, random: fuzz.split()),
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
                    random: fuzz.split()
                ),
                options: .init(name: "C\(index)")
            )
            for upstream in upstreams {
                let (maxDemand, minDemand) = fuzz.demandBounds()
                var options = SubscriptionOptions<Int>(maxDemand: maxDemand, minDemand: minDemand, cancel: .transient)
                if upstream.kind == .partition { options.partition = .index(index) }
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
        let emitted = fuzz.producerTotals.enumerated().flatMap { index, total in
            ((index + 1) * 1_000_000)..<((index + 1) * 1_000_000 + total)
        }
        let copies = max(1, relays.count)
        switch fuzz.uniform {
        case .demand:
            // Every event reaches exactly one consumer.
            let all = received.flatMap { $0.value.values.joined() }.sorted()
            #expect(all == emitted, "\(fuzz): \(all.count) received, \(emitted.count) emitted")
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
