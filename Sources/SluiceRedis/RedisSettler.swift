//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Sluice
import Synchronization

/// Sends a source's settlements on its acknowledgement connection, in batches: what arrives
/// while a batch is sent goes in the next one.
final class RedisSettler: Sendable {
    private struct State {
        var pending: [Settlement<RedisMetadata>] = []
        var scheduled = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let mode: any RedisMode
    let acks: RedisConnection
    let logger: Logger
    /// Told how many items (and payload bytes) left the read window.
    private let released: @Sendable (_ count: Int, _ bytes: Int) -> Void
    private let state = Mutex(State())
    private let confirmed = Atomic<Int>(0)

    init(mode: any RedisMode, acks: RedisConnection, logger: Logger, released: @escaping @Sendable (Int, Int) -> Void) {
        self.mode = mode
        self.acks = acks
        self.logger = logger
        self.released = released
    }

    /// Items whose settle command Redis answered, on the first try or a retry (reliable
    /// mode: each of them is gone from the processing list, whatever the script reported; a
    /// retry after a lost reply finds nothing left to remove). Written only on the
    /// acknowledgement connection's thread.
    var settledItems: Int { self.confirmed.load(ordering: .relaxed) }

    /// Queues a settlement; never blocks.
    func settle(_ settlement: Settlement<RedisMetadata>) {
        guard !settlement.isEmpty else { return }
        if !self.mode.acknowledgementsNeedCommands {
            // The items left Redis when they were read: they are out of the window now.
            self.released(settlement.count, Self.bytes([settlement]))
            if settlement.failed.isEmpty { return }
        }
        let start = self.state.withLock { state -> Bool in
            state.pending.append(settlement)
            guard !state.scheduled else { return false }
            state.scheduled = true
            return true
        }
        guard start else { return }
        let queued = self.acks.enqueue { [self] link in self.sendPending(link) }
        if !queued {
            self.logger.info("settlement after shutdown ignored; Redis delivers those messages again")
            let waiters = self.state.withLock { state in
                state.scheduled = false
                defer { state.idleWaiters = [] }
                return state.idleWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// Waits until every queued settlement was sent.
    func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = self.state.withLock { state -> Bool in
                if !state.scheduled && state.pending.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    private static func bytes(_ settlements: [Settlement<RedisMetadata>]) -> Int {
        settlements.reduce(0) { total, settlement in
            total + settlement.acknowledged.reduce(0) { $0 + $1.payload.count } + settlement.failed.reduce(0) { $0 + $1.message.payload.count }
        }
    }

    private func sendPending(_ link: RedisLink) {
        while true {
            let (batch, waiters) = self.state.withLock { state -> ([Settlement<RedisMetadata>], [CheckedContinuation<Void, Never>]) in
                if state.pending.isEmpty {
                    state.scheduled = false
                    defer { state.idleWaiters = [] }
                    return ([], state.idleWaiters)
                }
                defer { state.pending = [] }
                return (state.pending, [])
            }
            if batch.isEmpty {
                for waiter in waiters { waiter.resume() }
                return
            }
            let releasedEarly = self.send(batch, link)
            if self.mode.acknowledgementsNeedCommands {
                // What was not released command by command (failed for good, or given up at
                // shutdown) leaves the window too, with all of the batch's bytes.
                self.released(batch.reduce(0) { $0 + $1.count } - releasedEarly, Self.bytes(batch))
            }
        }
    }

    /// Sends the commands that settle `batch`, retrying after transient failures; each
    /// command's messages leave the read window as soon as Redis answered it, so that reading
    /// goes on while a large batch is settled. Returns how many were released so.
    private func send(_ batch: [Settlement<RedisMetadata>], _ link: RedisLink) -> Int {
        let commands = self.mode.settleCommands(batch)
        // Whether each command's messages were released already (on an earlier attempt too).
        var answered = [Bool](repeating: false, count: commands.count)
        var releasedEarly = 0
        while true {
            // Items of settle scripts Redis answered in this attempt (reliable mode).
            var confirmed = 0
            defer { if confirmed > 0 { self.confirmed.add(confirmed, ordering: .relaxed) } }
            do {
                try link.perform { context throws(RedisError) in
                    try context.pipeline(commands) { index, _ throws(RedisError) in
                        let items = self.mode.settledItems(commands[index])
                        confirmed += items
                        if !answered[index] && items > 0 {
                            answered[index] = true
                            releasedEarly += items
                            self.released(items, 0)
                        }
                    }
                }
                return releasedEarly
            } catch where error.isTransient {
                // Replies of this attempt that did arrive are counted again on the retry.
                confirmed = 0
                if !link.backOff(after: error) {
                    self.logger.info(
                        "shut down with settlements not sent; Redis delivers those messages again",
                        metadata: [RedisLogKey.count: "\(batch.reduce(0) { $0 + $1.count })"]
                    )
                    return releasedEarly
                }
            } catch {
                self.logger.info("settling messages failed", metadata: [RedisLogKey.error: "\(error)"])
                return releasedEarly
            }
        }
    }
}
