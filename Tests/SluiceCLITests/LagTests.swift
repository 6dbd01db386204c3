//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceRedis
import Synchronization
import Testing

@testable import sluice

/// How often a lag query ran.
private final class QueryCount: Sendable {
    let value = Atomic<Int>(0)
}

@Suite("lag sampling", .timeLimit(.minutes(1)))
struct LagSamplerTests {
    @Test("broker sources have a lag sampler; lines and the demo's orders in memory do not")
    func onlyBrokerSourcesKnowTheirLag() throws {
        #expect(LagSampler(of: try RedisSource(url: "redis://127.0.0.1:1/0?key=k")) != nil)
        #expect(LagSampler(of: LineSource(input: .standardInput, limit: nil)) == nil)
        #expect(LagSampler(of: DemoOrders(count: 10)) == nil)
    }

    @Test("asks at most once per interval, keeps the last answer, and forgets it when stopped")
    func asksOncePerInterval() async throws {
        let count = QueryCount()
        let sampler = LagSampler(interval: .milliseconds(100)) { count.value.add(1, ordering: .relaxed).newValue }
        #expect(sampler.current == nil, "nothing before it starts")
        let clock = ContinuousClock()
        let started = clock.now
        sampler.start()
        while count.value.load(ordering: .relaxed) < 3 { try await Task.sleep(for: .milliseconds(5)) }
        let asked = count.value.load(ordering: .relaxed)
        let elapsed = clock.now - started
        // The n-th query starts (n − 1) intervals after the first at the earliest.
        #expect(Double(asked - 1) <= elapsed / .milliseconds(100), "\(asked) queries in \(elapsed) at one per 100 ms")
        try await waitUntilAnswered(sampler)
        #expect(sampler.current.map { $0 >= 1 && $0 <= asked + 1 } == true)
        sampler.stop()
        let atStop = count.value.load(ordering: .relaxed)
        #expect(sampler.current == nil)
        sampler.start()
        try await Task.sleep(for: .milliseconds(250))
        // A query that had just begun may still count once; none starts after stop().
        #expect(count.value.load(ordering: .relaxed) <= atStop + 1, "not again after stop()")
    }

    @Test("a failing query shows no lag, and the sampler keeps asking")
    func aFailingQueryShowsNothing() async throws {
        let count = QueryCount()
        let sampler = LagSampler(interval: .milliseconds(20)) { () async throws -> Int? in
            if count.value.add(1, ordering: .relaxed).newValue == 1 { return 9 }
            throw CancellationError()
        }
        sampler.start()
        defer { sampler.stop() }
        while count.value.load(ordering: .relaxed) < 3 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(sampler.current == nil, "the answer before the failure is not shown any more")
    }
}

/// Waits until `sampler` shows an answer.
private func waitUntilAnswered(_ sampler: LagSampler) async throws {
    while sampler.current == nil { try await Task.sleep(for: .milliseconds(5)) }
}

@Suite("sluice live status lag", .serialized, .timeLimit(.minutes(1)))
struct LagStatusTests {
    /// The `, lag N` values of the status lines in `text`, in order.
    private func lags(_ text: String) -> [Int] {
        text.split(separator: "\n").compactMap { line in
            line.components(separatedBy: ", lag ").dropFirst().first?.components(separatedBy: ";").first
                .flatMap { Int($0.replacingOccurrences(of: ",", with: "")) }
        }
    }

    @Test("demo from a Redis list, --status lines: the lag falls from frame to frame and is gone from the final one")
    func theDemoShowsAFallingLag() async throws {
        let base = try redisURL()
        let key = "sluice-cli-lag-\(UUID().uuidString.prefix(8))"
        let count = 24_000
        // The demo's store takes 5 ms a batch of 50 (about 8,000 orders a second here): the
        // run lasts a few seconds, a status line a second.
        for start in stride(from: 0, to: count, by: 2000) {
            let orders = (start..<start + 2000).map { "{\"id\":\($0),\"customer\":\($0 % 7),\"region\":\"eu\",\"amount\":1}" }
            _ = try await redisCLI(base, ["RPUSH", key] + orders)
        }
        let result = try await sluice(["demo", "--source", "\(base)/0?key=\(key)&mode=list", "--count", "\(count)", "--status", "lines"])
        _ = try await redisCLI(base, ["DEL", key, "\(key):dead"])
        #expect(result.status == 0, "\(result.error)")
        let lines = result.error.split(separator: "\n").filter { $0.hasPrefix("sluice demo  ") }
        let lags = self.lags(result.error)
        #expect(lags.count >= 2, "\(result.error)")
        #expect(lags == lags.sorted(by: >) && (lags.first ?? 0) > (lags.last ?? 0), "the lag falls: \(lags)")
        #expect(lags.allSatisfy { $0 >= 0 && $0 < count }, "\(lags)")
        #expect(lines.last.map { $0.contains("done") && !$0.contains("lag") } == true, "\(result.error)")
    }

    @Test("a source that does not know its lag shows none: the demo's orders in memory")
    func noLagWithoutABroker() async throws {
        let result = try await sluice(["demo", "--count", "12000", "--status", "lines"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.error.contains("sluice demo  "), "status lines were drawn: \(result.error)")
        #expect(!result.error.contains("lag"), "\(result.error)")
    }
}
