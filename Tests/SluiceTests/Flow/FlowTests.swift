//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import SluiceTestKit
import Synchronization
import Testing

@testable import Sluice

/// Random text for word counts: words from a small random vocabulary (some longer than the
/// 16 bytes a word keeps inline, some with bytes above ASCII), separated by every kind of
/// whitespace, with empty lines, CRLF lines and a last line without a newline.
private func randomText(_ random: inout SplitMix64, lines: Int) -> [UInt8] {
    let vocabulary: [[UInt8]] = (0..<(5 + Int(random.next() % 200))).map { _ in
        let length = 1 + Int(random.next() % (random.next() % 4 == 0 ? 40 : 10))
        return (0..<length).map { _ in
            let byte = UInt8(33 + random.next() % 94)
            return random.next() % 50 == 0 ? 0xC3 : byte
        }
    }
    let separators: [[UInt8]] = [[0x20], [0x20, 0x20], [0x09], [0x0B], [0x0C]]
    var text: [UInt8] = []
    for _ in 0..<lines {
        let words = Int(random.next() % 20)
        if random.next() % 3 == 0 { text.append(contentsOf: separators[Int(random.next() % 5)]) }
        for index in 0..<words {
            if index > 0 { text.append(contentsOf: separators[Int(random.next() % UInt64(separators.count))]) }
            text.append(contentsOf: vocabulary[Int(random.next() % UInt64(vocabulary.count))])
        }
        text.append(contentsOf: random.next() % 4 == 0 ? [0x0D, 0x0A] : [0x0A])
    }
    text.append(contentsOf: vocabulary[0])
    return text
}

/// The oracle: words split with a loop of its own, counted as byte arrays.
private func plainCount(_ text: [UInt8]) -> [[UInt8]: Int] {
    var counts: [[UInt8]: Int] = [:]
    var word: [UInt8] = []
    for byte in text + [0x20] {
        if byte == 0x20 || (0x09...0x0D).contains(byte) {
            if !word.isEmpty { counts[word, default: 0] += 1 }
            word = []
        } else {
            word.append(byte)
        }
    }
    return counts
}

private func byBytes(_ pairs: [(key: Word, value: Int)]) -> [[UInt8]: Int] {
    var counts: [[UInt8]: Int] = [:]
    for pair in pairs {
        #expect(counts[pair.key.bytes] == nil, "word \(pair.key) came out twice")
        counts[pair.key.bytes, default: 0] += pair.value
    }
    return counts
}

private func temporaryFile(_ bytes: [UInt8]) throws -> String {
    let path = NSTemporaryDirectory() + "sluice-flow-test-\(UUID().uuidString).txt"
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        throw TestFailure(label: "cannot write \(path)")
    }
    return path
}

@Suite("Flow", .timeLimit(.minutes(1)))
struct FlowTests {
    @Test("word counts equal a plain count on random texts, stage counts and chunk sizes", arguments: 0..<8)
    func wordCountsEqualAPlainCount(seed: UInt64) async throws {
        var random = SplitMix64(seed: 0xF10 &+ seed)
        let text = randomText(&random, lines: 200 + Int(random.next() % 3000))
        let expected = plainCount(text)
        let stages = 1 + Int(random.next() % 5)
        let chunkSize = 4096 + Int(random.next() % 20_000)
        let inMemory = try await Flow.lines(inText: text, chunkSize: chunkSize, stages: stages)
            .words().frequencies(stages: 1 + Int(random.next() % 5)).collect()
        #expect(byBytes(inMemory) == expected, "in memory, \(stages) stages, chunks of \(chunkSize)")
        let path = try temporaryFile(text)
        defer { unlink(path) }
        let fromFile = try await Flow.lines(ofFile: path, chunkSize: chunkSize, stages: stages)
            .words().frequencies(stages: stages).collect()
        #expect(byBytes(fromFile) == expected, "from a file, \(stages) stages, chunks of \(chunkSize)")
    }

    @Test("flatMap, partition by word, reduceByKey counts every word once, like a plain count", arguments: 0..<4)
    func partitionedReduceEqualsAPlainCount(seed: UInt64) async throws {
        var random = SplitMix64(seed: 0xBEE &+ seed)
        let text = randomText(&random, lines: 500 + Int(random.next() % 1000))
        let counts = try await Flow.lines(inText: text, chunkSize: 4096, stages: 1 + Int(random.next() % 4))
            .flatMap { $0.words }
            .partition(stages: 1 + Int(random.next() % 4), maxDemand: 1 + Int(random.next() % 100)) { $0 }
            .reduceByKey(key: { $0 }, value: { _ in 1 }, +=)
            .collect()
        #expect(byBytes(counts) == plainCount(text))
    }

