//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
import Synchronization

/// A lazy, concurrent computation over a collection or a stream, run on stages.
///
/// A flow is a description: nothing runs until ``collect()`` or ``emit(_:)``. It is made of
/// *phases*. The first phase's stages take the source's events by demand; ``map(_:)``,
/// ``filter(_:)``, ``flatMap(_:)`` and ``reduce(into:window:_:)`` are fused into the phase
/// they follow, so each stage runs them one after the other on every event, without passing
/// events between stages. ``partition(stages:maxDemand:by:)`` starts a new phase whose stages
/// each take one partition of a key's hash, so equal keys meet in the same stage;
/// ``merge(stages:maxDemand:)`` starts one whose stages take from all stages before them.
/// Events move between stages in batches under demand, like every other stage exchange.
///
/// Counting words, first in each stage of the reading phase, then merged by word:
///
/// ```swift
/// let counts = try await Flow.lines(ofFile: "big.txt")
///     .words()
///     .reduceByKey(key: { $0 }, value: { _ in 1 }, +=)     // per stage
///     .partition { $0.key }                                 // equal words meet
///     .reduceByKey(key: { $0.key }, value: { $0.value }, +=)
///     .collect()
/// ```
///
/// Results come in no particular order. A reducing stage keeps its own accumulator and emits
/// it when its ``FlowWindow`` says so: by default when the input ends.
public struct Flow<Element: Sendable>: Sendable {
    @usableFromInline
    let plan: any FlowPlan<Element>

    @inlinable
    init(plan: any FlowPlan<Element>) {
        self.plan = plan
    }

    /// The stage count a phase has unless told otherwise: one per active processor.
    public static var defaultStageCount: Int { StageExecutor.defaultThreadCount }

    /// The demand a phase's stages ask for unless told otherwise.
    public static var defaultMaxDemand: Int { 1000 }

    // MARK: Sources

    /// A flow over the elements of `sequence`, read by one producer and handled by `stages`
    /// stages (1...1024), each asking for up to `maxDemand` elements at a time.
    @inlinable
    public static func from<S: Sequence & Sendable>(
        _ sequence: S,
        stages: Int = Flow.defaultStageCount,
        maxDemand: Int = Flow.defaultMaxDemand
    ) -> Flow where S.Element == Element {
        Flow.source(.source { SequenceProducer(sequence) }, stages: stages, maxDemand: maxDemand)
    }

    // Same parameters as the Sequence overload above: a Sequence and an AsyncSequence need different
    // producers (SequenceProducer, AsyncSequenceProducer), and the pipeline-source overload below
    // a third; each forwards to Flow.source.
    /// A flow over the elements of `sequence`, pulled only as the stages ask for them. An error
    /// the sequence throws ends the flow with that error.
    @inlinable
    public static func from<S: AsyncSequence & Sendable>(
        _ sequence: S,
        stages: Int = Flow.defaultStageCount,
        maxDemand: Int = Flow.defaultMaxDemand
    ) -> Flow where S.Element == Element {
        Flow.source(.source { AsyncSequenceProducer(sequence) }, stages: stages, maxDemand: maxDemand)
    }

    /// A flow over the events of a pipeline source (a broker connector), each one
    /// acknowledged once the first phase's operations have run on it.
    ///
    /// The source is connected when the flow runs and shut down when it ends. The flow ends
    /// only when the source's stage ends (a source is usually infinite: use a window or a
    /// trigger to see results while it runs).
    @inlinable
    public static func from<Source: PipelineSource>(
        source: Source,
        stages: Int = Flow.defaultStageCount,
        maxDemand: Int = Flow.defaultMaxDemand
    ) -> Flow where Element == Message<Source.Metadata> {
        let inlet = FlowInlet<Element> { run in
            let parts = try await source.makeParts(
                context: SourceContext(pipelineName: "flow", window: stages * maxDemand, logger: Logger.current)
            )
            let acknowledger = parts.acknowledger
            let handle = try await StageHandle.start(
                parts.stage,
                options: StageOptions(name: "flow-source", demandMode: .accumulate)
            )
            run.holdUntilWired(handle)
            run.onEnd { await source.shutdown(acknowledger) }
            return FlowUpstream(producers: [handle.producer], partitioned: false) { messages in
                acknowledger.settle(Settlement(acknowledged: messages))
            }
        }
        return Flow.source(inlet, stages: stages, maxDemand: maxDemand)
    }

