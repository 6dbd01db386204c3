//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice

/// A Redis command's arguments, stored back to back in one byte buffer (binary safe; sent
/// with `redisCommandArgv` / `redisAppendCommandArgv`, never through a format string).
struct RedisCommand: Sendable {
    private var storage: [UInt8] = []
    private var ends: [Int] = []
    /// The command's name, for error texts.
    let name: String

    /// Starts a command; `name` is its first argument.
    init(_ name: String) {
        self.name = name
        self.append(name)
    }

    /// A command of `name` and text `arguments`.
    init(_ name: String, _ arguments: String...) {
        self.init(name)
        for argument in arguments { self.append(argument) }
    }

    /// Reserves room for `arguments` more arguments of about `bytes` bytes in total.
    mutating func reserve(arguments: Int, bytes: Int) {
        self.storage.reserveCapacity(self.storage.count + bytes)
        self.ends.reserveCapacity(self.ends.count + arguments)
    }

    /// The number of arguments, the name included.
    var argumentCount: Int { self.ends.count }

    mutating func append(_ text: String) {
        self.storage.append(contentsOf: text.utf8)
        self.ends.append(self.storage.count)
    }

    mutating func append(_ bytes: [UInt8]) {
        self.storage.append(contentsOf: bytes)
        self.ends.append(self.storage.count)
    }

    mutating func append(_ payload: Payload) {
        payload.withUnsafeBytes { self.storage.append(contentsOf: $0) }
        self.ends.append(self.storage.count)
    }

    /// Appends a stream entry id as `ms-seq` without building a string.
    mutating func append(_ id: RedisEntryID) {
        self.appendDigits(id.milliseconds)
        self.storage.append(UInt8(ascii: "-"))
        self.appendDigits(id.sequence)
        self.ends.append(self.storage.count)
    }

    private mutating func appendDigits(_ value: UInt64) {
        if value == 0 {
            self.storage.append(UInt8(ascii: "0"))
            return
        }
        var divisor: UInt64 = 1
        while divisor <= value / 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            self.storage.append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }

    mutating func append(_ number: Int) {
        self.append(String(number))
    }

    /// Calls `body` with `argc`, `argv` and the argument lengths, valid during the call.
    func withArgv<R>(
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        let count = self.ends.count
        return self.storage.withUnsafeBufferPointer { bytes in
            // An empty buffer may have no base address; any valid pointer does for 0 bytes.
            let base = UnsafeRawPointer(bytes.baseAddress) ?? UnsafeRawPointer(bitPattern: 1)!
            return withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { lengths in
                    var start = 0
                    for index in 0..<count {
                        let end = self.ends[index]
                        argv[index] = (base + start).assumingMemoryBound(to: CChar.self)
                        lengths[index] = end - start
                        start = end
                    }
                    return body(Int32(count), argv.baseAddress!, UnsafePointer(lengths.baseAddress!))
                }
            }
        }
    }
}
