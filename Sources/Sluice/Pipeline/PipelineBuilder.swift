//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The processors of a pipeline: `concurrency` stages that each run `handler` for one message
/// at a time.
///
/// With `partitionBy`, messages with equal keys always go to the same processor, so they are
/// handled one after the other and in order, while different keys run in parallel.
public struct Processors<Metadata: Sendable>: Sendable {
    /// How many processor stages run.
    public var concurrency: Int
    /// Each processor's maximum demand.
    public var maxDemand: Int
    /// Each processor's minimum demand (`nil`: `maxDemand / 2`).
    public var minDemand: Int?
    @usableFromInline
    let partition: (@Sendable (Message<Metadata>) -> Int)?
    @usableFromInline
    let handler: MessageHandler<Metadata>

    /// Creates processors.
    ///
    /// - Parameters:
    ///   - concurrency: How many processors run; defaults to the number of cores.
    ///   - maxDemand: How many messages each processor asks for at most.
    ///   - minDemand: When a processor re-asks; `nil` for `maxDemand / 2`.
    ///   - handler: Handles one message; throwing (or ``Message/fail(_:disposition:)``) fails it.
    public init(
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        handler: nonisolated(nonsending) @escaping @Sendable (inout Message<Metadata>) async throws -> Void
    ) {
        self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partition: nil, handler: .async(handler))
    }

    /// Creates processors that keep messages with equal `partitionBy` keys in order.
    @inlinable
    public init<Key: Hashable & SendableMetatype>(
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        partitionBy key: @escaping @Sendable (Message<Metadata>) -> Key,
        handler: nonisolated(nonsending) @escaping @Sendable (inout Message<Metadata>) async throws -> Void
    ) {
        self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partition: { message in key(message).hashValue }, handler: .async(handler))
    }

    /// Creates processors that send each message to processor number `processor(message)`
    /// modulo `concurrency`, keeping the messages sent to one processor in order.
    ///
    /// `partitionBy` hashes its keys with the process's random seed, so which keys share a
    /// processor changes from run to run. This routing is the same in every run: use it when
    /// the key is already a small number that should spread evenly, such as a Kafka partition.
    /// A negative number is taken by its bit pattern.
    @inlinable
    public init(
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        processor: @escaping @Sendable (Message<Metadata>) -> Int,
        handler: nonisolated(nonsending) @escaping @Sendable (inout Message<Metadata>) async throws -> Void
    ) {
        self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partition: processor, handler: .async(handler))
    }

    /// Creates processors with a synchronous handler.
    ///
    /// A handler that never suspends (parsing, transforming, routing) is called directly, without
    /// the suspension point and task-frame allocation an `async` call costs per message. A closure
    /// without `await` picks this initializer.
    ///
    /// - Parameters:
    ///   - concurrency: How many processors run; defaults to the number of cores.
    ///   - maxDemand: How many messages each processor asks for at most.
    ///   - minDemand: When a processor re-asks; `nil` for `maxDemand / 2`.
    ///   - handler: Handles one message; throwing (or ``Message/fail(_:disposition:)``) fails it.
    public init(
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        handler: @escaping @Sendable (inout Message<Metadata>) throws -> Void
    ) {
        // Same parameters as the async init above: a closure without `await` picks this overload, so
        // each handler kind needs its own public init; both forward to the internal init.
        self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partition: nil, handler: .sync(handler))
    }

    /// Creates processors with a synchronous handler that keep messages with equal
    /// `partitionBy` keys in order.
    @inlinable
    public init<Key: Hashable & SendableMetatype>(
        concurrency: Int = StageExecutor.defaultThreadCount,
        maxDemand: Int = 10,
        minDemand: Int? = nil,
        partitionBy key: @escaping @Sendable (Message<Metadata>) -> Key,
        handler: @escaping @Sendable (inout Message<Metadata>) throws -> Void
    ) {
        // The synchronous twin of the async partitionBy init above, for the same overload reason.
        self.init(concurrency: concurrency, maxDemand: maxDemand, minDemand: minDemand, partition: { message in key(message).hashValue }, handler: .sync(handler))
    }

    @usableFromInline
    init(
        concurrency: Int,
        maxDemand: Int,
        minDemand: Int?,
        partition: (@Sendable (Message<Metadata>) -> Int)?,
        handler: MessageHandler<Metadata>
    ) {
        self.concurrency = concurrency
        self.maxDemand = maxDemand
        self.minDemand = minDemand
        self.partition = partition
        self.handler = handler
    }

    @usableFromInline
    func validate() throws(SluiceError) {
        guard self.concurrency >= 1 else { throw .invalidOption("processors.concurrency", self.concurrency, "must be 1 or more") }
        try SubscriptionOptions<Int>(maxDemand: self.maxDemand, minDemand: self.minDemand).validate()
    }
}

