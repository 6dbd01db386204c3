//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice

/// An operation ran longer than its time limit.
public struct TimeLimitExceeded: Error, Hashable, Sendable, CustomStringConvertible {
    /// The limit that passed.
    public let limit: Duration

    /// Creates the error.
    public init(limit: Duration) { self.limit = limit }

    public var description: String { "time limit of \(self.limit) exceeded" }
}

/// Runs `operation`, throwing ``TimeLimitExceeded`` if it has not finished within `limit`
/// (the operation is then cancelled), so a bug cannot hang a test run.
public func withTimeLimit<R: Sendable>(
    _ limit: Duration,
    _ operation: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let result = first else { throw TimeLimitExceeded(limit: limit) }
        return result
    }
}

/// Runs `body` while `pipeline` runs in a child task, then drains the pipeline and waits until
/// it ended; the whole run is bounded by `timeLimit`.
///
/// ```swift
/// try await withRunningPipeline(pipeline) {
///     #expect(await source.testMessage("hello") == .acknowledged)
/// }
/// ```
///
/// - Throws: ``TimeLimitExceeded``, the pipeline's error, or `body`'s.
public func withRunningPipeline<Source: PipelineSource, R: Sendable>(
    _ pipeline: Pipeline<Source>,
    timeLimit: Duration = .seconds(30),
    _ body: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withTimeLimit(timeLimit) {
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
}
