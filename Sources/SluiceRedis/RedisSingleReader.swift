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
        do {
            let messages = try link.perform { context throws(RedisError) in
                try self.source.read(context, count: count, session: self.session)
            }
            self.session.completeRead(asked: count, messages: messages)
        } catch where error.code == .shutDown {
            // Stopping while waiting for the acknowledgement connection.
            self.session.completeRead(asked: count, messages: [])
            self.session.stopReading()
        } catch where error.isTransient {
            self.session.completeRead(asked: count, messages: [])
            self.source.connectionBroke()
            _ = link.backOff(after: error)
        } catch {
            self.session.completeRead(asked: count, messages: [])
            self.session.readFailed(error)
        }
        return .again
    }
}