/// A processor's per-message handler: called directly when it is synchronous.
@usableFromInline
enum MessageHandler<Metadata: Sendable>: Sendable {
    @usableFromInline
    typealias Async = nonisolated(nonsending) @Sendable (inout Message<Metadata>) async throws -> Void
    case sync(@Sendable (inout Message<Metadata>) throws -> Void)
    case async(Async)
}

/// A batcher: groups processed messages into batches of up to `size` (or whatever arrived
/// within `timeout`), by batch key, and runs `handler` on each batch in one of `concurrency`
/// batch processors.
public struct Batcher<Metadata: Sendable>: Sendable {
    /// The batcher's name; processors route messages with ``Message/batcher``.
    public var name: String
    /// The most messages in a batch.
    public var size: Int
    /// How long a batch may wait to fill before it is handled anyway.
    public var timeout: Duration
    /// How many batch processors run this batcher's handler in parallel.
    public var concurrency: Int
    @usableFromInline
    let key: (@Sendable (Message<Metadata>) -> String?)?
    @usableFromInline
    let handler: nonisolated(nonsending) @Sendable (inout [Message<Metadata>]) async throws -> Void

    /// Creates a batcher.
    ///
    /// - Parameters:
    ///   - name: The name processors route to; the first batcher also takes unrouted messages.
    ///   - size: The most messages in a batch.
    ///   - timeout: How long a partial batch waits.
    ///   - concurrency: Batch processors running the handler.
    ///   - batchKey: Groups messages into separate batches (``Message/batchKey`` wins if set).
    ///   - handler: Handles a batch; throwing fails every message of it, and it may mark single
    ///     messages failed with ``Message/fail(_:disposition:)``.
    public init(
        _ name: String = "default",
        size: Int = 100,
        timeout: Duration = .seconds(1),
        concurrency: Int = 1,
        batchKey: (@Sendable (Message<Metadata>) -> String?)? = nil,
        handler: nonisolated(nonsending) @escaping @Sendable (inout [Message<Metadata>]) async throws -> Void
    ) {
        // Field by field (no public memberwise init is synthesized); SubscriptionInfo.init only
        // shares the shape.
        self.name = name
        self.size = size
        self.timeout = timeout
        self.concurrency = concurrency
        self.key = batchKey
        self.handler = handler
    }

    @usableFromInline
    func validate() throws(SluiceError) {
        guard !self.name.isEmpty else { throw .invalidOption("batcher.name", "\"\"", "must not be empty") }
        guard self.size >= 1 else { throw .invalidOption("batcher(\(self.name)).size", self.size, "must be 1 or more") }
        guard self.timeout > .zero else {
            throw .invalidOption("batcher(\(self.name)).timeout", self.timeout, "must be positive")
        }
        guard self.concurrency >= 1 else {
            throw .invalidOption("batcher(\(self.name)).concurrency", self.concurrency, "must be 1 or more")
        }
    }
}

/// The stages of a pipeline, as written in its builder: its ``Processors`` and its
/// ``Batcher``s.
public struct PipelineComponents<Metadata: Sendable>: Sendable {
    @usableFromInline
    var processors: [Processors<Metadata>] = []
    @usableFromInline
    var batchers: [Batcher<Metadata>] = []

    @usableFromInline
    init(processors: [Processors<Metadata>] = [], batchers: [Batcher<Metadata>] = []) {
        self.processors = processors
        self.batchers = batchers
    }
}

/// Batchers written in a pipeline's builder before (or without) its ``Processors``: not yet a
/// pipeline, so a builder that ends with only these does not compile.
public struct PipelineBatchers<Metadata: Sendable>: Sendable {
    @usableFromInline
    var batchers: [Batcher<Metadata>]

    @usableFromInline
    init(_ batchers: [Batcher<Metadata>]) {
        self.batchers = batchers
    }
}

