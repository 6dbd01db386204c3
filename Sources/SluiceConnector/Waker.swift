//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A self-pipe: a thread waits in `poll` on its read end (and optionally a broker socket)
/// until another thread writes a byte, a socket turns readable, or a deadline passes.
///
/// `@unchecked Sendable`: the file descriptors never change after `init`; `signal()` may be
/// called from any thread, `wait` only from the owning loop's thread.
final class Waker: @unchecked Sendable {
    private let readEnd: Int32
    private let writeEnd: Int32

    init() {
        var ends: [Int32] = [-1, -1]
        let status = ends.withUnsafeMutableBufferPointer { pipe($0.baseAddress!) }
        precondition(status == 0, "cannot create the wake-up pipe of a connection loop (errno \(errno))")
        self.readEnd = ends[0]
        self.writeEnd = ends[1]
        for fd in ends {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
    }

    deinit {
        close(self.readEnd)
        close(self.writeEnd)
    }

    /// Wakes the waiting thread (or makes its next wait return at once).
    func signal() {
        var byte: UInt8 = 1
        _ = write(self.writeEnd, &byte, 1)
    }

    /// Waits until signalled, `socket` (if any) is readable, or `timeout` (`nil`: no limit)
    /// passed. Consumes the signals. Returns whether `socket` is readable.
    @discardableResult
    func wait(socket: Int32?, timeout: Duration?) -> Bool {
        var fds = [pollfd(fd: self.readEnd, events: Int16(POLLIN), revents: 0)]
        if let socket { fds.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        let milliseconds: Int32
        if let timeout {
            // Rounded up, so that a wait never ends before its deadline.
            let (seconds, attoseconds) = timeout.components
            let total = max(0, seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            milliseconds = Int32(clamping: total)
        } else {
            milliseconds = -1
        }
        let ready = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress!, nfds_t($0.count), milliseconds) }
        if ready > 0 && fds[0].revents != 0 { self.drainSignals() }
        return ready > 0 && fds.count > 1 && fds[1].revents != 0
    }

    private func drainSignals() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while buffer.withUnsafeMutableBytes({ read(self.readEnd, $0.baseAddress!, $0.count) }) > 0 {}
    }
}
