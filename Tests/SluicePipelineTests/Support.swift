//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
import Synchronization
import Testing

/// Runs `body` with `pipeline` running in a child task; returns the pipeline's result.
///
/// The whole run is bounded by `seconds`, so a bug cannot hang the test suite.
func withRunningPipeline<Source: PipelineSource, R: Sendable>(
    _ pipeline: Pipeline<Source>,
    seconds: Int = 20,
    _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withTimeout(seconds: seconds) { try await runPipeline(pipeline, body) }
}

private func runPipeline<Source: PipelineSource, R: Sendable>(
    _ pipeline: Pipeline<Source>,
    _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask {
            try await pipeline.run()
            return nil
        }
        let result = try await body()
        pipeline.drain()
        while let next = try await group.next() {
            if next == nil { break }
        }
        return result
    }
}

/// Fails the test if `operation` takes longer than `seconds`.
func withTimeout<R: Sendable>(
    seconds: Int = 20,
    _ operation: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let result = first else {
            Issue.record("timed out after \(seconds) s")
            throw TimedOut()
        }
        return result
    }
}

struct TimedOut: Error {}

struct Boom: Error, Equatable {
    var id = 0
}

/// A thread-safe recorder for handler observations.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { self.values.withLock { $0.append(value) } }
    var all: [Value] { self.values.withLock { $0 } }
    var count: Int { self.values.withLock { $0.count } }
}

func payloads(_ count: Int, prefix: String = "m") -> [[UInt8]] {
    (0..<count).map { Array("\(prefix)\($0)".utf8) }
}
