//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The bytes of a message: a view of a byte buffer that many payloads may share.
///
/// A source reads one fetch from its broker (a batch of list items, stream entries or records)
/// into one buffer and gives each message a payload that views its part of it, with
/// ``packing(_:)``. A fetch of a thousand messages then costs one allocation instead of a
/// thousand, and the pipeline frees it once, after the last of its messages is settled.
/// Copying a payload, or a message, copies the view, never the bytes.
///
/// A source that fills a buffer itself views its parts with `Payload(buffer).extracting(range)`.
///
/// Indices start at 0, whatever part of the buffer the payload views. Changing a payload (the
/// `MutableCollection` and `RangeReplaceableCollection` operations, or assigning a new one)
/// first gives it bytes of its own, so it never changes what another payload sees.
///
/// A payload keeps its whole buffer alive. To keep a small part of a large fetch for a long
/// time, keep a copy: ``bytes`` or `Payload(Array(payload))`. A payload holds at most
/// `UInt32.max` bytes (4 GiB); every broker's own limit is far lower.
///
/// ```swift
/// Processors(concurrency: 4) { message in
///     let text = try message.string()             // validates and decodes the bytes
///     message.payload = Payload(text.uppercased().utf8)
/// }
/// ```
@frozen
public struct Payload: Sendable {
    /// The buffer, shared with the other payloads of its fetch.
    @usableFromInline
    var storage: [UInt8]
    /// Where this payload's bytes start in `storage`.
    @usableFromInline
    var offset: UInt32
    /// How many bytes the payload has.
    @usableFromInline
    var length: UInt32

    @inlinable
    init(storage: [UInt8], offset: UInt32, length: UInt32) {
        self.storage = storage
        self.offset = offset
        self.length = length
    }

    /// Where the payload's bytes lie in `storage`.
    @inlinable
    var range: Range<Int> { Int(self.offset)..<Int(self.offset) + Int(self.length) }

    /// A payload of these bytes; the array is shared, not copied.
    @inlinable
    public init(_ bytes: [UInt8]) {
        precondition(bytes.count <= Int(UInt32.max), "a payload holds at most \(UInt32.max) bytes")
        self.init(storage: bytes, offset: 0, length: UInt32(truncatingIfNeeded: bytes.count))
    }

    /// Copies `parts` into one new buffer and returns a payload viewing each part, in order:
    /// what a source does with one fetch.
    ///
    /// The payloads share the buffer, which is freed when the last of them is. Parts larger
    /// together than a buffer can hold (4 GiB) get buffers of their own.
    @inlinable
    public static func packing<Parts: Collection>(_ parts: Parts) -> [Payload] where Parts.Element: Collection<UInt8> {
        var total = 0
        for part in parts { total += part.count }
        guard total <= Int(UInt32.max) else { return parts.map { Payload(Array($0)) } }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(total)
        for part in parts { buffer.append(contentsOf: part) }
        var payloads: [Payload] = []
        payloads.reserveCapacity(parts.count)
        var start: UInt32 = 0
        for part in parts {
            let length = UInt32(truncatingIfNeeded: part.count)
            payloads.append(Payload(storage: buffer, offset: start, length: length))
            start &+= length
        }
        return payloads
    }

    /// The bytes as an array: the buffer itself when the payload views all of it, otherwise a
    /// copy of the payload's part.
    @inlinable
    public var bytes: [UInt8] {
        if self.offset == 0 && Int(self.length) == self.storage.count { return self.storage }
        return Array(self.storage[self.range])
    }

    /// A payload viewing `range` of this one (indices from 0); the bytes are shared, not copied.
    @inlinable
    public func extracting(_ range: Range<Int>) -> Payload {
        precondition(range.lowerBound >= 0 && range.upperBound <= Int(self.length), "range \(range) is outside a payload of \(self.length) bytes")
        return Payload(
            storage: self.storage,
            offset: self.offset &+ UInt32(truncatingIfNeeded: range.lowerBound),
            length: UInt32(truncatingIfNeeded: range.count)
        )
    }

