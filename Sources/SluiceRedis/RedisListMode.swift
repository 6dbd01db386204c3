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

/// List mode (at most once): pipelined `LPOP key n`, `BLMPOP` while the list is empty; an
/// acknowledgement needs no command; failed items are pushed back or to the dead-letter list.
struct RedisListMode: RedisMode {
    /// How many pops may be in flight at once.
    static let pipelineDepth = 4

    let configuration: RedisConfiguration
    let keys: RedisKeys

    var keyType: String { "list" }
    var acknowledgementsNeedCommands: Bool { false }

    func prepare(_ context: HiredisContext) throws(RedisError) {}

    func startHousekeeping(on acks: RedisConnection, logger: Logger) {}

    func makeReader(session: RedisSession) -> any RedisModeReader {
        Reader(session: session, popper: RedisListPopper(keys: self.keys, blockSeconds: self.configuration.blockSecondsText))
    }

    /// Acknowledged items are already gone; failed ones are pushed back or to the dead-letter
    /// list. Nothing is released here: list items left the window when they were settled (see
    /// ``acknowledgementsNeedCommands``).
    func settleWork(_ settlements: [Settlement<RedisMetadata>]) -> RedisSettleWork {
        var requeue = RedisCommand("RPUSH")
        requeue.append(self.keys.source)
        var dead = RedisCommand("RPUSH")
        dead.append(self.keys.dead)
        for settlement in settlements {
            for (message, disposition) in settlement.failed {
                if disposition == .requeue {
                    requeue.append(message.metadata.value)
                } else if disposition == .deadLetter {
                    dead.append(message.metadata.value)
                }
            }
        }
        var work = RedisSettleWork()
        for command in [requeue, dead] where command.argumentCount > 2 { work.append(command) }
        return work
    }

    /// Pushes batches that were popped but never reached the stage (it ended before taking
    /// them) back to the head of the list, in their order.
    func finish(unemitted: [[Message<RedisMetadata>]], on acks: RedisConnection, logger: Logger) async {
        guard !unemitted.isEmpty else { return }
        let values = unemitted.flatMap { $0.map(\.metadata.value) }
        var commands: [RedisCommand] = []
        // LPUSH puts its last argument at the head: push from the end, in chunks, so that the
        // first popped item ends up first again.
        var end = values.count
        while end > 0 {
            let start = max(0, end - 1000)
            var push = RedisCommand("LPUSH")
            push.append(self.keys.source)
            for value in values[start..<end].reversed() { push.append(value) }
            commands.append(push)
            end = start
        }
        let pushed = commands
        do {
            try await acks.run { link throws(RedisError) in
                try link.perform { context throws(RedisError) in
                    try context.pipeline(pushed) { _, _ throws(RedisError) in }
                }
            }
            logger.debug("pushed items that were popped but not emitted back to the list", metadata: [RedisLogKey.count: "\(values.count)"])
        } catch {
            logger.error(
                "could not push popped items back to the list; they are lost",
                metadata: [RedisLogKey.count: "\(values.count)", RedisLogKey.error: "\(error)"]
            )
        }
    }

    /// Keeps up to ``RedisListMode/pipelineDepth`` pops in flight, so that Redis pops the next
    /// batch while this thread turns the last reply into messages. Each pop reserves its
    /// credit when it is sent and gives back what its reply did not use, so the pops in
    /// flight together never take more than the pending demand. While the list is empty, one
    /// blocking `BLMPOP` waits for it.
    ///
    /// Replies of pops sent before a drain or stop are still read and their items put in the
    /// outbox: the stage emits them, or the session's shutdown pushes them back.
    final class Reader: RedisModeReader {
        let session: RedisSession
        let popper: RedisListPopper
        /// The pops sent and not answered yet, oldest first.
        private var inFlight: [(count: Int, blocking: Bool)] = []
        /// Whether the last reply found the list empty (or ran it empty).
        private var empty = false

        init(session: RedisSession, popper: RedisListPopper) {
            self.session = session
            self.popper = popper
            self.inFlight.reserveCapacity(RedisListMode.pipelineDepth)
        }

        func step(_ link: RedisLink) -> ServiceOutcome {
            let slots = self.empty ? (self.inFlight.isEmpty ? 1 : 0) : RedisListMode.pipelineDepth - self.inFlight.count
            var sends = self.session.reserveReads(slots: slots)
            guard !self.inFlight.isEmpty || !sends.isEmpty else { return self.session.readerIdle() }
            if self.empty && !sends.isEmpty && !self.session.beginBlocking() {
                // Draining: no blocking pop now; the credit comes back.
                for count in sends { self.session.completeRead(asked: count, messages: []) }
                sends = []
                if self.inFlight.isEmpty { return .again }
            }
            do {
                let (messages, asked) = try link.perform { context throws(RedisError) -> ([Message<RedisMetadata>], Int) in
                    if !sends.isEmpty {
                        let blocking = self.empty
                        for count in sends {
                            // Counted before sending: if the send fails, the credit comes back.
                            self.inFlight.append((count, blocking))
                            try context.append(self.popper.pop(count, blocking: blocking))
                        }
                        try context.flush("LPOP")
                    }
                    let oldest = self.inFlight[0]
                    let messages = try context.nextReply("LPOP") { reply in self.popper.messages(reply) }
                    if oldest.blocking { self.session.endBlocking() }
                    self.inFlight.removeFirst()
                    return (messages, oldest.count)
                }
                self.empty = messages.count < asked
                self.session.completeRead(asked: asked, messages: messages)
                return .again
            } catch {
                // The replies of the pops in flight are lost with the connection (list mode is at
                // most once); their credit comes back.
                for pop in self.inFlight { self.session.completeRead(asked: pop.count, messages: []) }
                if self.inFlight.contains(where: \.blocking) { self.session.endBlocking() }
                self.inFlight.removeAll()
                self.empty = false
                link.disconnect()
                if error.isTransient {
                    _ = link.backOff(after: error)
                    return .again
                }
                self.session.readFailed(error)
                return .again
            }
        }
    }
}
