//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceTestKit
import Synchronization
import Testing

@testable import Sluice

/// A flow the test feeds through an async stream: one stage sums the numbers in `window`;
/// `reduced` counts the numbers the stage took (counted right before each is reduced: a tick
/// is handled only after the batch), `results` records what it emitted.
private struct SummingRun {
    let input: AsyncStream<Int>.Continuation
    let reduced = Observed(0)
    let results = Observed<[Int]>([])
    let task: Task<Void, any Error>

    init(window: FlowWindow) {
        let (stream, input) = AsyncStream.makeStream(of: Int.self)
        self.input = input
        let reduced = self.reduced
        let results = self.results
        self.task = Task {
            try await Flow.from(stream, stages: 1, maxDemand: 10)
                .map { number in
                    reduced.increment()
                    return number
                }
                .reduce(into: 0, window: window) { $0 += $1 }
                .emit { batch in results.update { $0 += batch } }
        }
    }

    /// Feeds `numbers` and waits until the stage reduced all it was fed so far.
    func feed(_ numbers: [Int]) async throws {
        let target = self.reduced.value + numbers.count
        for number in numbers { self.input.yield(number) }
        try await self.reduced.wait("\(target) numbers reduced") { $0 == target }
    }
}

@Suite("Flow windows and triggers", .timeLimit(.minutes(1)))
struct FlowWindowTests {
    @Test("a count trigger that keeps the accumulator emits running totals, then the total")
    func countTriggerKeeps() async throws {
        let sums = try await Flow.from(1...10, stages: 1, maxDemand: 4)
            .reduce(into: 0, window: .global.trigger(.every(3))) { $0 += $1 }
            .collect()
        #expect(sums == [6, 21, 45, 55])
        // The total is not repeated when the last trigger fired on the last element.
        let exact = try await Flow.from(1...9, stages: 1).reduce(into: 0, window: .global.trigger(.every(3))) { $0 += $1 }.collect()
        #expect(exact == [6, 21, 45])
    }

    @Test("a count trigger that resets emits the sum of each group of events")
    func countTriggerResets() async throws {
        let sums = try await Flow.from(1...10, stages: 1, maxDemand: 2)
            .reduce(into: 0, window: .global.trigger(.every(3, .reset))) { $0 += $1 }
            .collect()
        #expect(sums == [6, 15, 24, 10])
    }

    @Test("with no input a global reduce emits its initial value once per stage")
    func emptyInput() async throws {
        let sums = try await Flow.from([Int](), stages: 2).reduce(into: 7) { $0 += $1 }.collect()
        #expect(sums == [7, 7])
    }

    @Test("an infinite source yields partial results through a trigger while it runs")
    func triggerOnAnInfiniteSource() async throws {
        let (stream, input) = AsyncStream.makeStream(of: Int.self)
        let results = Observed<[[Word: Int]]>([])
        let run = Task {
            try await Flow.from(stream, stages: 1, maxDemand: 10)
                .reduce(into: [Word: Int](), window: .global.trigger(.every(4, .reset))) { counts, number in
                    counts[Word("n\(number % 2)"), default: 0] += 1
                }
                .emit { batch in results.update { $0 += batch } }
        }
        for number in 0..<8 { input.yield(number) }
        let two = try await results.wait("two partial results") { $0.count == 2 }
        #expect(two == [[Word("n0"): 2, Word("n1"): 2], [Word("n0"): 2, Word("n1"): 2]])
        input.yield(1)
        // The source never ends: cancelling the caller stops every stage.
        run.cancel()
        await #expect(throws: (any Error).self) { try await run.value }
        #expect(results.value.count == 2)
    }

    @Test("fixed windows on a manual clock emit what each window reduced; empty windows emit nothing")
    func fixedWindows() async throws {
        let clock = ManualClock()
        let run = SummingRun(window: .fixed(every: .seconds(1), clock: clock))
        await clock.waitForSleepers(1)
        try await run.feed([1, 2, 3])
        clock.advance(by: .seconds(1))
        try await run.results.wait("the first window") { $0 == [6] }

        // A window in which nothing arrives emits nothing.
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(1))
        await clock.waitForSleepers(1)
        try await run.feed([4, 5])
        clock.advance(by: .seconds(1))
        try await run.results.wait("the third window") { $0 == [6, 9] }

        // The window in progress is emitted when the input ends.
        await clock.waitForSleepers(1)
        run.input.yield(10)
        run.input.finish()
        try await run.task.value
        #expect(run.results.value == [6, 9, 10])
    }

    @Test("a fixed window with a count trigger emits partial results inside each window")
    func fixedWindowWithTrigger() async throws {
        let clock = ManualClock()
        let run = SummingRun(window: .fixed(every: .seconds(5), clock: clock).trigger(.every(2)))
        await clock.waitForSleepers(1)
        try await run.feed([1, 2, 3])
        // The trigger fired after two numbers; the window's end emits all three.
        clock.advance(by: .seconds(5))
        try await run.results.wait("the first window") { $0 == [3, 6] }
        await clock.waitForSleepers(1)
        try await run.feed([10, 20])
        try await run.results.wait("the trigger in the second window") { $0 == [3, 6, 30] }
        run.input.finish()
        try await run.task.value
        // Nothing was reduced after the last trigger, so the end adds nothing.
        #expect(run.results.value == [3, 6, 30])
    }

    @Test("reduceByKey in fixed windows counts each window's keys on their own, over partitions")
    func keyedWindows() async throws {
        let clock = ManualClock()
        let (stream, input) = AsyncStream.makeStream(of: String.self)
        let reduced = Observed(0)
        let results = Observed<[String: Int]>([:])
        let windows = Observed(0)
        let run = Task {
            try await Flow.from(stream, stages: 1, maxDemand: 10)
                .partition(stages: 2) { $0 }
                .map { word in
                    reduced.increment()
                    return word
                }
                .reduceByKey(window: .fixed(every: .seconds(1), clock: clock), key: { $0 }, value: { _ in 1 }, +=)
                .emit { batch in
                    results.update { for pair in batch { $0["\(pair.key)@\(windows.value)", default: 0] += pair.value } }
                }
        }
        // One timer per partitioned stage.
        await clock.waitForSleepers(2)
        for word in ["a", "b", "a", "c", "a"] { input.yield(word) }
        try await reduced.wait("five words reduced") { $0 == 5 }
        clock.advance(by: .seconds(1))
        try await results.wait("the first window") { $0 == ["a@0": 3, "b@0": 1, "c@0": 1] }
        windows.increment()
        await clock.waitForSleepers(2)
        for word in ["b", "b"] { input.yield(word) }
        input.finish()
        try await run.value
        #expect(results.value == ["a@0": 3, "b@0": 1, "c@0": 1, "b@1": 2])
    }
}
