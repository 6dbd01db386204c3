//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Synchronization

/// The inbox of one stage: a lock, a queue and at most one waiting receiver.
///
/// Sending never blocks and never awaits. The receiver takes everything queued at once, so a
/// busy stage pays one lock round-trip per burst of mail, not per message. The mailbox is
/// unbounded by design: the demand protocol is what bounds how much mail a stage can receive.
@usableFromInline
final class Mailbox<Mail: Sendable>: Sendable {
    @usableFromInline
    struct State: ~Copyable {
        @usableFromInline
        /// In arrival order. An array, not a deque: `Array.append` moves the mail in, where the
        /// deque's append copies it (a retain and a release of the batch per send).
        var queue: [Mail] = []
        @usableFromInline
        var receiver: UnsafeContinuation<Void, Never>?
        @usableFromInline
        var closed = false
    }

    @usableFromInline
    let state = Mutex(State())

    @usableFromInline
    static var pollsBeforeSuspending: Int { 1 }

    @inlinable
    init() {}

    /// Appends `mail`. Returns `false` (and drops nothing but this copy) if the mailbox is
    /// closed because its stage ended.
    @discardableResult
    @inlinable
    func send(_ mail: consuming Mail) -> Bool {
        // Moved into the queue, so the receiver holds the only reference to a batch it gets and
        // can change it in place.
        var mail: Mail? = consume mail
        let (accepted, receiver) = self.state.withLock { state -> (Bool, UnsafeContinuation<Void, Never>?) in
            if state.closed { return (false, nil) }
            state.queue.append(mail.take()!)
            let receiver = state.receiver
            state.receiver = nil
            return (true, receiver)
        }
        // Resume outside the lock: the receiver may run immediately on another thread.
        receiver?.resume()
        return accepted
    }

    /// Moves all queued mail into `buffer` (which must be empty), suspending until there is some.
    @inlinable
    func receive(into buffer: inout [Mail]) async {
        while true {
            // Mail usually follows within microseconds (the peer is handling the batch that
            // will produce it): polling briefly is far cheaper than parking the thread and
            // having the sender wake it.
            for _ in 0..<Self.pollsBeforeSuspending {
                let took = self.state.withLock { state -> Bool in
                    if state.queue.isEmpty { return state.closed }
                    swap(&state.queue, &buffer)
                    return true
                }
                if took { return }
            }
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if !state.queue.isEmpty || state.closed { return true }
                    precondition(state.receiver == nil, "a mailbox has a single receiver")
                    state.receiver = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// Closes the mailbox and returns what was still queued. Later sends return `false`.
    @inlinable
    func close() -> [Mail] {
        let (rest, receiver) = self.state.withLock { state -> ([Mail], UnsafeContinuation<Void, Never>?) in
            state.closed = true
            var rest: [Mail] = []
            swap(&rest, &state.queue)
            let receiver = state.receiver
            state.receiver = nil
            return (rest, receiver)
        }
        receiver?.resume()
        return rest
    }
}
