//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Deterministic text for word counts: lines of words drawn from a fixed vocabulary with
/// Zipf-like frequencies (the word of rank `r` appears about `1/r` as often as the most
/// frequent one), the same bytes for the same parameters on every machine.
///
/// ```swift
/// let text = ZipfCorpus().text(bytes: 32 << 20)   // 32 MiB, 10 000 words, ~12 a line
/// ```
public struct ZipfCorpus: Sendable {
    /// The largest vocabulary accepted.
    public static let maximumVocabularySize = 1_000_000
    /// The largest corpus ``text(bytes:)`` makes: 4 GiB.
    public static let maximumBytes = 4 << 30

    /// The distinct words, most frequent first: lowercase ASCII, 2 to 12 letters.
    public let vocabulary: [[UInt8]]
    /// The mean number of words on a line (lines have `wordsPerLine - 4` to `wordsPerLine + 4`).
    public let wordsPerLine: Int
    private let seed: UInt64
    /// Cumulative weights of the ranks, scaled to `UInt64` so that sampling needs no floating
    /// point.
    private let cumulative: [UInt64]

    /// Creates a corpus generator with `vocabularySize` words (1...1 000 000), about
    /// `wordsPerLine` words a line (5...1000), and `seed` for the pseudo-random choices.
    ///
    /// - Throws: ``SluiceError`` (``SluiceError/Code-swift.struct/invalidOption``) for a size out
    ///   of range.
    public init(vocabularySize: Int = 10_000, wordsPerLine: Int = 12, seed: UInt64 = 0x5EED) throws(SluiceError) {
        guard vocabularySize >= 1 && vocabularySize <= Self.maximumVocabularySize else {
            throw .invalidOption("vocabularySize", vocabularySize, "must be 1...\(Self.maximumVocabularySize)")
        }
        guard wordsPerLine >= 5 && wordsPerLine <= 1000 else {
            throw .invalidOption("wordsPerLine", wordsPerLine, "must be 5...1000")
        }
        var random = SplitMix64(seed: seed)
        var seen = Set<[UInt8]>()
        var vocabulary: [[UInt8]] = []
        vocabulary.reserveCapacity(vocabularySize)
        while vocabulary.count < vocabularySize {
            // Frequent words tend to be short, as in natural text.
            let rank = vocabulary.count
            let longest = min(12, 3 + rank.bitWidthUsed / 2 + 2)
            let length = 2 + Int(random.next() % UInt64(longest - 1))
            let word = (0..<length).map { _ in UInt8(ascii: "a") + UInt8(random.next() % 26) }
            if seen.insert(word).inserted { vocabulary.append(word) }
        }
        var weights: [Double] = []
        var total = 0.0
        for rank in 1...vocabularySize {
            total += 1 / Double(rank)
            weights.append(total)
        }
        let scale = Double(UInt64.max / 2) / total
        self.cumulative = weights.map { UInt64($0 * scale) }
        self.vocabulary = vocabulary
        self.wordsPerLine = wordsPerLine
        self.seed = seed &+ 1
    }

    /// About `bytes` bytes of text (0...``maximumBytes``): whole lines of words separated by
    /// single spaces, each line ending in a newline. The same parameters give the same text.
    public func text(bytes: Int) -> [UInt8] {
        let target = max(0, min(bytes, Self.maximumBytes))
        var random = SplitMix64(seed: self.seed)
        var text: [UInt8] = []
        text.reserveCapacity(target + 256)
        let last = self.cumulative[self.cumulative.count - 1]
        while text.count < target {
            let words = self.wordsPerLine - 4 + Int(random.next() % 9)
            for index in 0..<words {
                if index > 0 { text.append(UInt8(ascii: " ")) }
                text.append(contentsOf: self.vocabulary[self.rank(of: random.next() % last)])
            }
            text.append(UInt8(ascii: "\n"))
        }
        return text
    }

    /// The rank whose cumulative weight is the first above `point` (binary search).
    private func rank(of point: UInt64) -> Int {
        var low = 0
        var high = self.cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.cumulative[middle] > point { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

extension Int {
    /// The number of bits needed to write this non-negative value.
    fileprivate var bitWidthUsed: Int { Self.bitWidth - self.leadingZeroBitCount }
}

/// SplitMix64: a small, fast, well-distributed pseudo-random generator, fully determined by its
/// seed (unlike `SystemRandomNumberGenerator`).
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var value = self.state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
