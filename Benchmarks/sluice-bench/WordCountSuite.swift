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
        print("(MB/s, median of \(repetitions) interleaved runs)")

        // Every way must count the same words before any is timed.
        let expected = Self.plainCount(path: path)
        for stages in [1, 2] {
            let counts = try! await Self.flowCount(path: path, stages: stages)
            guard counts == expected else {
                print("Flow with \(stages) stage(s) counted differently from the plain loop")
                exit(1)
            }
        }
        let rates = await interleavedMedianRates(
            repetitions: repetitions,
            [
                { _ = try! await Self.flowCount(path: path, stages: 1); return bytes },
                { _ = try! await Self.flowCount(path: path, stages: 2); return bytes },
                { _ = Self.plainCount(path: path); return bytes },
            ]
        )
        let flow1 = rates[0] / 1e6
        let flow2 = rates[1] / 1e6
        let plain = rates[2] / 1e6
        print(pad("configuration", 50) + "MB/s")
        print(pad("Flow, 1 stage per phase", 50) + String(format: "%.1f", flow1))
        print(pad("Flow, 2 stages per phase", 50) + String(format: "%.1f", flow2))
        print(pad("plain single-threaded loop, [Word: Int]", 50) + String(format: "%.1f", plain))
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
