//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice

/// The seed's word count over a generated file in the page cache: Flow with 1 and 2 stages per
/// phase, and a plain single-threaded loop doing the same per-word work with a dictionary.
struct WordCountSuite {
    let quick: Bool

    func run() async {
        let megabytes = self.quick ? 25 : 100
        let repetitions = self.quick ? 3 : 5
        let path = NSTemporaryDirectory() + "sluice-bench-wordcount-\(getpid()).txt"
        defer { unlink(path) }
        let text = try! ZipfCorpus().text(bytes: megabytes * 1_000_000)
        guard FileManager.default.createFile(atPath: path, contents: Data(text)) else {
            print("cannot write \(path)")
            exit(1)
        }
        let bytes = text.count
        print("suite wordcount: \(megabytes) MB file in the page cache, 10 000-word Zipf vocabulary, ~12 words a line")
        print("(median of \(repetitions) interleaved runs)")

        // Every way must count the same words before any is timed.
        let expected = Self.plainCount(path: path)
        for stages in [1, 2] {
            let counts = try! await Self.flowCount(path: path, stages: stages)
            guard counts == expected else {
                print("Flow with \(stages) stage(s) counted differently from the plain loop")
                exit(1)
            }
        }
        let runs: [(name: String, body: () async -> Void)] = [
            ("Flow, 1 stage per phase", { _ = try! await Self.flowCount(path: path, stages: 1) }),
            ("Flow, 2 stages per phase", { _ = try! await Self.flowCount(path: path, stages: 2) }),
            ("plain single-threaded loop, [Word: Int]", { _ = Self.plainCount(path: path) }),
        ]
        // Interleaved (one of each per round, after a warm-up round), so that the load of a
        // shared machine falls on every row alike; the CPU time shows how much of the machine
        // each row had.
        var seconds = [[Double]](repeating: [], count: runs.count)
        var cpu = [[Double]](repeating: [], count: runs.count)
        for round in 0...repetitions {
            for (index, run) in runs.enumerated() {
                let clock = ContinuousClock()
                let cpuBefore = processCPUTime()
                let elapsed = await clock.measure { await run.body() }
                let cpuUsed = processCPUTime() - cpuBefore
                if round > 0 {
                    seconds[index].append(elapsed.inSeconds)
                    cpu[index].append(cpuUsed.inSeconds)
                }
            }
        }
        print(pad("configuration", 44) + pad("MB/s", 10) + pad("cores busy", 12) + "CPU ns/byte")
        var rates: [Double] = []
        for (index, run) in runs.enumerated() {
            let order = seconds[index].indices.sorted { seconds[index][$0] < seconds[index][$1] }
            let median = order[order.count / 2]
            let rate = Double(bytes) / seconds[index][median] / 1e6
            rates.append(rate)
            print(
                pad(run.name, 44) + pad(String(format: "%.1f", rate), 10)
                    + pad(String(format: "%.2f", cpu[index][median] / seconds[index][median]), 12)
                    + String(format: "%.2f", cpu[index][median] / Double(bytes) * 1e9)
            )
        }
        let flow1 = rates[0]
        let flow2 = rates[1]
        let plain = rates[2]
        print(String(format: "RESULT wordcount mb_per_s=%.1f speedup_2=%.2f vs_plain=%.2f", flow2, flow2 / flow1, flow2 / plain))
    }

    /// The word count as `sluice wordcount` runs it.
    static func flowCount(path: String, stages: Int) async throws -> [Word: Int] {
        let pairs = try await Flow.lines(ofFile: path, stages: stages).words().frequencies(stages: stages).collect()
        return Dictionary(uniqueKeysWithValues: pairs.map { ($0.key, $0.value) })
    }

    /// The baseline: POSIX reads of the same size into one buffer, each word counted in a
    /// dictionary on this thread; a word cut by the end of a read is carried to the next.
    static func plainCount(path: String) -> [Word: Int] {
        let chunkSize = FileChunks.defaultChunkSize
        let descriptor = open(path, O_RDONLY)
        precondition(descriptor >= 0, "cannot open \(path)")
        defer { close(descriptor) }
        var counts: [Word: Int] = [:]
        var buffer = [UInt8](repeating: 0, count: 2 * chunkSize)
        var kept = 0
        while true {
            if kept + chunkSize > buffer.count { buffer.append(contentsOf: repeatElement(0, count: chunkSize)) }
            let got = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + kept, chunkSize) }
            precondition(got >= 0, "cannot read \(path)")
            let end = kept + got
            var cut = end
            if got > 0 {
                while cut > 0 && !Self.isSeparator(buffer[cut - 1]) { cut -= 1 }
            }
            TextLine(buffer[0..<cut]).forEachWord { word in counts[word, default: 0] += 1 }
            if got == 0 { return counts }
            buffer.withUnsafeMutableBytes { bytes in
                _ = memmove(bytes.baseAddress!, bytes.baseAddress! + cut, end - cut)
            }
            kept = end - cut
        }
    }

    private static func isSeparator(_ byte: UInt8) -> Bool {
        byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
    }
}
