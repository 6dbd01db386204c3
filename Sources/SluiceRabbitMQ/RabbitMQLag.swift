//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import SluiceConnector

extension RabbitMQSource {
    /// How many messages the queue holds ready for delivery (not yet delivered to any
    /// consumer; delivered and unacknowledged ones do not count); asked from the broker while
    /// a pipeline runs the source.
    ///
    /// Each call is one passive `queue.declare` (its `declare-ok` carries the count), sent by
    /// the source's connection thread on the consumer's own connection between its reads: no
    /// second connection, and the caller's thread never blocks. Cheap enough to call once a
    /// second. The session started last answers when several pipelines run this value.
    ///
    /// The result is never `nil` (the broker always knows the count); the optional matches
    /// the other adapters' `lag()`.
    ///
    /// - Throws: ``RabbitMQError``: `shutDown` while no pipeline runs the source (before it
    ///   connected, or after it ended); `connectionLost` while the source reconnects;
    ///   `notFound` when the queue was deleted (the source then reconnects, as after any lost
    ///   channel).
    public func lag() async throws(RabbitMQError) -> Int? {
        let notRunning = RabbitMQError(.shutDown, "the RabbitMQ source is not running: its lag is known only while a pipeline runs it")
        return try await self.running.session(orThrow: notRunning).readyCount()
    }
}

extension RabbitMQSession {
    /// The queue's ready messages, counted on the connection's thread.
    func readyCount() async throws(RabbitMQError) -> Int {
        let result: Result<Int, RabbitMQError> = await withCheckedContinuation { continuation in
            let queued = self.loop.enqueue(.readyCount { continuation.resume(returning: $0) })
            if !queued { continuation.resume(returning: .failure(RabbitMQError(.shutDown, "the RabbitMQ source was shut down"))) }
        }
        return try result.get()
    }
}
