//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceTestKit
import Testing

@Suite(.timeLimit(.minutes(1))) struct FailurePolicyTests {
    @Test func aThrowingHandlerIsRetriedWithBackoffOnTheClockThenDeadLettered() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let attempts = Recorder<Duration>()
        let policy = FailurePolicy.retry(attempts: 3, initialBackoff: .milliseconds(100), jitter: 0, then: .deadLetter)
        let pipeline = Pipeline(
            "retry",
            source: source,
            configuration: PipelineConfiguration(failurePolicy: policy, clock: PipelineClock(clock))
        ) {
            Processors(concurrency: 1) { _ in
                attempts.append(clock.now.offset)
                throw Boom()
            }
        }
        try await withRunningPipeline(pipeline) {
            let id = source.push("poison")
            await clock.waitForSleepers(1)
            #expect(attempts.all == [.zero])
            // The first backoff is 100 ms: 1 ms before it the retry still sleeps (the clock woke
            // no one), and given time no attempt runs.
            clock.advance(by: .milliseconds(99))
            #expect(clock.sleeperCount(dueWithin: .milliseconds(1)) == 1, "the backoff ended before it was due")
            try await Task.sleep(for: .milliseconds(50))
            #expect(attempts.all == [.zero])
            clock.advance(by: .milliseconds(1))
            await clock.waitForSleepers(1)
            #expect(attempts.all == [.zero, .milliseconds(100)])
            // The second backoff doubles.
            clock.advance(by: .milliseconds(199))
            #expect(clock.sleeperCount(dueWithin: .milliseconds(1)) == 1, "the second backoff ended before it was due")
            try await Task.sleep(for: .milliseconds(50))
            #expect(attempts.all == [.zero, .milliseconds(100)])
            clock.advance(by: .milliseconds(1))
            let outcome = await source.waitForOutcome(of: id)
            #expect(outcome == .failed(.deadLetter))
            #expect(attempts.all == [.zero, .milliseconds(100), .milliseconds(300)])
            #expect(pipeline.statistics.retried == 2)
            #expect(pipeline.statistics.deadLettered == 1)
        }
        #expect(source.settlementCounts.values.allSatisfy { $0 == 1 })
    }

    @Test("a retry runs the handler on the message as it arrived, whether the handler is synchronous or async", arguments: [false, true])
    func retriesSeeTheOriginalMessage(asyncHandler: Bool) async throws {
        let source = InMemorySource()
        let seen = Recorder<String>()
        let batched = Recorder<String>()
        let policy = FailurePolicy.retry(attempts: 2, initialBackoff: .zero, jitter: 0, then: .deadLetter)
        // Appends "!" to the payload, and throws after changing it the first time it sees a message.
        @Sendable func handle(_ message: inout Message<BasicMetadata>) throws {
            let text = try message.string()
            seen.append(text)
            message.payload.append(UInt8(ascii: "!"))
            if message.attempts == 1 { throw Boom() }
        }
        let pipeline = Pipeline("retry-original", source: source, configuration: PipelineConfiguration(failurePolicy: policy)) {
            if asyncHandler {
                Processors(concurrency: 2) { message in
                    await Task.yield()
                    try handle(&message)
                }
            } else {
                Processors(concurrency: 2) { message in try handle(&message) }
            }
            Batcher(size: 4, timeout: .milliseconds(20)) { batch in
                for message in batch { batched.append(try message.string()) }
            }
        }
        try await withRunningPipeline(pipeline) {
            let outcomes = await source.testBatch(payloads(4))
            #expect(outcomes == Array(repeating: .acknowledged, count: 4))
        }
        // Each message was seen twice, both times as pushed, and left with one "!".
        #expect(seen.all.sorted() == ["m0", "m0", "m1", "m1", "m2", "m2", "m3", "m3"])
        #expect(batched.all.sorted() == ["m0!", "m1!", "m2!", "m3!"])
        #expect(pipeline.statistics.retried == 4)
        #expect(source.settlementCounts.values.allSatisfy { $0 == 1 })
    }

    @Test(
        "a retry sees the message as it arrived after the failed attempt replaced or changed its payload and routing in place, packed or not",
        arguments: [false, true], [false, true]
    )
    func retriesSeeTheOriginalWhateverTheHandlerDid(ownBuffers: Bool, replace: Bool) async throws {
        let source = InMemorySource()
        let retried = Recorder<String>()
        let policy = FailurePolicy.retry(attempts: 2, initialBackoff: .zero, jitter: 0, then: .deadLetter)
        let pipeline = Pipeline("retry-changed", source: source, configuration: PipelineConfiguration(failurePolicy: policy)) {
            Processors(concurrency: 2, maxDemand: 8) { message in
                if message.attempts == 1 {
                    if replace {
                        message.payload = Payload(Array("replaced".utf8))
                    } else {
                        message.payload[0] = UInt8(ascii: "Z")
                        message.payload.append(contentsOf: "-changed".utf8)
                    }
                    message.batchKey = "changed"
                    throw Boom()
                }
                retried.append("\(try message.string())|\(message.batchKey ?? "nil")")
            }
        }
        let texts = (0..<20).map { "m\($0)" }
        try await withRunningPipeline(pipeline) {
            // Own buffers: each payload is the only holder of its bytes, so only the processor
            // keeps the original alive.
            let ids =
                ownBuffers
                ? source.push(payloads: texts.map { Payload(Array($0.utf8)) })
                : source.push(texts.map { Array($0.utf8) })
            for id in ids { #expect(await source.waitForOutcome(of: id) == .acknowledged) }
        }
        #expect(retried.all.sorted() == texts.map { "\($0)|nil" }.sorted())
    }

    @Test func aHandlerChosenDispositionSkipsRetries() async throws {
        let source = InMemorySource()
        let calls = Recorder<String>()
        let pipeline = Pipeline("dispositions", source: source, configuration: PipelineConfiguration(failurePolicy: .retry(attempts: 5))) {
            Processors(concurrency: 1) { message in
                let text = try message.string()
                calls.append(text)
                switch text {
                case "drop": message.fail(Boom(), disposition: .drop)
                case "requeue": message.fail(Boom(), disposition: .requeue)
                case "dead": message.fail(Boom(), disposition: .deadLetter)
                default: break
                }
            }
        }
        try await withRunningPipeline(pipeline) {
            #expect(await source.testMessage("drop") == .failed(.drop))
            #expect(await source.testMessage("requeue") == .failed(.requeue))
            #expect(await source.testMessage("dead") == .failed(.deadLetter))
            #expect(await source.testMessage("fine") == .acknowledged)
        }
        #expect(calls.all == ["drop", "requeue", "dead", "fine"])
    }

    @Test func undecodablePayloadsFailTheMessageNotThePipeline() async throws {
        struct Order: Codable { var id: Int }
        let source = InMemorySource()
        let pipeline = Pipeline("decode", source: source, configuration: PipelineConfiguration(failurePolicy: .drop)) {
            Processors(concurrency: 1) { message in _ = try message.decode(Order.self) }
        }
        try await withRunningPipeline(pipeline) {
            #expect(await source.testMessage(#"{"id": 7}"#) == .acknowledged)
            #expect(await source.testMessage("not json") == .failed(.drop))
            #expect(await source.testMessage([0xff, 0xfe]) == .failed(.drop))
            #expect(await source.testMessage(#"{"id": 8}"#) == .acknowledged)
            #expect(pipeline.statistics.dropped == 2)
        }
    }

    @Test func utf8AndJSONHelpersReportTypedErrors() throws {
        let bad = Message(payload: [0xc3, 0x28], metadata: BasicMetadata(id: 0))
        #expect(throws: DecodingFailure.self) { try bad.string() }
        var good = Message(payload: Array("hé".utf8), metadata: BasicMetadata(id: 1))
        #expect(try good.string() == "hé")
        try good.encode(["a": 1])
        #expect(try good.decode([String: Int].self) == ["a": 1])
        let error = #expect(throws: DecodingFailure.self) { try bad.decode([String: Int].self) }
        #expect(error?.message.contains("Dictionary<String, Int>") == true)
    }

    @Test func messagesDeliveredTooOftenAreSettledWithoutRunningTheHandler() async throws {
        let source = InMemorySource()
        let calls = Recorder<String>()
        let policy = FailurePolicy(retry: nil, disposition: .deadLetter, maxDeliveries: 3)
        let pipeline = Pipeline("poison", source: source, configuration: PipelineConfiguration(failurePolicy: policy)) {
            Processors(concurrency: 1) { message in calls.append(try message.string()) }
        }
        try await withRunningPipeline(pipeline) {
            #expect(await source.testMessage("third", deliveryCount: 3) == .acknowledged)
            #expect(await source.testMessage("fourth", deliveryCount: 4) == .failed(.deadLetter))
        }
        #expect(calls.all == ["third"])
    }

    @Test func aFailingBatchIsRetriedThenEveryMessageFollowsThePolicy() async throws {
        let source = InMemorySource()
        let clock = ManualClock()
        let runs = Recorder<Int>()
        let pipeline = Pipeline(
            "batch-retry",
            source: source,
            configuration: PipelineConfiguration(
                failurePolicy: .retry(attempts: 2, initialBackoff: .seconds(1), jitter: 0, then: .requeue),
                clock: PipelineClock(clock)
            )
        ) {
            Processors(concurrency: 1) { _ in }
            Batcher(size: 3, timeout: .seconds(3600)) { batch in
                runs.append(batch.count)
                if batch.contains(where: { (try? $0.string()) == "bad" }) { throw Boom() }
                // Individual failures inside a good batch follow the policy directly.
                for index in batch.indices where (try? batch[index].string()) == "skip" {
                    batch[index].fail(Boom(), disposition: .drop)
                }
            }
        }
        try await withRunningPipeline(pipeline) {
            let ids = source.push([Array("a".utf8), Array("bad".utf8), Array("c".utf8)])
            // The retry backoff (a batch timer, if one is armed, is due much later).
            await clock.waitForSleepers(1, dueWithin: .seconds(1))
            #expect(runs.all == [3])
            // Just before the backoff is due the batch is not run again.
            clock.advance(by: .milliseconds(999))
            #expect(clock.sleeperCount(dueWithin: .milliseconds(1)) == 1, "the batch backoff ended before it was due")
            try await Task.sleep(for: .milliseconds(50))
            #expect(runs.all == [3])
            clock.advance(by: .milliseconds(1))
            for id in ids { #expect(await source.waitForOutcome(of: id) == .failed(.requeue)) }
            #expect(runs.all == [3, 3])
            let good = source.push([Array("x".utf8), Array("skip".utf8), Array("y".utf8)])
            #expect(await source.waitForOutcome(of: good[0]) == .acknowledged)
            #expect(await source.waitForOutcome(of: good[1]) == .failed(.drop))
            #expect(await source.waitForOutcome(of: good[2]) == .acknowledged)
        }
        #expect(source.settlementCounts.count == 6)
        #expect(source.settlementCounts.values.allSatisfy { $0 == 1 })
    }

    @Test func backoffGrowsExponentiallyUpToTheCapWithBoundedJitter() {
        let retry = RetryPolicy(maxAttempts: 10, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1), multiplier: 2, jitter: 0.5)
        #expect(retry.backoff(afterAttempt: 1) == .milliseconds(100))
        #expect(retry.backoff(afterAttempt: 2) == .milliseconds(200))
        #expect(retry.backoff(afterAttempt: 4) == .milliseconds(800))
        #expect(retry.backoff(afterAttempt: 5) == .seconds(1))
        #expect(retry.backoff(afterAttempt: 9) == .seconds(1))
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...6 {
            let delay = retry.delay(afterAttempt: attempt, using: &generator)
            #expect(delay <= retry.backoff(afterAttempt: attempt))
            #expect(delay >= retry.backoff(afterAttempt: attempt) * 0.5 - .microseconds(1))
        }
        #expect(throws: SluiceError.self) { try FailurePolicy.retry(attempts: 0).validateForTesting() }
    }
}

extension FailurePolicy {
    func validateForTesting() throws {
        let source = InMemorySource()
        try Pipeline("validate", source: source, configuration: PipelineConfiguration(failurePolicy: self)) {
            Processors { _ in }
        }.validate()
    }
}

extension Duration {
    static func * (lhs: Duration, rhs: Double) -> Duration {
        .nanoseconds(Int64(Double(lhs / .nanoseconds(1)) * rhs))
    }
}