    @inlinable
    static func source(_ inlet: FlowInlet<Element>, stages: Int, maxDemand: Int) -> Flow {
        Flow(
            plan: FlowPhase<Element, Element>(
                inlet: inlet,
                ops: .identity,
                stages: stages,
                demand: FlowDemand(maxDemand: maxDemand, minDemand: nil)
            )
        )
    }

    // MARK: Operations fused into the current phase

    /// Transforms each element.
    @inlinable
    public func map<T: Sendable>(_ transform: @escaping @Sendable (Element) -> T) -> Flow<T> {
        self.appending { downstream in
            FlowLane(passingTo: downstream) { element in downstream.push(transform(element)) }
        }
    }

    /// Keeps the elements for which `isIncluded` is true.
    @inlinable
    public func filter(_ isIncluded: @escaping @Sendable (Element) -> Bool) -> Flow {
        self.appending { downstream in
            FlowLane(passingTo: downstream) { element in
                if isIncluded(element) { downstream.push(element) }
            }
        }
    }

    /// Replaces each element with the elements of the sequence `transform` returns.
    @inlinable
    public func flatMap<S: Sequence>(_ transform: @escaping @Sendable (Element) -> S) -> Flow<S.Element>
    where S.Element: Sendable {
        self.appending { downstream in
            FlowLane(passingTo: downstream) { element in
                for item in transform(element) { downstream.push(item) }
            }
        }
    }

    @inlinable
    func appending<T: Sendable>(_ makeLane: @escaping @Sendable (FlowLane<T>) -> FlowLane<Element>) -> Flow<T> {
        Flow<T>(plan: self.plan.appending(FlowOps { downstream, _ in makeLane(downstream) }))
    }

    // MARK: Reducing

    /// Folds the elements each stage of the current phase receives into an accumulator that
    /// starts as `initial`, and emits the accumulator when `window` says so (by default once,
    /// when the input ends). Each stage of the phase emits its own accumulator; to combine
    /// them, partition or merge and reduce again.
    @inlinable
    public func reduce<Accumulator: Sendable>(
        into initial: Accumulator,
        window: FlowWindow = .global,
        _ combine: @escaping @Sendable (inout Accumulator, Element) -> Void
    ) -> Flow<Accumulator> {
        Flow<Accumulator>(
            plan: self.plan.validating { try window.validate() }.appending(
                FlowOps<Element, Accumulator>.reducing(
                    window: window,
                    initial: { initial },
                    combine: combine,
                    output: { accumulator, emit in emit(accumulator) }
                )
            )
        )
    }

    /// Groups the elements each stage of the current phase receives by `key`, combining the
    /// `value`s of equal keys with `combine` (the first value of a key is taken as it is), and
    /// emits every key with its combined value when `window` says so.
    ///
    /// Equal keys are combined only within one stage: put a ``partition(stages:maxDemand:by:)``
    /// on the same key before this (or after it, followed by a second `reduceByKey`) to have
    /// one result per key.
    @inlinable
    public func reduceByKey<Key: Hashable & Sendable, Value: Sendable>(
        window: FlowWindow = .global,
        key: @escaping @Sendable (Element) -> Key,
        value: @escaping @Sendable (Element) -> Value,
        _ combine: @escaping @Sendable (inout Value, Value) -> Void
    ) -> Flow<(key: Key, value: Value)> {
        Flow<(key: Key, value: Value)>(
            plan: self.plan.validating { try window.validate() }.appending(
                FlowOps<Element, (key: Key, value: Value)>.reducing(
                    window: window,
                    initial: { [Key: Value]() },
                    combine: { groups, element in
                        let key = key(element)
                        let value = value(element)
                        if let index = groups.index(forKey: key) {
                            combine(&groups.values[index], value)
                        } else {
                            groups[key] = value
                        }
                    },
                    output: { groups, emit in
                        for (key, value) in groups { emit((key: key, value: value)) }
                    }
                )
            )
        )
    }

