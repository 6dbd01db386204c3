//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceConnector

/// The reads of a mode that sends one read at a time (reliable, stream).
protocol RedisBatchSource: AnyObject {
    /// Reads at most `count` items (blocking briefly when there are none).
    func read(_ context: HiredisContext, count: Int, session: RedisSession) throws(RedisError) -> [Message<RedisMetadata>]

    /// The connection broke: a read may have taken items whose reply was lost.
    func connectionBroke()
}

/// Runs a ``RedisBatchSource`` one read per service turn, with the session's read credit:
/// the read reserves what it asks for when it is sent and gives back what its reply did not
/// use (the convention of every reader).
final class RedisSingleReader: RedisModeReader {
    let session: RedisSession
    let source: any RedisBatchSource

    init(session: RedisSession, source: any RedisBatchSource) {
        self.session = session
        self.source = source
    }

    func step(_ link: RedisLink) -> ServiceOutcome {
        guard let count = self.session.reserveReads(slots: 1).first else { return self.session.readerIdle() }
        var messages: [Message<RedisMetadata>] = []
        var failure: RedisError?
        do {
            messages = try link.perform { context throws(RedisError) in
                try self.source.read(context, count: count, session: self.session)
            }
        } catch {
            failure = error
        }
        // The read is complete (its unused credit given back) before any failure is handled.
        self.session.completeRead(asked: count, messages: messages)
        if let failure {
            if failure.code == .shutDown {
                // Stopping while waiting for the acknowledgement connection.
                self.session.stopReading()
            } else if failure.isTransient {
                self.source.connectionBroke()
                _ = link.backOff(after: failure)
            } else {
                self.session.readFailed(failure)
            }
        }
        return .again
    }
}
