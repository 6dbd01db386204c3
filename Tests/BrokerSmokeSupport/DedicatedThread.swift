//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation

/// Runs blocking C client calls on a thread of their own, so that they never occupy one of the
/// few threads of Swift's cooperative pool (two on a two-core machine) while they wait on the
/// network. The result comes back to the awaiting task.
package func onDedicatedThread<Value: Sendable>(
    named name: String,
    _ body: @escaping @Sendable () throws -> Value
) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.name = name
        thread.start()
    }
}

/// Carries a C handle to another thread.
///
/// `@unchecked Sendable` is sound because the smoke tests hand a handle over only to make one
/// call on it (closing a Kafka consumer under a deadline) while the owning thread waits and
/// makes no call of its own on that handle afterwards: it destroys the handle once the other
/// thread has finished, or gives it up for good when the deadline passes first.
package struct SendableOpaquePointer: @unchecked Sendable {
    package let pointer: OpaquePointer

    package init(pointer: OpaquePointer) { self.pointer = pointer }
}
