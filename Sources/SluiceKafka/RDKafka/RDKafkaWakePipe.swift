//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

#if canImport(Glibc)
import Glibc
#endif

/// A non-blocking pipe librdkafka writes to when a queue turns non-empty
/// (`rd_kafka_queue_io_event_enable`); its owner's connection loop waits on the read end.
struct RDKafkaWakePipe {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var ends: [Int32] = [-1, -1]
        let status = ends.withUnsafeMutableBufferPointer { pipe($0.baseAddress!) }
        precondition(status == 0, "cannot create the wake-up pipe of a Kafka client (errno \(errno))")
        for fd in ends {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        self.readEnd = ends[0]
        self.writeEnd = ends[1]
    }

    /// Reads every pending byte.
    func drain() {
        var bytes = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &bytes, { Glibc.read(self.readEnd, $0.baseAddress, $0.count) }) > 0 {}
    }

    /// Closes both ends (once nothing writes any more).
    func close() {
        Glibc.close(self.readEnd)
        Glibc.close(self.writeEnd)
    }
}
