//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice
import SluiceTestKit
import Synchronization
import Testing


struct Boom: Error, Equatable {
    var id = 0
}

/// A thread-safe recorder for handler observations.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { self.values.withLock { $0.append(value) } }
    var all: [Value] { self.values.withLock { $0 } }
    var count: Int { self.values.withLock { $0.count } }
}

func payloads(_ count: Int, prefix: String = "m") -> [[UInt8]] {
    (0..<count).map { Array("\(prefix)\($0)".utf8) }
}