/// Builds a pipeline's topology: exactly one ``Processors`` and any number of ``Batcher``s.
///
/// The shape is checked by the types, as Hummingbird's route builder checks that a route ends
/// in a handler: a builder without `Processors`, or with two, does not compile. The partial
/// results are ``PipelineBatchers`` (no processors yet) and ``PipelineComponents`` (the
/// processors are in); adding processors to the latter is unavailable. `Processors` inside an
/// `if` may be left out when the program runs, so ``Pipeline/validate()`` still checks the count
/// when ``Pipeline/run()`` starts.
@resultBuilder
public enum PipelineBuilder<Metadata: Sendable> {
    /// Adds the pipeline's processors.
    public static func buildExpression(_ processors: Processors<Metadata>) -> PipelineComponents<Metadata> {
        PipelineComponents(processors: [processors])
    }

    /// Adds a batcher.
    public static func buildExpression(_ batcher: Batcher<Metadata>) -> PipelineBatchers<Metadata> {
        PipelineBatchers([batcher])
    }

    /// A pipeline with nothing in it does not compile.
    @available(*, unavailable, message: "a pipeline needs one Processors component")
    public static func buildBlock() -> PipelineComponents<Metadata> {
        fatalError("unavailable")
    }

    /// Starts the topology with its processors.
    public static func buildPartialBlock(first: PipelineComponents<Metadata>) -> PipelineComponents<Metadata> {
        first
    }

    /// Starts the topology with batchers (processors must follow).
    public static func buildPartialBlock(first: PipelineBatchers<Metadata>) -> PipelineBatchers<Metadata> {
        first
    }

    /// Adds batchers after the processors.
    public static func buildPartialBlock(
        accumulated: PipelineComponents<Metadata>,
        next: PipelineBatchers<Metadata>
    ) -> PipelineComponents<Metadata> {
        PipelineComponents(processors: accumulated.processors, batchers: accumulated.batchers + next.batchers)
    }

    /// Adds batchers to batchers.
    public static func buildPartialBlock(
        accumulated: PipelineBatchers<Metadata>,
        next: PipelineBatchers<Metadata>
    ) -> PipelineBatchers<Metadata> {
        PipelineBatchers(accumulated.batchers + next.batchers)
    }

    /// Adds the processors after batchers.
    public static func buildPartialBlock(
        accumulated: PipelineBatchers<Metadata>,
        next: PipelineComponents<Metadata>
    ) -> PipelineComponents<Metadata> {
        PipelineComponents(processors: next.processors, batchers: accumulated.batchers + next.batchers)
    }

    /// A second `Processors` does not compile.
    @available(*, unavailable, message: "a pipeline has exactly one Processors component; raise its concurrency instead")
    public static func buildPartialBlock(
        accumulated: PipelineComponents<Metadata>,
        next: PipelineComponents<Metadata>
    ) -> PipelineComponents<Metadata> {
        fatalError("unavailable")
    }

    /// Batchers inside `if` (none when the condition is false).
    public static func buildOptional(_ component: PipelineBatchers<Metadata>?) -> PipelineBatchers<Metadata> {
        component ?? PipelineBatchers([])
    }

    /// Processors inside `if`: left out when the condition is false, which
    /// ``Pipeline/validate()`` rejects when the pipeline starts.
    public static func buildOptional(_ component: PipelineComponents<Metadata>?) -> PipelineComponents<Metadata> {
        component ?? PipelineComponents()
    }

    /// The component of the first branch of an `if`/`else` or `switch` (both branches have
    /// the processors, or neither).
    public static func buildEither<Component>(first component: Component) -> Component {
        component
    }

    /// The component of the second branch of an `if`/`else` or `switch`.
    public static func buildEither<Component>(second component: Component) -> Component {
        component
    }

    /// Batchers made by a `for` loop (processors cannot be: there is one).
    public static func buildArray(_ components: [PipelineBatchers<Metadata>]) -> PipelineBatchers<Metadata> {
        PipelineBatchers(components.flatMap(\.batchers))
    }

    /// The finished topology.
    public static func buildFinalResult(_ component: PipelineComponents<Metadata>) -> PipelineComponents<Metadata> {
        component
    }

    /// Batchers without processors do not compile.
    @available(*, unavailable, message: "a pipeline needs one Processors component")
    public static func buildFinalResult(_ component: PipelineBatchers<Metadata>) -> PipelineComponents<Metadata> {
        fatalError("unavailable")
    }
}