    @Test("map, filter and flatMap over a sequence give the eager result, whatever the stages", arguments: 0..<6)
    func statelessOperationsMatchTheEagerResult(seed: UInt64) async throws {
        var random = SplitMix64(seed: 0x5EED &+ seed)
        let count = Int(random.next() % 20_000)
        let numbers = Array(0..<count)
        let flow = Flow.from(numbers, stages: 1 + Int(random.next() % 6), maxDemand: 1 + Int(random.next() % 2000))
            .map { $0 * 3 }
            .filter { $0 % 2 == 0 }
            .flatMap { [$0, -$0] }
        let expected = numbers.map { $0 * 3 }.filter { $0 % 2 == 0 }.flatMap { [$0, -$0] }
        #expect(try await flow.collect().sorted() == expected.sorted())
    }

    @Test("each stage reduces what it received; merged and reduced again, the total is exact")
    func reduceThenMerge() async throws {
        let total = try await Flow.from(1...100_000, stages: 3, maxDemand: 100)
            .reduce(into: 0) { $0 += $1 }
            .merge()
            .reduce(into: 0) { $0 += $1 }
            .collect()
        #expect(total == [5_000_050_000])
        let perStage = try await Flow.from(1...1000, stages: 3).reduce(into: 0) { $0 += $1 }.collect()
        #expect(perStage.count == 3)
        #expect(perStage.reduce(0, +) == 500_500)
    }

    @Test("partition sends equal keys to the same stage")
    func partitionGroupsEqualKeys() async throws {
        // Each stage of the partitioned phase reports the keys it saw; no key may be seen by two.
        let seen = try await Flow.from((0..<5000).map { $0 % 37 }, stages: 2)
            .partition(stages: 4) { $0 }
            .reduce(into: Set<Int>()) { $0.insert($1) }
            .collect()
        #expect(seen.count == 4)
        #expect(seen.reduce(0) { $0 + $1.count } == 37)
        #expect(Set(seen.flatMap { $0 }).count == 37)
    }

    @Test("an async sequence is pulled by demand, and its error ends the flow with that error")
    func asyncSequenceSource() async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        for number in 0..<500 { continuation.yield(number) }
        continuation.finish()
        let doubled = try await Flow.from(stream, stages: 2).map { $0 * 2 }.collect()
        #expect(doubled.sorted() == (0..<500).map { $0 * 2 })

