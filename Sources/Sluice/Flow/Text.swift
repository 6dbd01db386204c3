//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A block of whole lines of text: what ``Flow/lines(ofFiles:chunkSize:stages:)`` reads from a
/// file in one go and hands to one stage, which splits it into ``TextLine``s.
///
/// Every chunk but the last of a file ends with a newline; no line is split between chunks.
public struct TextChunk: Sendable {
    /// The chunk's bytes.
    public let bytes: [UInt8]

    /// Creates a chunk of `bytes` (which should hold whole lines).
    @inlinable
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Calls `body` with each line of the chunk, without its line terminator (`\n` or `\r\n`).
    /// A final line without a newline counts as a line; an empty chunk has no lines.
    @inlinable
    public func forEachLine(_ body: (TextLine) -> Void) {
        let bytes = self.bytes
        let count = bytes.count
        var start = 0
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            while index < count {
                if buffer[index] == UInt8(ascii: "\n") {
                    var end = index
                    if end > start && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                    body(TextLine(bytes[start..<end]))
                    start = index + 1
                }
                index += 1
            }
        }
        if start < count { body(TextLine(bytes[start..<count])) }
    }
}

/// One line of text as bytes, without its terminator.
public struct TextLine: Sendable, Hashable {
    /// The line's bytes.
    public let bytes: ArraySlice<UInt8>

    /// Creates a line of `bytes`.
    @inlinable
    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
    }

    /// The line decoded as UTF-8 (invalid sequences become U+FFFD).
    public var string: String { String(decoding: self.bytes, as: UTF8.self) }

    /// Calls `body` with each word of the line: each maximal run of bytes that are not ASCII
    /// whitespace (space, tab, line feed, vertical tab, form feed, carriage return).
    @inlinable
    public func forEachWord(_ body: (Word) -> Void) {
        self.bytes.withUnsafeBufferPointer { buffer in
            Word.forEachWord(in: UnsafeRawBufferPointer(buffer), body)
        }
    }

    /// The line's words (see ``forEachWord(_:)``), as an array.
    @inlinable
    public var words: [Word] {
        var words: [Word] = []
        self.forEachWord { words.append($0) }
        return words
    }
}

/// A word as bytes: hashed and compared by its bytes, never decoded on the hot path.
///
/// The first 16 bytes are stored inline, so a short word costs no allocation; longer words keep
/// the rest in an array.
public struct Word: Sendable, Hashable, Comparable, CustomStringConvertible {
    @usableFromInline
    var low: UInt64
    @usableFromInline
    var high: UInt64
    @usableFromInline
    var length: Int
    /// Bytes 16 and on, for words longer than 16 bytes.
    @usableFromInline
    var tail: [UInt8]?

    @inlinable
    init(low: UInt64, high: UInt64, length: Int, tail: [UInt8]?) {
        self.low = low
        self.high = high
        self.length = length
        self.tail = tail
    }

    /// Creates a word of `bytes` (taken as they are, whitespace included).
    @inlinable
    public init(_ bytes: some Collection<UInt8>) {
        var low: UInt64 = 0
        var high: UInt64 = 0
        var tail: [UInt8] = []
        var index = 0
        for byte in bytes {
            if index < 8 {
                low |= UInt64(byte) << UInt64(index &* 8)
            } else if index < 16 {
                high |= UInt64(byte) << UInt64((index &- 8) &* 8)
            } else {
                tail.append(byte)
            }
            index += 1
        }
        self.init(low: low, high: high, length: index, tail: index > 16 ? tail : nil)
    }

    /// Creates a word of the UTF-8 bytes of `string`.
    @inlinable
    public init(_ string: String) {
        self.init(Array(string.utf8))
    }

    /// The number of bytes.
    @inlinable
    public var count: Int { self.length }

    /// The word's bytes.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(self.length)
        for index in 0..<min(self.length, 16) {
            let word = index < 8 ? self.low : self.high
            bytes.append(UInt8(truncatingIfNeeded: word >> UInt64((index % 8) * 8)))
        }
        if let tail = self.tail { bytes.append(contentsOf: tail) }
        return bytes
    }

    /// The word decoded as UTF-8 (invalid sequences become U+FFFD).
    public var description: String { String(decoding: self.bytes, as: UTF8.self) }

    /// Whether both words have the same bytes.
    @inlinable
    public static func == (lhs: Word, rhs: Word) -> Bool {
        lhs.low == rhs.low && lhs.high == rhs.high && lhs.length == rhs.length && lhs.tail == rhs.tail
    }

    /// Byte-wise (lexicographic) order.
    public static func < (lhs: Word, rhs: Word) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    /// Hashes the word's bytes.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.mixed(seed: 0))
        if let tail = self.tail { hasher.combine(tail) }
    }

    /// Hashes without `Hasher` for words of up to 16 bytes: dictionaries keyed by words spend
    /// most of their time hashing, and a multiply-xorshift mix of two words (seeded per
    /// dictionary) is several times cheaper than a SipHash round trip.
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        guard self.tail == nil else {
            var hasher = Hasher()
            hasher.combine(seed)
            self.hash(into: &hasher)
            return hasher.finalize()
        }
        return Int(truncatingIfNeeded: self.mixed(seed: UInt64(truncatingIfNeeded: seed)))
    }

    @inlinable
    func mixed(seed: UInt64) -> UInt64 {
        var hash = (self.low ^ seed) &* 0x9E37_79B9_7F4A_7C15
        hash ^= (self.high &+ UInt64(truncatingIfNeeded: self.length)) &* 0xC2B2_AE3D_27D4_EB4F
        hash ^= hash >> 31
        hash &*= 0xD6E8_FEB8_6659_FD93
        hash ^= hash >> 32
        return hash
    }

    /// Whether `byte` separates words: ASCII space, tab, line feed, vertical tab, form feed or
    /// carriage return.
    @inlinable
    static func isSeparator(_ byte: UInt8) -> Bool {
        byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
    }

    /// Calls `body` with each word in `buffer`.
    @inlinable
    static func forEachWord(in buffer: UnsafeRawBufferPointer, _ body: (Word) -> Void) {
        let count = buffer.count
        var index = 0
        while index < count {
            // Skip separators.
            while index < count && Self.isSeparator(buffer[index]) { index += 1 }
            if index == count { return }
            let start = index
            var low: UInt64 = 0
            var high: UInt64 = 0
            var shift: UInt64 = 0
            while index < count {
                let byte = buffer[index]
                if Self.isSeparator(byte) { break }
                if shift < 64 {
                    low |= UInt64(byte) << shift
                } else if shift < 128 {
                    high |= UInt64(byte) << (shift &- 64)
                }
                shift &+= 8
                index += 1
            }
            let length = index - start
            var tail: [UInt8]?
            if length > 16 {
                tail = Array(UnsafeRawBufferPointer(rebasing: buffer[(start + 16)..<index]))
            }
            body(Word(low: low, high: high, length: length, tail: tail))
        }
    }
}
