//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Synchronization

/// Runs `body` `repetitions` times (after one warm-up) and returns the median rate in
/// events per second; `body` returns how many events it moved.
func medianRate(repetitions: Int, _ body: () async throws -> Int) async rethrows -> Double {
    _ = try await body()
    var rates: [Double] = []
    for _ in 0..<repetitions {
        rates.append(try await rate(of: body))
    }
    return median(rates)
}

/// Runs each of `bodies` once per round, `repetitions` rounds (after one warm-up round), and
/// returns each one's median rate: interleaved, so the noise of a shared machine falls on all
/// sides alike instead of on whichever ran during a busy second.
func interleavedMedianRates(repetitions: Int, _ bodies: [() async -> Int]) async -> [Double] {
    for body in bodies { _ = await body() }
    var rates = [[Double]](repeating: [], count: bodies.count)
    for _ in 0..<repetitions {
        for (index, body) in bodies.enumerated() {
            rates[index].append(await rate(of: body))
        }
    }
    return rates.map(median)
}

/// Events per second of one run of `body`, which returns how many events it moved.
private func rate(of body: () async throws -> Int) async rethrows -> Double {
    let clock = ContinuousClock()
    var moved = 0
    let elapsed = try await clock.measure { moved = try await body() }
    return Double(moved) / elapsed.inSeconds
}

extension Duration {
    /// The duration in seconds.
    var inSeconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}

private func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

func formatRate(_ rate: Double) -> String {
    if rate >= 1e9 { return String(format: "%.2f G/s", rate / 1e9) }
    if rate >= 1e6 { return String(format: "%.1f M/s", rate / 1e6) }
    if rate >= 1e3 { return String(format: "%.1f k/s", rate / 1e3) }
    return String(format: "%.0f /s", rate)
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// CPU time (user + system) this process used so far.
func processCPUTime() -> Duration {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func duration(_ time: timeval) -> Duration { .seconds(Int64(time.tv_sec)) + .microseconds(Int64(time.tv_usec)) }
    return duration(usage.ru_utime) + duration(usage.ru_stime)
}

/// Turns a `perf record --control fifo:…` session on or off, when the environment names its
/// control FIFO in `SLUICE_PERF_CTL` (start perf with `-D -1`), so a profile covers only
/// timed regions and not the set-up between them.
func profilerControl(enable: Bool) {
    guard let path = ProcessInfo.processInfo.environment["SLUICE_PERF_CTL"] else { return }
    guard let handle = FileHandle(forWritingAtPath: path) else { return }
    handle.write(Data((enable ? "enable\n" : "disable\n").utf8))
    try? handle.close()
}

/// A background load the bench starts itself: one thread (pinned to nothing) that is busy
/// for `busy` and then asleep for `idle`, over and over, until stopped. The default, 3 ms of
/// every 9 ms, keeps about a third of one core busy, like a broker or a server beside Sluice.
final class BackgroundLoad: Sendable {
    private let stopped = Atomic<Bool>(false)

    init(busy: Duration = .milliseconds(3), idle: Duration = .milliseconds(6)) {
        let thread = Thread { [self] in
            let clock = ContinuousClock()
            let micros = idle.components.seconds * 1_000_000 + idle.components.attoseconds / 1_000_000_000_000
            while !self.stopped.load(ordering: .relaxed) {
                let deadline = clock.now.advanced(by: busy)
                while clock.now < deadline {}
                usleep(useconds_t(micros))
            }
        }
        thread.start()
    }

    /// Stops the load; its thread ends after its current period (at most `busy + idle`).
    func stop() {
        self.stopped.store(true, ordering: .relaxed)
    }
}

/// Runs a broker suite: reads the broker's address from `variable` (set by
/// `scripts/brokers env`) and hands it to `measure`; a missing variable or a failed run ends
/// the process with status 1 and one line saying why.
func runBrokerSuite(_ suite: String, variable: String, _ measure: (String) async throws -> Void) async {
    guard let address = ProcessInfo.processInfo.environment[variable], !address.isEmpty else {
        print("suite \(suite): \(variable) is not set; run `scripts/brokers up` and `eval \"$(scripts/brokers env)\"` first")
        exit(1)
    }
    do {
        try await measure(address)
    } catch {
        print("suite \(suite) failed: \(error)")
        exit(1)
    }
}
