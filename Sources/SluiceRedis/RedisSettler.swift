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

    init(mode: any RedisMode, acks: RedisConnection, logger: Logger, released: @escaping @Sendable (Int, Int) -> Void) {
        self.mode = mode
        self.acks = acks
        self.logger = logger
        self.released = released
    }

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
            total + settlement.acknowledged.reduce(0) { $0 + $1.metadata.value.count } + settlement.failed.reduce(0) { $0 + $1.message.metadata.value.count }
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
            let work = self.mode.settleWork(batch)
            if work.immediate.count > 0 || work.immediate.bytes > 0 { self.released(work.immediate.count, work.immediate.bytes) }
            self.send(work, count: batch.reduce(0) { $0 + $1.count }, link)
        }
    }

    /// Sends the commands of `work`, retrying after transient failures (every command is
    /// idempotent); each command's messages leave the read window as soon as Redis answered
    /// it, so that reading goes on while a large batch is settled. What was not answered when
    /// sending gives up (failed for good, or shut down) leaves the window too: Redis delivers
    /// it again.
    private func send(_ work: RedisSettleWork, count: Int, _ link: RedisLink) {
        guard !work.commands.isEmpty else { return }
        // Whether each command's messages were released already (on an earlier attempt too).
        var answered = [Bool](repeating: false, count: work.commands.count)
        func release(_ index: Int) {
            guard !answered[index] else { return }
            answered[index] = true
            let release = work.releases[index]
            if release.count > 0 || release.bytes > 0 { self.released(release.count, release.bytes) }
        }
        defer { for index in answered.indices { release(index) } }
        while true {
            do {
                try link.perform { context throws(RedisError) in
                    try context.pipeline(work.commands) { index, _ throws(RedisError) in release(index) }
                }
                return
            } catch where error.isTransient {
                if !link.backOff(after: error) {
                    self.logger.info(
                        "shut down with settlements not sent; Redis delivers those messages again",
                        metadata: [RedisLogKey.count: "\(count)"]
                    )
                    return
                }
            } catch {
                self.logger.info("settling messages failed", metadata: [RedisLogKey.error: "\(error)"])
                return
            }
        }
    }
}
