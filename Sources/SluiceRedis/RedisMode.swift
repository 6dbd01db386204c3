//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import SluiceConnector

/// What differs between a source's read modes: one type per mode (``RedisListMode``,
/// ``RedisReliableMode``, ``RedisStreamMode``), chosen once when the session is made.
protocol RedisMode: Sendable {
    /// The Redis type the key must hold (`list` or `stream`).
    var keyType: String { get }

    /// Whether acknowledged messages need a command (a popped list item is gone already).
    var acknowledgementsNeedCommands: Bool { get }

    /// At start, on the acknowledgement connection, once the key's type was checked.
    func prepare(_ context: HiredisContext) throws(RedisError)

    /// Starts the mode's periodic jobs on the acknowledgement connection.
    func startHousekeeping(on acks: RedisConnection, logger: Logger)

    /// The reader; used only on the read connection's thread.
    func makeReader(session: RedisSession) -> any RedisModeReader

    /// The commands that settle `settlements`, and what each takes out of the read window
    /// once Redis answered it. Called on the acknowledgement connection's thread, one batch
    /// at a time, in order.
    func settleWork(_ settlements: [Settlement<RedisMetadata>]) -> RedisSettleWork

    /// At shutdown, after reads ended and settlements were sent: gives back what was read and
    /// not finished (`unemitted`: batches read that never reached the stage).
    func finish(unemitted: [[Message<RedisMetadata>]], on acks: RedisConnection, logger: Logger) async
}

/// Items and their payload bytes that leave a source's read window.
struct RedisRelease: Sendable, Equatable {
    var count = 0
    var bytes = 0

    /// Adds one message (its bytes as read).
    mutating func add(_ message: Message<RedisMetadata>) {
        self.count += 1
        self.bytes += message.metadata.value.count
    }

    static func += (lhs: inout RedisRelease, rhs: RedisRelease) {
        lhs.count += rhs.count
        lhs.bytes += rhs.bytes
    }
}

/// What settling a batch of settlements takes (``RedisMode/settleWork(_:)``).
struct RedisSettleWork {
    /// The commands, sent in order (pipelined); every one may be sent again after a lost
    /// reply, so each must be idempotent.
    var commands: [RedisCommand] = []
    /// For each command, what leaves the read window once Redis answered it.
    var releases: [RedisRelease] = []
    /// What leaves the read window at once, with no command.
    var immediate = RedisRelease()

    mutating func append(_ command: RedisCommand, releasing release: RedisRelease = RedisRelease()) {
        self.commands.append(command)
        self.releases.append(release)
    }
}

/// The read side of a mode: one service turn of the read connection at a time.
protocol RedisModeReader: AnyObject {
    /// One turn: start reads the credit allows, handle a reply, or wait.
    func step(_ link: RedisLink) -> ServiceOutcome
}

extension RedisConfiguration {
    /// The strategy of ``mode``.
    func makeMode(keys: RedisKeys) -> any RedisMode {
        switch self.mode {
        case .list: return RedisListMode(configuration: self, keys: keys)
        case .stream: return RedisStreamMode(configuration: self, keys: keys)
        default: return RedisReliableMode(configuration: self, keys: keys)
        }
    }

    /// The block timeout in whole milliseconds (at least 1).
    var blockMilliseconds: Int { max(1, self.blockTimeout.inMilliseconds) }

    /// The block timeout as a command argument, in seconds.
    var blockSecondsText: String { "\(Double(self.blockMilliseconds) / 1000)" }
}
