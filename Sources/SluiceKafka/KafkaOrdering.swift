//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Sluice

/// Which messages of a ``KafkaSource`` its processors handle one after the other.
///
/// A source emits the messages of each partition in offset order; the ordering decides how
/// the processors may spread them:
///
/// - ``perPartition`` (Kafka's usual guarantee, and the one to choose unless you know better):
///   the messages of one partition go to one processor, so they are handled serially and in
///   offset order; different partitions run in parallel. More processors than partitions
///   leaves some idle.
/// - ``perKey``: the messages of one key go to one processor, serially and in offset order;
///   different keys, also of one partition, run in parallel, so concurrency can exceed the
///   partition count. Messages without a key are ordered per partition.
/// - ``none``: any processor takes any message; every processor is used, and nothing is
///   ordered (commits stay correct: only the contiguous settled prefix is committed).
///
/// ```swift
/// Pipeline("orders", source: KafkaSource(configuration: configuration)) {
///     Processors(ordering: .perKey, concurrency: 8, maxDemand: 100) { message in try handle(message) }
/// }
/// ```
public struct KafkaOrdering: Hashable, Sendable, CustomStringConvertible {
    // Same extensible-enum shape as KafkaConfiguration.OffsetReset (STYLE habit 7).
    fileprivate enum Base: String, Hashable, Sendable { case perPartition, perKey, none }
    fileprivate let base: Base
    private init(_ base: Base) { self.base = base }

    /// One partition's messages serially, in offset order (the default for Kafka).
    public static let perPartition = KafkaOrdering(.perPartition)
    /// One key's messages serially, in offset order; keyless messages per partition.
    public static let perKey = KafkaOrdering(.perKey)
    /// No order: every processor takes any message.
    public static let none = KafkaOrdering(.none)

    /// The ordering's name: `perPartition`, `perKey` or `none`.
    public var description: String { self.base.rawValue }
}

/// The key processors are partitioned by under ``KafkaOrdering/perKey``.
struct KafkaOrderingKey: Hashable, Sendable {
    /// The interned topic's identity: hashed per message, as cheap as an integer (its name's
    /// characters would be hashed every time).
    var topic: ObjectIdentifier
    var partition: Int32
    var key: Payload?
}

extension Processors where Metadata == KafkaMetadata {
    /// Creates processors for a ``KafkaSource`` that keep the messages `ordering` names in
    /// order, handling them one after the other.
    ///
    /// - Parameters:
    ///   - ordering: ``KafkaOrdering/perPartition`` (Kafka's usual guarantee),
    ///     ``KafkaOrdering/perKey`` or ``KafkaOrdering/none``.
    ///   - concurrency: How many processors run; defaults to the number of cores.
    ///   - maxDemand: How many messages each processor asks for at most.
    ///   - minDemand: When a processor re-asks; `nil` for `maxDemand / 2`.
    ///   - handler: Handles one message; throwing (or ``Message/fail(_:disposition:)``) fails it.
    public init(
        ordering: KafkaOrdering,
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        handler: nonisolated(nonsending) @escaping @Sendable (inout Message<KafkaMetadata>) async throws -> Void
    ) {
        switch ordering.base {
        case .perPartition:
            // By partition number, not by a hash: with as many processors as partitions, each
            // partition gets its own processor in every run (partition i of every topic goes to
            // processor i modulo `concurrency`).
            self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, processor: { Int($0.metadata.partition) }, handler: handler)
        case .perKey:
            // Keyless messages are ordered per partition; keyed ones per key, across partitions.
            self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partitionBy: { message in
                let metadata = message.metadata
                return KafkaOrderingKey(topic: ObjectIdentifier(metadata.topicName), partition: metadata.key == nil ? metadata.partition : -1, key: metadata.key)
            }, handler: handler)
        case .none:
            self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, handler: handler)
        }
    }
}