        let (failing, failingContinuation) = AsyncThrowingStream.makeStream(of: Int.self)
        failingContinuation.yield(1)
        failingContinuation.finish(throwing: TestFailure(label: "source failed"))
        await #expect(throws: TestFailure.self) {
            _ = try await Flow.from(failing, stages: 2).partition(stages: 2) { $0 }.collect()
        }
    }

    @Test("a pipeline source's messages are acknowledged once the first phase handled them")
    func pipelineSource() async throws {
        let source = InMemorySource()
        _ = source.push((0..<300).map { Array("message \($0 % 7)".utf8) })
        source.finishWhenEmpty()
        let counts = try await Flow.from(source: source, stages: 2, maxDemand: 50)
            .map { (try? $0.string()) ?? "" }
            .frequencies(stages: 2)
            .collect()
        #expect(counts.count == 7)
        #expect(counts.reduce(0) { $0 + $1.value } == 300)
        #expect(source.settledCount == 300)
    }

    @Test("a file that cannot be opened is a FlowError naming it; nothing keeps running")
    func missingFile() async throws {
        let error = await #expect(throws: FlowError.self) {
            _ = try await Flow.lines(ofFile: "/nonexistent/sluice-flow").words().frequencies().collect()
        }
        #expect(error?.code == .cannotOpenFile)
        #expect(error?.message.contains("/nonexistent/sluice-flow") == true)
    }

    @Test("stage counts, demand, chunk sizes, windows and triggers out of range are typed errors")
    func invalidOptions() async throws {
        func expectInvalid(_ option: String, _ run: @Sendable () async throws -> Void) async {
            let error = await #expect(throws: SluiceError.self) { try await run() }
            #expect(error?.code == .invalidOption)
            #expect(error?.message.contains(option) == true, "\(String(describing: error))")
        }
        await expectInvalid("stages") { _ = try await Flow.from([1], stages: 0).collect() }
        await expectInvalid("stages") { _ = try await Flow.from([1], stages: 1025).collect() }
        await expectInvalid("stages") { _ = try await Flow.from([1], stages: 1).partition(stages: 0) { $0 }.collect() }
        await expectInvalid("maxDemand") { _ = try await Flow.from([1], maxDemand: 0).collect() }
        await expectInvalid("chunkSize") { _ = try await Flow.lines(inText: [], chunkSize: 10).collect() }
        await expectInvalid("chunkSize") { _ = try await Flow.lines(ofFile: "/dev/null", chunkSize: 1 << 30).collect() }
        await expectInvalid("trigger count") {
            _ = try await Flow.from([1]).reduce(into: 0, window: .global.trigger(.every(0))) { $0 += $1 }.collect()
        }
        await expectInvalid("window interval") {
            _ = try await Flow.from([1]).reduce(into: 0, window: .fixed(every: .zero)) { $0 += $1 }.collect()
        }
        #expect(throws: SluiceError.self) { _ = try ZipfCorpus(vocabularySize: 0) }
        #expect(throws: SluiceError.self) { _ = try ZipfCorpus(wordsPerLine: 1) }
    }

    @Test("words are compared and hashed by their bytes, long ones included")
    func words() {
        let long = Array("a-word-much-longer-than-sixteen-bytes".utf8)
        #expect(Word(long) == Word(long))
        #expect(Word(long).bytes == long)
        #expect(Word(long) != Word(long.dropLast() + [UInt8(ascii: "x")]))
        #expect(Word(long).hashValue == Word(long).hashValue)
        #expect(Word("sixteen-bytes-ab") != Word("sixteen-bytes-abc"))
        #expect(Word("abc").description == "abc")
        #expect(Word("abc") < Word("abd"))
        #expect(Word("ab") < Word("abc"))
        let line = TextLine(Array("  one\ttwo  three-is-a-long-word-indeed \u{0B}".utf8)[...])
        #expect(line.words.map(\.description) == ["one", "two", "three-is-a-long-word-indeed"])
        let set: Set<Word> = [Word("x"), Word("x"), Word(long), Word(long)]
        #expect(set.count == 2)
    }

    @Test("chunks hold whole lines; a line longer than a chunk stays whole")
    func chunksHoldWholeLines() async throws {
        let longLine = [UInt8](repeating: UInt8(ascii: "w"), count: 10_000)
        let text = Array("short\n".utf8) + longLine + Array("\nend\nno newline".utf8)
        for chunks in [try TextChunk.chunks(of: text, chunkSize: 4096)] {
            #expect(chunks.flatMap(\.bytes) == text)
            for chunk in chunks.dropLast() { #expect(chunk.bytes.last == UInt8(ascii: "\n")) }
        }
        let path = try temporaryFile(text)
        defer { unlink(path) }
        var read: [UInt8] = []
        for try await chunk in try FileChunks(paths: [path, path], chunkSize: 4096) {
            if chunk.bytes.count < text.count { #expect(chunk.bytes.last == UInt8(ascii: "\n") || chunk.bytes.last == UInt8(ascii: "e")) }
            read += chunk.bytes
        }
        #expect(read == text + text)
        let lines = try await Flow.lines(ofFiles: [path], chunkSize: 4096, stages: 1).map { $0.string }.collect()
        #expect(lines == ["short", String(decoding: longLine, as: UTF8.self), "end", "no newline"])
    }

    @Test("the generated corpus is the same every time and Zipf-like")
    func corpus() throws {
        let corpus = try ZipfCorpus()
        let text = corpus.text(bytes: 2_000_000)
        #expect(text == (try ZipfCorpus()).text(bytes: 2_000_000))
        #expect(text.count >= 2_000_000 && text.count < 2_000_300)
        #expect(corpus.vocabulary.count == 10_000)
        #expect(Set(corpus.vocabulary).count == 10_000)
        let counts = plainCount(text)
        let first = counts[corpus.vocabulary[0]] ?? 0
        let second = counts[corpus.vocabulary[1]] ?? 0
        let tenth = counts[corpus.vocabulary[9]] ?? 0
        // Zipf: rank r appears about 1/r as often as rank 1.
        #expect(abs(Double(first) / Double(second) - 2) < 0.2)
        #expect(abs(Double(first) / Double(tenth) - 10) < 1.5)
        let lines = text.split(separator: UInt8(ascii: "\n"))
        let words = lines.reduce(0) { $0 + $1.split(separator: UInt8(ascii: " ")).count }
        #expect(abs(Double(words) / Double(lines.count) - 12) < 0.5)
        #expect(try ZipfCorpus(seed: 1).text(bytes: 1000) != text.prefix(1000).map { $0 })
    }
}
