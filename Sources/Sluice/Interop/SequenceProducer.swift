//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// A producer that emits the elements of a sequence on demand, then ends normally.
///
/// ```swift
/// let numbers = try await (1...1_000).startProducer()
/// ```
public struct SequenceProducer<Base: Sequence>: Producer where Base.Element: Sendable {
    public typealias Output = Base.Element

    private var iterator: Base.Iterator

    /// Creates a producer of `base`'s elements.
    public init(_ base: Base) {
        self.iterator = base.makeIterator()
    }

    /// Emits up to `demand` elements; ends normally after the last one.
    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        var batch: [Output] = []
        batch.reserveCapacity(min(demand, 65_536))
        while batch.count < demand {
            guard let element = self.iterator.next() else {
                if !batch.isEmpty { context.emit(batch) }
                context.stop(.normal)
                return
            }
            batch.append(element)
        }
        context.emit(batch)
    }
}

extension Sequence where Self: Sendable, Element: Sendable {
    /// Starts a producer that emits this sequence's elements on demand and ends normally after
    /// the last one.
    public func startProducer(
        options: StageOptions<Element> = .init()
    ) async throws -> StageHandle<SequenceProducer<Self>> {
        try await StageHandle.start(SequenceProducer(self), options: options)
    }
}