    // MARK: New phases

    /// Starts a new phase of `stages` stages (1...1024): each element goes to the stage chosen
    /// by the hash of its `key`, so elements with equal keys meet in the same stage.
    @inlinable
    public func partition<Key: Hashable & SendableMetatype>(
        stages: Int = Flow.defaultStageCount,
        maxDemand: Int = Flow.defaultMaxDemand,
        by key: @escaping @Sendable (Element) -> Key
    ) -> Flow {
        let plan = self.plan
        let inlet = FlowInlet<Element> { run in
            let partitions = UInt(stages)
            let dispatcher = Dispatcher<Element>.partition(count: stages) { element in
                .index(Int(UInt(bitPattern: key(element).hashValue) % partitions))
            }
            let producers = try await plan.start(in: run, dispatcher: dispatcher)
            return FlowUpstream(producers: producers, partitioned: true)
        }
        return Flow.source(inlet, stages: stages, maxDemand: maxDemand)
    }

    /// Starts a new phase of `stages` stages (1...1024), each taking elements by demand from
    /// every stage of the current phase: merges partitions back together.
    @inlinable
    public func merge(stages: Int = 1, maxDemand: Int = Flow.defaultMaxDemand) -> Flow {
        let plan = self.plan
        let inlet = FlowInlet<Element> { run in
            FlowUpstream(producers: try await plan.start(in: run, dispatcher: nil), partitioned: false)
        }
        return Flow.source(inlet, stages: stages, maxDemand: maxDemand)
    }

    // MARK: Running

    /// Runs the flow and hands every batch its last phase emits to `body`, one batch at a time
    /// (from one stage that takes from all of the last phase's stages); returns when every
    /// stage ended.
    ///
    /// - Throws: ``SluiceError`` (``SluiceError/Code-swift.struct/invalidOption``) for a stage
    ///   count, demand or window out of range, before anything runs; the source's error (for
    ///   example a ``FlowError`` for a file that cannot be read); or the error `body` threw.
    ///   Every stage of the flow has ended when this throws.
    @inlinable
    public func emit(_ body: @escaping @Sendable ([Element]) async throws -> Void) async throws {
        let run = FlowRun()
        do {
            let producers = try await self.plan.start(in: run, dispatcher: nil)
            let collector = try await StageHandle.start(
                FlowCollector(upstreamCount: producers.count, body: body),
                options: StageOptions(name: "flow-collector"),
                subscribeTo: producers.map { SubscribeTo($0, options: SubscriptionOptions(cancel: .temporary)) }
            )
            run.register(collector)
            run.release()
            let reason = await withTaskCancellationHandler {
                await collector.waitForTermination()
            } onCancel: {
                Task { await run.killAll() }
            }
            guard reason.isNormalOrShutdown else {
                throw reason.error ?? SluiceError(.stageEnded, "the flow was stopped (\(reason))")
            }
            await run.finish()
        } catch {
            await run.killAll()
            await run.finish()
            throw error
        }
    }

    /// Runs the flow and returns everything its last phase emitted, in no particular order.
    ///
    /// - Throws: As ``emit(_:)``.
    @inlinable
    public func collect() async throws -> [Element] {
        let results = FlowResults<Element>()
        try await self.emit { batch in results.append(batch) }
        return results.take()
    }
}

extension Flow where Element: Hashable & SendableMetatype {
    /// Counts equal elements: each stage of the current phase counts what it receives, then the
    /// counts are partitioned by element over `stages` stages (1...1024) and added up, so each
    /// element comes out once, with its total.
    ///
    /// ```swift
    /// let counts = try await Flow.lines(ofFile: "big.txt").words().frequencies().collect()
    /// ```
    @inlinable
    public func frequencies(stages: Int = Flow.defaultStageCount) -> Flow<(key: Element, value: Int)> {
        // The per-element count is `reduceByKey(key: { $0 }, value: { _ in 1 }, +=)` without its
        // closure calls per element: this is the hot loop of a word count.
        let counted = Flow<(key: Element, value: Int)>(
            plan: self.plan.appending(
                FlowOps<Element, (key: Element, value: Int)>.reducing(
                    window: .global,
                    initial: { [Element: Int]() },
                    combiner: FlowCounter<Element>(),
                    output: { counts, emit in
                        for (key, value) in counts { emit((key: key, value: value)) }
                    }
                )
            )
        )
        return counted.partition(stages: stages) { $0.key }.reduceByKey(key: { $0.key }, value: { $0.value }, +=)
    }
}