    /// Calls `body` with the payload's bytes.
    ///
    /// The pointer is valid only during the call.
    @inlinable
    public func withUnsafeBytes<Value, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Value
    ) throws(Failure) -> Value {
        // `Array.withUnsafeBytes` rethrows untyped errors; carry the typed one across.
        let outcome: Result<Value, Failure> = self.storage.withUnsafeBytes { whole in
            do throws(Failure) {
                return .success(try body(UnsafeRawBufferPointer(rebasing: whole[self.range])))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    /// Gives the payload bytes of its own, starting at offset 0 of its storage, before a change.
    @inlinable
    mutating func makeWhole() {
        if self.offset != 0 || Int(self.length) != self.storage.count {
            self.storage = Array(self.storage[self.range])
            self.offset = 0
        }
    }
}

extension Payload: RandomAccessCollection, MutableCollection {
    /// Indices start at 0.
    public typealias Index = Int
    /// The positions of the bytes, `0..<count`.
    public typealias Indices = Range<Int>

    /// Always 0.
    @inlinable
    public var startIndex: Int { 0 }

    /// The number of bytes.
    @inlinable
    public var endIndex: Int { Int(self.length) }

    /// The number of bytes.
    @inlinable
    public var count: Int { Int(self.length) }

    /// Whether the payload has no bytes.
    @inlinable
    public var isEmpty: Bool { self.length == 0 }

    /// The byte at `position` (from 0).
    @inlinable
    public subscript(position: Int) -> UInt8 {
        get {
            precondition(UInt(bitPattern: position) < UInt(self.length), "index \(position) is outside a payload of \(self.length) bytes")
            return self.storage[Int(self.offset) &+ position]
        }
        set {
            precondition(UInt(bitPattern: position) < UInt(self.length), "index \(position) is outside a payload of \(self.length) bytes")
            self.makeWhole()
            self.storage[position] = newValue
        }
    }

    /// Calls `body` with the payload's bytes; always available.
    @inlinable
    public func withContiguousStorageIfAvailable<Value>(
        _ body: (UnsafeBufferPointer<UInt8>) throws -> Value
    ) rethrows -> Value? {
        try self.storage.withUnsafeBufferPointer { whole in
            try body(UnsafeBufferPointer(rebasing: whole[self.range]))
        }
    }
}

extension Payload: RangeReplaceableCollection {
    /// An empty payload; allocates nothing.
    @inlinable
    public init() {
        self.init(storage: [], offset: 0, length: 0)
    }

    /// Replaces the bytes in `subrange` with `newElements`, after giving the payload bytes of
    /// its own.
    @inlinable
    public mutating func replaceSubrange<Replacement: Collection<UInt8>>(_ subrange: Range<Int>, with newElements: Replacement) {
        precondition(subrange.lowerBound >= 0 && subrange.upperBound <= Int(self.length), "range \(subrange) is outside a payload of \(self.length) bytes")
        self.makeWhole()
        self.storage.replaceSubrange(subrange, with: newElements)
        precondition(self.storage.count <= Int(UInt32.max), "a payload holds at most \(UInt32.max) bytes")
        self.length = UInt32(truncatingIfNeeded: self.storage.count)
    }

    /// Reserves room for `minimumCapacity` bytes of the payload's own.
    @inlinable
    public mutating func reserveCapacity(_ minimumCapacity: Int) {
        self.makeWhole()
        self.storage.reserveCapacity(minimumCapacity)
    }
}

extension Payload: ExpressibleByArrayLiteral {
    /// A payload of these bytes.
    @inlinable
    public init(arrayLiteral elements: UInt8...) {
        self.init(elements)
    }
}

extension Payload: Hashable {
    /// Whether the two payloads have the same bytes (wherever they are stored).
    @inlinable
    public static func == (lhs: Payload, rhs: Payload) -> Bool {
        guard lhs.length == rhs.length else { return false }
        return lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in left.elementsEqual(right) } }
    }

    /// Hashes the bytes.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.length)
        self.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

extension Payload: CustomStringConvertible, CustomDebugStringConvertible {
    /// The size, such as `100 bytes`.
    public var description: String {
        self.length == 1 ? "1 byte" : "\(self.length) bytes"
    }

    /// The bytes as text when they are short valid UTF-8, otherwise the size.
    public var debugDescription: String {
        if self.length <= 256, let text = self.withUnsafeBytes({ String(validating: $0, as: UTF8.self) }) {
            return "Payload(\(String(reflecting: text)))"
        }
        return "Payload(\(self.description))"
    }
}

// MARK: Keeping originals without a retain per message

extension Payload {
    /// Where the payload's buffer starts: the same for payloads sharing a buffer.
    @inlinable
    var bufferAddress: UInt {
        self.storage.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
    }
}

/// A payload's bits, copied without retaining its buffer: valid only while something else holds
/// the buffer (a ``PayloadAnchor``), and never released itself.
@usableFromInline
struct UnretainedPayload {
    @usableFromInline
    typealias Bits = (UInt64, UInt64)
    @usableFromInline
    var bits: Bits

    @inlinable
    init(_ payload: inout Payload) {
        assert(MemoryLayout<Payload>.size == MemoryLayout<Bits>.size && MemoryLayout<Payload>.alignment == MemoryLayout<Bits>.alignment)
        self.bits = withUnsafeBytes(of: &payload) { $0.load(as: Bits.self) }
    }

    /// A payload of its own (retained); the buffer must still be held.
    @inlinable
    var payload: Payload {
        withUnsafeBytes(of: self.bits) { $0.load(as: Payload.self) }
    }
}

/// Holds the buffers of the payloads it was shown, one retain per buffer: a fetch's messages
/// share a buffer, so a processor keeps their originals for retries with one retain per fetch
/// instead of one per message. While it holds a buffer, that buffer is shared, so no handler
/// can change its bytes in place (a changed payload gets bytes of its own first).
@usableFromInline
struct PayloadAnchor {
    @usableFromInline
    var held = Payload()

    @inlinable
    init() {}

    /// Holds `payload`'s buffer (retaining it if it is not the one held already) and returns
    /// the payload's bits.
    @inlinable
    mutating func hold(_ payload: inout Payload) -> UnretainedPayload {
        if payload.bufferAddress != self.held.bufferAddress { self.held = payload }
        return UnretainedPayload(&payload)
    }
}
