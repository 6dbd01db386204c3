//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// What the bytes around a fetched record's value say about the record, so that the consumer
/// can skip librdkafka's header parse for records that have no headers.
///
/// librdkafka hands out a fetched record's key and value in place, as pointers into the fetch
/// response it received (its zero-copy design; the response lives as long as the message). In
/// Kafka's record format v2 a record reads `… keyLength key valueLength value headerCount
/// headers`, lengths and count as zigzag varints, a null key as length −1. librdkafka's
/// `rd_kafka_message_headers` parses the headers on first access, allocating and freeing a
/// buffer for each record even when the count is 0: at millions of records a second, a third
/// of the consumer thread.
///
/// When the bytes just before the value are its own length as a v2 varint, preceded by the
/// end of the key (or the null-key marker), the record is laid out as v2, and the byte just
/// after the value is its header count. Legacy message sets (v0 and v1) can never pass: their
/// lengths are 4-byte big-endian integers, which no varint of the same value matches in the
/// layout checked. Anything that does not prove the v2 layout (a null or empty value, which
/// librdkafka may point elsewhere) goes through librdkafka's parse.
enum KafkaRecordLayout {
    /// Whether the record whose value is `length` bytes at `value`, with `keyLength` bytes of
    /// key at `key` (`nil`: a null key), has no headers, as proven by its v2 layout. `false`
    /// means "ask librdkafka", not "has headers".
    ///
    /// Reads at most 6 bytes before the value (inside the record: a v2 record has at least
    /// that many before its value, a legacy message more) and, only once the layout is
    /// proven, the byte after it (the header count, inside the record).
    static func provesNoHeaders(value: UnsafeRawPointer?, length: Int, key: UnsafeRawPointer?, keyLength: Int) -> Bool {
        guard let value, length > 0, length <= Int(Int32.max) else { return false }
        // The value's length as Kafka writes it: zigzag (2n for n ≥ 0), then 7 bits a byte,
        // least significant first, every byte but the last with its top bit set.
        let zigzag = UInt64(length) << 1
        var count = 1
        while zigzag >> (7 * UInt64(count)) != 0 { count += 1 }
        let start = value - count
        for index in 0..<count {
            var byte = UInt8(truncatingIfNeeded: (zigzag >> (7 * UInt64(index))) & 0x7F)
            if index < count - 1 { byte |= 0x80 }
            guard start.load(fromByteOffset: index, as: UInt8.self) == byte else { return false }
        }
        if let key {
            // An empty key may point elsewhere (librdkafka gives it a constant empty string).
            guard keyLength > 0, key + keyLength == start else { return false }
        } else {
            // A null key's length, −1, is the varint 0x01.
            guard start.load(fromByteOffset: -1, as: UInt8.self) == 0x01 else { return false }
        }
        // The header count: 0 is the single byte 0x00.
        return value.load(fromByteOffset: length, as: UInt8.self) == 0
    }
}
