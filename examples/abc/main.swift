//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The GenStage announcement's first example: A counts up from 0, B multiplies by 2, C prints
// and sleeps. Demand keeps A from ever getting ahead of the sleeping consumers.
//
//   swift run ExampleABC                 # one C, prints for ~3 seconds
//   swift run ExampleABC --consumers 4   # four C's share B's output
//   swift run ExampleABC --seconds 10 --sleep-ms 1000

import Foundation
import Sluice

/// A: emits as many increasing numbers as were asked for.
struct A: Producer {
    var counter: Int

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Int>) {
        context.emit(Array(self.counter..<(self.counter + demand)))
        self.counter += demand
    }
}

/// B: multiplies every number by a factor.
struct B: ProducerConsumer {
    typealias Input = Int
    typealias Output = Int
    let factor: Int

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Int>) {
        context.emit(events.map { $0 * self.factor })
    }
}

/// C: prints what it gets, then sleeps.
struct C: Consumer {
    typealias Input = Int
    let label: String
    let sleep: Duration

    mutating func handleEvents(_ events: [Int], from subscription: SubscriptionID, context: inout StageContext<Never>) async throws {
        print("\(self.label): \(events)")
        try await Task.sleep(for: self.sleep)
    }
}

func option(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count, let parsed = Int(arguments[index + 1]) else {
        return value
    }
    return parsed
}

let consumers = option("--consumers", default: 1)
let seconds = option("--seconds", default: 3)
let sleepMilliseconds = option("--sleep-ms", default: 1000)

// Small demand so the printed batches stay readable.
let demand = SubscriptionOptions<Int>(maxDemand: 10, minDemand: 5)
let a = try await StageHandle.start(A(counter: 0), options: .init(name: "A"))
let b = try await StageHandle.start(B(factor: 2), options: .init(name: "B"), subscribeTo: [.init(a, options: demand)])
var cs: [StageHandle<C>] = []
for index in 1...max(1, consumers) {
    let c = try await StageHandle.start(
        C(label: "C\(index)", sleep: .milliseconds(sleepMilliseconds)),
        options: .init(name: "C\(index)"),
        subscribeTo: [.init(b, options: demand)]
    )
    cs.append(c)
}

try await Task.sleep(for: .seconds(seconds))
// Stopping A ends B and every C too: their subscriptions are permanent.
await a.stop(.normal)
for c in cs { _ = await c.waitForTermination() }
print("done")