extension Flow where Element == TextLine {
    /// A flow over the lines of `paths`, read one file after the other in chunks of about
    /// `chunkSize` bytes (4 KiB...64 MiB) with POSIX reads and split on newline bytes by the
    /// `stages` stages (1...1024) that take the chunks, at most four each at a time.
    @inlinable
    public static func lines(
        ofFiles paths: [String],
        chunkSize: Int = FileChunks.defaultChunkSize,
        stages: Int = Flow.defaultStageCount
    ) -> Flow {
        Flow.lines(of: .source { AsyncSequenceProducer(try FileChunks(paths: paths, chunkSize: chunkSize)) }, stages: stages)
    }

    /// A flow over the lines of the file at `path`; see ``lines(ofFiles:chunkSize:stages:)``.
    @inlinable
    public static func lines(
        ofFile path: String,
        chunkSize: Int = FileChunks.defaultChunkSize,
        stages: Int = Flow.defaultStageCount
    ) -> Flow {
        Flow.lines(ofFiles: [path], chunkSize: chunkSize, stages: stages)
    }

    /// A flow over the lines of text held in memory, cut into chunks of about `chunkSize`
    /// bytes (4 KiB...64 MiB) at newlines.
    @inlinable
    public static func lines(
        inText text: [UInt8],
        chunkSize: Int = FileChunks.defaultChunkSize,
        stages: Int = Flow.defaultStageCount
    ) -> Flow {
        Flow.lines(of: .source { SequenceProducer(try TextChunk.chunks(of: text, chunkSize: chunkSize)) }, stages: stages)
    }

    @inlinable
    static func lines(of chunks: FlowInlet<TextChunk>, stages: Int) -> Flow {
        Flow(
            plan: FlowPhase<TextChunk, TextLine>(
                inlet: chunks,
                ops: FlowOps { downstream, _ in
                    FlowLane(passingTo: downstream) { chunk in chunk.forEachLine(downstream.push) }
                },
                stages: stages,
                demand: FlowDemand(maxDemand: 4, minDemand: 2, givesWay: true)
            )
        )
    }

    /// Splits each line into its words (see ``TextLine/forEachWord(_:)``), as bytes.
    @inlinable
    public func words() -> Flow<Word> {
        self.appending { downstream in
            FlowLane(passingTo: downstream) { line in line.forEachWord(downstream.push) }
        }
    }
}

extension TextChunk {
    /// Cuts `text` into chunks of whole lines of about `chunkSize` bytes (4 KiB...64 MiB).
    ///
    /// - Throws: ``SluiceError`` when `chunkSize` is out of range.
    public static func chunks(of text: [UInt8], chunkSize: Int = FileChunks.defaultChunkSize) throws(SluiceError) -> [TextChunk] {
        try FileChunks.validate(chunkSize: chunkSize)
        var chunks: [TextChunk] = []
        var start = 0
        while start < text.count {
            var end = min(start + chunkSize, text.count)
            if end < text.count {
                if let newline = text[end...].firstIndex(of: UInt8(ascii: "\n")) {
                    end = newline + 1
                } else {
                    end = text.count
                }
            }
            chunks.append(TextChunk(Array(text[start..<end])))
            start = end
        }
        return chunks
    }
}

/// What ``Flow/collect()`` gathers from the collecting stage.
@usableFromInline
final class FlowResults<Element: Sendable>: Sendable {
    private let elements = Mutex<[Element]>([])

    @usableFromInline
    init() {}

    @usableFromInline
    func append(_ batch: [Element]) {
        self.elements.withLock { $0.append(contentsOf: batch) }
    }

    @usableFromInline
    func take() -> [Element] {
        self.elements.withLock { elements in
            defer { elements = [] }
            return elements
        }
    }
}
