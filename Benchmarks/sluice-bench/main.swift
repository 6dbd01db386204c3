//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice

// sluice-bench: side-by-side benchmarks. Build and run in release:
//   swift run -c release sluice-bench [suite ...] [--quick]
// Each suite prints a table and a last line `RESULT <suite> key=value ...`.

let arguments = CommandLine.arguments.dropFirst()
let quick = arguments.contains("--quick")
let suites = arguments.filter { !$0.hasPrefix("--") }
let selected = suites.isEmpty ? ["engine"] : suites

for suite in selected {
    switch suite {
    case "engine":
        await EngineSuite(quick: quick).run()
    case "pipeline":
        await PipelineSuite(quick: quick).run()
    case "profile-fanout":
        // Only the Sluice 1 → 4 fan-out at maxDemand 1000, for profilers.
        let rate = await medianRate(repetitions: 3) { await EngineSuite(quick: true).sluiceFanOut(consumers: 4, total: 40_000_000) }
        print("A→4×C maxDemand 1000: \(formatRate(rate))")
    case "profile-abc":
        // Only the Sluice A→B→C run at maxDemand 1000 (or `SLUICE_MAX_DEMAND`), for profilers.
        let maxDemand = ProcessInfo.processInfo.environment["SLUICE_MAX_DEMAND"].flatMap { Int($0) } ?? 1000
        let rate = await medianRate(repetitions: 3) { await EngineSuite(quick: true).sluiceABC(maxDemand: maxDemand, total: 20_000_000) }
        print("A→B→C maxDemand \(maxDemand): \(formatRate(rate))")
    case "profile-abc1":
        // Only the Sluice A→B→C run at maxDemand 1, for profilers.
        let rate = await medianRate(repetitions: 3) { await EngineSuite(quick: true).sluiceABC(maxDemand: 1, total: 200_000) }
        print("A→B→C maxDemand 1: \(formatRate(rate))")
    case "profile-pipeline":
        // Only the sync-handler pipeline at maxDemand 1000, for profilers.
        await PipelineSuite(quick: true).profile()
    case "engine-row":
        // One A→B→C row (maxDemand from `SLUICE_MAX_DEMAND`, default 1000), for studying it.
        let maxDemand = ProcessInfo.processInfo.environment["SLUICE_MAX_DEMAND"].flatMap { Int($0) } ?? 1000
        await EngineSuite(quick: quick).studyRow(maxDemand: maxDemand)
    case "redis": await RedisSuite(quick: quick).run()
    case "wordcount": await WordCountSuite(quick: quick).run()
    case "rabbitmq": await RabbitMQSuite(quick: quick).run()
    case "kafka": await KafkaSuite(quick: quick).run()
    default:
        print("unknown suite \(suite); known: engine, pipeline, redis, rabbitmq, kafka, wordcount")
        exit(2)
    }
}
