//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Foundation

extension Message {
    /// Decodes the payload as JSON.
    ///
    /// - Throws: ``DecodingFailure`` naming the type and the decoder's complaint; thrown from a
    ///   handler it fails the message (it never crashes the pipeline).
    public func decode<Value: Decodable>(
        _ type: Value.Type = Value.self,
        using decoder: JSONDecoder = JSONDecoder()
    ) throws(DecodingFailure) -> Value {
        do {
            return try decoder.decode(type, from: Data(self.payload))
        } catch {
            throw DecodingFailure("payload is not a valid JSON \(Value.self): \(error)")
        }
    }

    /// Replaces the payload with `value` encoded as JSON.
    public mutating func encode<Value: Encodable>(_ value: Value, using encoder: JSONEncoder = JSONEncoder()) throws {
        self.payload = Payload(Array(try encoder.encode(value)))
    }
}

/// A payload's bytes can go wherever Foundation takes contiguous bytes (`Data(payload)`,
/// digests, `JSONDecoder` through `Data`).
extension Payload: ContiguousBytes {}
