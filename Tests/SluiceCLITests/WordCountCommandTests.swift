//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Testing

@Suite("sluice wordcount", .timeLimit(.minutes(1)))
struct WordCountCommandTests {
    @Test("counts a file: top words by count, the total, time and MB/s, equal to a plain count")
    func countsAFile() async throws {
        let path = NSTemporaryDirectory() + "sluice-wordcount-\(UUID().uuidString).txt"
        let text = "the cat and the hat\r\nthe end\n\n  and\tso on\nthe"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await sluice(["wordcount", path, "--stages", "3", "--top", "3", "--verify"])
        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 7, "\(result.output)")
        #expect(lines[0].hasPrefix("rank"))
        #expect(lines[1].split(separator: " ") == ["1", "4", "the"])
        #expect(lines[2].split(separator: " ") == ["2", "2", "and"])
        #expect(lines[3].split(separator: " ") == ["3", "1", "cat"])
        #expect(lines[4].hasPrefix("total 11 words, 7 distinct, "))
        #expect(lines[5].hasPrefix("time "))
        #expect(lines[5].contains(" MB/s, 3 stages"))
        #expect(lines[6] == "verified: equal to a single-threaded count")
    }

    @Test("with no file it counts the generated corpus, the same on every run")
    func countsTheGeneratedCorpus() async throws {
        let first = try await sluice(["wordcount", "--corpus-mb", "2", "--top", "5", "--stages", "2", "--verify"])
        #expect(first.status == 0, "\(first.error)")
        let second = try await sluice(["wordcount", "--corpus-mb", "2", "--top", "5", "--stages", "1"])
        #expect(second.status == 0, "\(second.error)")
        let firstLines = first.output.split(separator: "\n")
        let secondLines = second.output.split(separator: "\n")
        // The table and the total are the same whatever the stage count; the time differs.
        #expect(firstLines.prefix(7) == secondLines.prefix(7))
        #expect(firstLines.count == 9)
        #expect(firstLines[6].hasPrefix("total ") && firstLines[6].hasSuffix(" distinct, 2.0 MB"))
        #expect(first.output.contains("verified: equal to a single-threaded count"))
    }

    @Test("numeric options out of range are one-line errors", arguments: [
        (["--stages", "0"], "--stages must be 1...1024"),
        (["--stages", "1025"], "--stages must be 1...1024"),
        (["--top", "0"], "--top must be 1...1000000"),
        (["--corpus-mb", "0"], "--corpus-mb must be 1...4096"),
        (["--corpus-mb", "5000"], "--corpus-mb must be 1...4096"),
    ])
    func optionsOutOfRange(arguments: [String], message: String) async throws {
        let result = try await sluice(["wordcount"] + arguments)
        #expect(result.status != 0)
        #expect(result.error.split(separator: "\n").first.map { $0.contains(message) } == true, "\(result.error)")
        #expect(result.output.isEmpty)
    }

    @Test("a file that cannot be read prints one line naming it and fails")
    func missingFile() async throws {
        let result = try await sluice(["wordcount", "/nonexistent/words.txt"])
        #expect(result.status != 0)
        #expect(result.error == "sluice: cannot open /nonexistent/words.txt: No such file or directory\n")
        let directory = try await sluice(["wordcount", NSTemporaryDirectory()])
        #expect(directory.status != 0)
        #expect(directory.error.split(separator: "\n").count == 1)
        #expect(directory.error.contains("not a regular file"))
    }

    @Test("--help shows a working example")
    func help() async throws {
        let result = try await sluice(["wordcount", "--help"])
        #expect(result.status == 0)
        #expect(result.output.contains("sluice wordcount --stages 2 --top 10"))
    }
}
