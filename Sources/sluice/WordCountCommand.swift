//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Sluice

/// `sluice wordcount [FILE…] [--stages N] [--top K]`: counts words on every core with a Flow.
struct WordCount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wordcount",
        abstract: "Count words in files (or a generated corpus) on every core with a Flow.",
        discussion: """
            Words are runs of bytes that are not ASCII whitespace, compared as bytes. Each stage \
            counts the words of the chunks it reads; the counts are then partitioned by word and \
            merged, so the result equals a plain single-threaded count.

            With no FILE, counts a corpus generated on the spot: the same bytes on every machine \
            (--corpus-mb MB of lines of about 12 words drawn from a 10 000-word Zipf-like vocabulary).

            Example:
              sluice wordcount --stages 2 --top 10
              sluice wordcount /var/log/syslog --verify
            """
    )

    @Argument(help: "Text files to count, one after the other (default: a generated corpus).")
    var files: [String] = []

    @Option(help: "Stages per phase, 1...1024 (default: one per core).")
    var stages: Int = Flow<Word>.defaultStageCount

    @Option(help: "How many of the most frequent words to print, 1...1000000.")
    var top: Int = 20

    @Option(help: "Size of the generated corpus in MB when no file is given, 1...4096.")
    var corpusMb: Int = 32

    @Flag(help: "Also count on one thread without Flow and check both counts are equal.")
    var verify = false

    func validate() throws {
        guard (1...1024).contains(self.stages) else {
            throw ValidationError("--stages must be 1...1024 (got \(self.stages))")
        }
        guard (1...1_000_000).contains(self.top) else {
            throw ValidationError("--top must be 1...1000000 (got \(self.top))")
        }
        guard (1...4096).contains(self.corpusMb) else {
            throw ValidationError("--corpus-mb must be 1...4096 (got \(self.corpusMb))")
        }
    }

    func run() async throws {
        do {
            try await self.count()
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("sluice: \(Self.describe(error))\n".utf8))
            throw ExitCode.failure
        }
    }

    private func count() async throws {
        let flow: Flow<TextLine>
        let bytes: Int
        var corpus: [UInt8] = []
        if self.files.isEmpty {
            corpus = try ZipfCorpus().text(bytes: self.corpusMb * 1_000_000)
            bytes = corpus.count
            flow = Flow.lines(inText: corpus, stages: self.stages)
        } else {
            bytes = try self.files.reduce(0) { total, path in total + (try Self.size(of: path)) }
            flow = Flow.lines(ofFiles: self.files, stages: self.stages)
        }
        let clock = ContinuousClock()
        let started = clock.now
        let counts = try await Self.countWords(flow, stages: self.stages)
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(Self.report(counts, top: self.top))
        let megabytes = Double(bytes) / 1e6
        let total = counts.values.reduce(0, +)
        print("total \(total) words, \(counts.count) distinct, \(String(format: "%.1f", megabytes)) MB")
        print(
            String(format: "time %.3f s, %.1f MB/s, %d stage%@", seconds, megabytes / seconds, self.stages, self.stages == 1 ? "" : "s")
        )
        if self.verify {
            let plain = try self.files.isEmpty ? Self.plainCount(corpus) : self.files.reduce(into: [Word: Int]()) { counts, path in
                Self.plainCount(try Self.contents(of: path), into: &counts)
            }
            guard plain == counts else {
                FileHandle.standardError.write(Data("sluice: the Flow count differs from the single-threaded count\n".utf8))
                throw ExitCode.failure
            }
            print("verified: equal to a single-threaded count")
        }
    }

    /// Counts words with a Flow: per stage while reading, then partitioned by word and merged.
    static func countWords(_ lines: Flow<TextLine>, stages: Int) async throws -> [Word: Int] {
        let pairs = try await lines.words().frequencies(stages: stages).collect()
        var counts: [Word: Int] = [:]
        counts.reserveCapacity(pairs.count)
        for pair in pairs { counts[pair.key, default: 0] += pair.value }
        return counts
    }

    /// The words of `text` counted on this thread alone.
    static func plainCount(_ text: [UInt8]) -> [Word: Int] {
        var counts: [Word: Int] = [:]
        Self.plainCount(text, into: &counts)
        return counts
    }

    static func plainCount(_ text: [UInt8], into counts: inout [Word: Int]) {
        TextLine(text[...]).forEachWord { word in counts[word, default: 0] += 1 }
    }

    /// The `top` most frequent words, most frequent first (equal counts in byte order), as a
    /// table.
    static func report(_ counts: [Word: Int], top: Int) -> String {
        let ranked = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(top)
        var lines = ["rank  count        word"]
        for (index, entry) in ranked.enumerated() {
            let rank = String(index + 1)
            let count = String(entry.value)
            lines.append(
                String(repeating: " ", count: max(0, 4 - rank.count)) + rank + "  "
                    + count + String(repeating: " ", count: max(1, 13 - count.count)) + entry.key.description
            )
        }
        return lines.joined(separator: "\n")
    }

    private static func size(of path: String) throws -> Int {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw FlowError(.cannotOpenFile, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw FlowError(.cannotOpenFile, "cannot open \(path): not a regular file")
        }
        return Int(status.st_size)
    }

    private static func contents(of path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FlowError(.cannotOpenFile, "cannot read \(path)")
        }
        return [UInt8](data)
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? FlowError { return error.message }
        if let error = error as? SluiceError { return error.message }
        return "\(error)"
    }
}
