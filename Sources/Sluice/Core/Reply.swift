//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// A one-shot answer to a request sent to a stage, answered at most once.
///
/// A caller of ``StageHandle/call(_:)`` waits until the stage answers through the reply it
/// found in its message. If the stage ends, or drops the message without answering, the
/// caller receives ``SluiceError/Code-swift.struct/stageEnded`` instead of waiting forever.
public final class Reply<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

    @usableFromInline
    init(_ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = Mutex(continuation)
    }

    deinit {
        self.fail(SluiceError(.stageEnded, "the stage ended or dropped the request without answering"))
    }

    /// Answers with `value`. Later answers are ignored.
    public func succeed(_ value: Value) {
        self.continuation.withLock { $0.take() }?.resume(returning: value)
    }

    /// Answers with `error`. Later answers are ignored.
    public func fail(_ error: any Error) {
        self.continuation.withLock { $0.take() }?.resume(throwing: error)
    }

    /// Sends a request carrying a new reply through `send` and waits for the answer.
    @usableFromInline
    static func awaiting(_ send: (Reply<Value>) -> Void) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            send(Reply(continuation))
        }
    }
}

extension Reply where Value == Void {
    /// Answers a request that returns nothing.
    public func succeed() { self.succeed(()) }
}
