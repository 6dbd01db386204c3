//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceKafka
import Testing

/// The header shortcut of the consumer, on records laid out byte by byte as Kafka writes them:
/// only a v2 record with a header count of 0 is proven headerless; a v2 record with headers,
/// and legacy (v0/v1) messages of every length class, go to librdkafka's parse.
@Suite struct KafkaRecordLayoutTests {
    /// Kafka's zigzag varint of `value`.
    static func varint(_ value: Int) -> [UInt8] {
        var zigzag = UInt64(bitPattern: Int64(value) << 1 ^ Int64(value) >> 63)
        var bytes: [UInt8] = []
        repeat {
            var byte = UInt8(zigzag & 0x7F)
            zigzag >>= 7
            if zigzag != 0 { byte |= 0x80 }
            bytes.append(byte)
        } while zigzag != 0
        return bytes
    }

    /// Appends `key` behind its length as `length` writes it (a null key: the length −1
    /// alone). Returns where the key starts (−1: null).
    static func append(_ key: [UInt8]?, to bytes: inout [UInt8], length: (Int) -> [UInt8]) -> Int {
        guard let key else {
            bytes += length(-1)
            return -1
        }
        bytes += length(key.count)
        defer { bytes += key }
        return bytes.count
    }

    /// A v2 record (as in a record batch: length, attributes, timestamp and offset deltas, key,
    /// value, headers). Returns the bytes and where the key and value start.
    static func v2(key: [UInt8]?, value: [UInt8], headers: [(String, [UInt8])]) -> (bytes: [UInt8], key: Int, value: Int) {
        var body: [UInt8] = [0] + varint(0) + varint(0)
        let keyAt = append(key, to: &body, length: varint)
        body += varint(value.count)
        let valueAt = body.count
        body += value
        body += varint(headers.count)
        for (name, value) in headers { body += varint(name.utf8.count) + Array(name.utf8) + varint(value.count) + value }
        let prefix = varint(body.count)
        return (prefix + body, keyAt < 0 ? -1 : keyAt + prefix.count, valueAt + prefix.count)
    }

    /// A legacy message (magic 1: offset, size, crc, magic, attributes, timestamp, then key and
    /// value each behind a 4-byte big-endian length), followed by `trailer`.
    static func v1(key: [UInt8]?, value: [UInt8], trailer: [UInt8]) -> (bytes: [UInt8], key: Int, value: Int) {
        func int32(_ value: Int) -> [UInt8] { withUnsafeBytes(of: Int32(value).bigEndian) { Array($0) } }
        var bytes = [UInt8](repeating: 0, count: 8) + int32(0) + int32(0) + [1, 0] + [UInt8](repeating: 0, count: 8)
        let keyAt = append(key, to: &bytes, length: int32)
        bytes += int32(value.count)
        let valueAt = bytes.count
        return (bytes + value + trailer, keyAt, valueAt)
    }

    static func proves(_ record: (bytes: [UInt8], key: Int, value: Int), keyLength: Int, valueLength: Int) -> Bool {
        record.bytes.withUnsafeBytes { bytes in
            KafkaRecordLayout.provesNoHeaders(
                value: bytes.baseAddress! + record.value,
                length: valueLength,
                key: record.key < 0 ? nil : bytes.baseAddress! + record.key,
                keyLength: keyLength
            )
        }
    }

    /// Value lengths of each varint width (1 to 4 bytes) and their edges.
    static let lengths = [1, 63, 64, 100, 8191, 8192, 1 << 20 - 1, 1 << 20]

    @Test(arguments: lengths) func aV2RecordWithoutHeadersIsProven(length: Int) {
        let value = [UInt8](repeating: 0x78, count: length)
        #expect(Self.proves(Self.v2(key: Array("key-1".utf8), value: value, headers: []), keyLength: 5, valueLength: length))
        #expect(Self.proves(Self.v2(key: nil, value: value, headers: []), keyLength: 0, valueLength: length))
    }

    @Test(arguments: lengths) func aV2RecordWithHeadersGoesToLibrdkafka(length: Int) {
        let value = [UInt8](repeating: 0, count: length)
        let headers = [("trace", Array("abc".utf8))]
        #expect(!Self.proves(Self.v2(key: Array("k".utf8), value: value, headers: headers), keyLength: 1, valueLength: length))
        #expect(!Self.proves(Self.v2(key: nil, value: value, headers: headers), keyLength: 0, valueLength: length))
    }

    /// A legacy message never passes, even when the bytes after its value (the next message,
    /// or whatever follows) start with 0.
    @Test(arguments: lengths) func aLegacyMessageGoesToLibrdkafka(length: Int) {
        let value = [UInt8](repeating: 0, count: length)
        #expect(!Self.proves(Self.v1(key: Array("key".utf8), value: value, trailer: [0]), keyLength: 3, valueLength: length))
        #expect(!Self.proves(Self.v1(key: nil, value: value, trailer: [0]), keyLength: 0, valueLength: length))
    }

    /// A null or empty value, or an empty key, proves nothing (librdkafka may point them at a
    /// constant); the wrong key length or a key elsewhere breaks the layout too.
    @Test func whatDoesNotProveTheLayoutGoesToLibrdkafka() {
        #expect(!KafkaRecordLayout.provesNoHeaders(value: nil, length: 0, key: nil, keyLength: 0))
        let empty = Self.v2(key: nil, value: [], headers: [])
        #expect(!Self.proves(empty, keyLength: 0, valueLength: 0))
        let emptyKey = Self.v2(key: [], value: Array("v".utf8), headers: [])
        #expect(!Self.proves(emptyKey, keyLength: 0, valueLength: 1))
        let keyed = Self.v2(key: Array("key".utf8), value: Array("value".utf8), headers: [])
        #expect(Self.proves(keyed, keyLength: 3, valueLength: 5))
        #expect(!Self.proves(keyed, keyLength: 2, valueLength: 5))
        #expect(!Self.proves(keyed, keyLength: 3, valueLength: 4))
    }
}
