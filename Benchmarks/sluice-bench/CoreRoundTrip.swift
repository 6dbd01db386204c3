//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import Synchronization

/// How long one cache line takes to go from processor 0 to processor 1 and back, measured by
/// two threads pinned to them that pass a counter back and forth.
///
/// On a virtual machine this is not a constant: the host places the guest's processors on
/// cores that share a cache, or not, and moves them while the guest runs. On the 2-processor
/// machines here it moves between about 60, 90 and 330 ns from one second to the next, and
/// figures that hand small pieces of work between processors follow it (the A→B→C row at
/// `maxDemand` 1 can halve at 330 ns, for the Sluice executor, the global executor and
/// AsyncStream alike).
/// The engine suite prints it before and after each row so a reader can tell the two apart.
enum CoreRoundTrip {
    /// The mean round trip of the fastest of 40 blocks of 1 000 round trips (60 to 350 µs a
    /// block), in nanoseconds; `nil` on a machine with one processor or where threads cannot be
    /// pinned.
    ///
    /// The fastest block, not the mean of all: a probe thread that loses its processor for a
    /// few milliseconds (to the engine suite's own background load, for one) slows the blocks
    /// it falls in, while where the host placed the processors changes over seconds.
    static func measure() async -> Int? {
        guard StageExecutor.defaultThreadCount >= 2 else { return nil }
        return await Self.probe(blocks: 40, roundTripsPerBlock: 1_000)
    }

    /// `"61 ns"`, or `"n/a"` when the probe cannot run here.
    static func describe(_ nanoseconds: Int?) -> String {
        nanoseconds.map { "\($0) ns" } ?? "n/a"
    }

    private final class Shared: Sendable {
        let counter = Atomic<Int>(0)
        let pinned = Atomic<Bool>(false)
        let failed = Atomic<Bool>(false)
        let roundTrips: Int
        init(roundTrips: Int) { self.roundTrips = roundTrips }
    }

    /// The probe, on two threads of its own (the caller's task only waits for the answer).
    private static func probe(blocks: Int, roundTripsPerBlock: Int) async -> Int? {
        let shared = Shared(roundTrips: blocks * roundTripsPerBlock)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Int?, Never>) in
            let answer = Thread {
                guard Self.pin(to: 1) else {
                    shared.failed.store(true, ordering: .releasing)
                    return
                }
                shared.pinned.store(true, ordering: .releasing)
                for index in 0..<shared.roundTrips {
                    while shared.counter.load(ordering: .acquiring) != 2 * index + 1 {
                        if shared.failed.load(ordering: .relaxed) { return }
                    }
                    shared.counter.store(2 * index + 2, ordering: .releasing)
                }
            }
            let ask = Thread {
                guard Self.pin(to: 0) else {
                    shared.failed.store(true, ordering: .releasing)
                    continuation.resume(returning: nil)
                    return
                }
                while !shared.pinned.load(ordering: .acquiring) {
                    if shared.failed.load(ordering: .acquiring) {
                        continuation.resume(returning: nil)
                        return
                    }
                }
                let clock = ContinuousClock()
                var fastest = Duration.seconds(1_000)
                for block in 0..<blocks {
                    let start = clock.now
                    for index in block * roundTripsPerBlock..<(block + 1) * roundTripsPerBlock {
                        shared.counter.store(2 * index + 1, ordering: .releasing)
                        while shared.counter.load(ordering: .acquiring) != 2 * index + 2 {}
                    }
                    fastest = min(fastest, clock.now - start)
                }
                continuation.resume(returning: Int(fastest.inSeconds * 1e9 / Double(roundTripsPerBlock)))
            }
            answer.start()
            ask.start()
        }
    }

    /// Pins the calling thread to processor `cpu` with `sched_setaffinity` (found at run time:
    /// Glibc's module does not export the GNU scheduling calls).
    private static func pin(to cpu: Int) -> Bool {
        typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else { return false }
        let setAffinity = unsafeBitCast(symbol, to: SetAffinity.self)
        // A 1024-processor mask, the size of glibc's `cpu_set_t`.
        var mask = [UInt](repeating: 0, count: 1024 / UInt.bitWidth)
        guard cpu / UInt.bitWidth < mask.count else { return false }
        mask[cpu / UInt.bitWidth] |= 1 << UInt(cpu % UInt.bitWidth)
        // Thread 0: the calling thread.
        return mask.withUnsafeBytes { setAffinity(0, $0.count, $0.baseAddress!) } == 0
    }
}
