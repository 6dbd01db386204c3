//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// Runs `body` `repetitions` times (after one warm-up) and returns the median rate in
/// events per second; `body` returns how many events it moved.
func medianRate(repetitions: Int, _ body: () async throws -> Int) async rethrows -> Double {
    _ = try await body()
    var rates: [Double] = []
    for _ in 0..<repetitions {
        let clock = ContinuousClock()
        var moved = 0
        let elapsed = try await clock.measure { moved = try await body() }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        rates.append(Double(moved) / seconds)
    }
    rates.sort()
    return rates[rates.count / 2]
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
