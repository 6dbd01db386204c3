//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging

/// Control messages every source stage understands.
public protocol SourceInfo: Sendable {
    /// Stop taking new messages from the broker; emit what was already taken as it is asked
    /// for, then end normally.
    static var drain: Self { get }
}

/// What a pipeline tells its source when it starts.
public struct SourceContext: Sendable {
    /// The pipeline's name.
    public let pipelineName: String
    /// How many messages the pipeline's topology can hold unacknowledged at once (processor
    /// demand plus batches being built and handled). A source with a broker-side window sets
    /// it from this (for example the AMQP prefetch count).
    public let window: Int
    /// The logger, with the pipeline's metadata.
    public let logger: Logger

    /// Creates a source context.
    @inlinable
    public init(pipelineName: String, window: Int, logger: Logger) {
        self.pipelineName = pipelineName
        self.window = window
        self.logger = logger
    }
}

/// The producer stage and acknowledger a source gives its pipeline.
public struct SourceParts<SourceStage: Producer & Sendable, Acker: Acknowledger>: Sendable {
    /// The stage that emits the broker's messages on demand.
    public var stage: SourceStage
    /// Settles the messages the stage emitted.
    public var acknowledger: Acker

    /// Creates source parts.
    @inlinable
    public init(stage: SourceStage, acknowledger: Acker) {
        self.stage = stage
        self.acknowledger = acknowledger
    }
}

/// A broker connector a ``Pipeline`` consumes from.
///
/// The source's stage emits ``Message`` values only as demanded. From a destructive read it
/// never takes more than the pending demand; from a broker that redelivers unacknowledged
/// messages it may prefetch, within ``SourceContext/window``. It must not rely on the engine's
/// buffer dropping events: it stops fetching instead.
public protocol PipelineSource: Sendable {
    /// The metadata of this source's messages.
    associatedtype Metadata: MessageMetadata
    /// The producer stage.
    associatedtype SourceStage: Producer & Sendable
    where SourceStage.Output == Message<Metadata>, SourceStage.Info: SourceInfo
    /// The acknowledger.
    associatedtype Acker: Acknowledger where Acker.Metadata == Metadata

    /// The most messages the broker lets this source hold unacknowledged, if it has such a
    /// limit (for example a fixed prefetch). The pipeline refuses to start if its window is larger.
    var maximumInFlight: Int? { get }

    /// Connects and returns the producer stage and its acknowledger.
    ///
    /// - Throws: The adapter's typed error when the broker is unreachable or the configuration
    ///   is refused.
    func makeParts(context: SourceContext) async throws -> SourceParts<SourceStage, Acker>

    /// Called once every message was settled, or the drain deadline passed: flush pending
    /// acknowledgements and close connections.
    func shutdown(_ acknowledger: Acker) async
}

extension PipelineSource {
    /// Default: no limit.
    @inlinable
    public var maximumInFlight: Int? { nil }
    /// Default: nothing to close.
    @inlinable
    public func shutdown(_ acknowledger: Acker) async {}
}
