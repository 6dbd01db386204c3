//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// Settles messages with the broker: what a source implements so the pipeline can acknowledge.
///
/// The pipeline calls ``settle(_:)`` exactly once for every message the source emitted, after
/// the last stage that handles it is done with it, in batches (one call per handled slice or
/// batch, never one per message). Implementations must not block: hand the work to the
/// connection's own thread or task and return.
public protocol Acknowledger<Metadata>: Sendable {
    /// The metadata of the source's messages.
    associatedtype Metadata: Sendable

    /// Settles a batch: acknowledge ``Settlement/acknowledged``, and route each failed message
    /// by its disposition.
    func settle(_ settlement: Settlement<Metadata>)
}

/// Messages whose processing ended, with how each ended.
public struct Settlement<Metadata: Sendable>: Sendable {
    /// Messages processed successfully: acknowledge them.
    public var acknowledged: [Message<Metadata>]
    /// Messages that failed for good, with their disposition.
    public var failed: [(message: Message<Metadata>, disposition: FailureDisposition)]

    /// Creates a settlement.
    @inlinable
    public init(
        acknowledged: [Message<Metadata>] = [],
        failed: [(message: Message<Metadata>, disposition: FailureDisposition)] = []
    ) {
        self.acknowledged = acknowledged
        self.failed = failed
    }

    /// Whether there is nothing to settle.
    @inlinable
    public var isEmpty: Bool { self.acknowledged.isEmpty && self.failed.isEmpty }

    /// How many messages this settles.
    @inlinable
    public var count: Int { self.acknowledged.count + self.failed.count }
}
