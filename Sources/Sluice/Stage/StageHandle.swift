//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging

/// A running stage: subscribe it, send it messages, stop it, wait for its end.
///
/// ```swift
/// let a = try await StageHandle.start(Counter())
/// let b = try await StageHandle.start(Doubler())
/// let c = try await StageHandle.start(Printer())
/// try await c.subscribe(to: b)
/// try await b.subscribe(to: a)
/// ```
///
/// A handle is a cheap value; copies refer to the same stage.
public struct StageHandle<S: Stage>: Sendable {
    @usableFromInline
    let cell: StageCell<S>

    @inlinable
    init(cell: StageCell<S>) { self.cell = cell }

    /// The stage's identity.
    public var id: StageID { self.cell.stageID }
    /// The stage's name.
    public var name: String { self.cell.stageName }

    /// This stage as a producer others can subscribe to, with its concrete type erased.
    public var producer: ProducerRef<S.Output> { ProducerRef(source: self.cell.source) }

    /// Starts `stage` in its own task and returns its handle.
    ///
    /// The stage subscribes to each producer in `subscribeTo` before this returns; if a
    /// subscription is rejected (ended producer, unknown or taken partition, duplicate broadcast
    /// subscriber) the stage is stopped and the error thrown.
    ///
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code-swift.struct/invalidOption`` for
    ///   bad options, or the subscription's error.
    @inlinable
    public static func start(
        _ stage: sending S,
        options: StageOptions<S.Output> = .init(),
        subscribeTo subscriptions: [SubscribeTo<S.Input>] = []
    ) async throws -> StageHandle<S> {
        try options.validate()
        for subscription in subscriptions { try subscription.options.validate() }
        let name = options.name ?? String(describing: S.self)
        let cell = StageCell<S>(name: name)
        var logger = options.logger ?? Logger.current
        logger[metadataKey: SluiceLogKey.stageName] = "\(name)"
        logger[metadataKey: SluiceLogKey.stageID] = "\(cell.stageID.rawValue)"
        switch options.dispatcher.kind {
        case .demand:
            Self.launch(stage, cell: cell, dispatcher: DemandDispatcher<S.Output>(), options: options, logger: logger)
        case .broadcast:
            Self.launch(stage, cell: cell, dispatcher: BroadcastDispatcher<S.Output>(), options: options, logger: logger)
        case .partition(let partitions, let route):
            Self.launch(
                stage,
                cell: cell,
                dispatcher: PartitionDispatcher(partitions: partitions, routing: route),
                options: options,
                logger: logger
            )
        }
        let handle = StageHandle(cell: cell)
        do {
            for subscription in subscriptions {
                _ = try await handle.subscribe(to: subscription.source, options: subscription.options)
            }
        } catch {
            _ = await handle.stop(.shutdown)
            throw error
        }
        return handle
    }

    @inlinable
    static func launch<D: EventDispatcher>(
        _ stage: sending S,
        cell: StageCell<S>,
        dispatcher: sending D,
        options: StageOptions<S.Output>,
        logger: Logger
    ) where D.Event == S.Output {
        // Detached: a stage is an independent process-like loop and must not inherit the
        // caller's actor (a `Task {}` in main.swift would otherwise run on the main actor).
        let running = Task.detached(executorPreference: options.executor.taskExecutor) {
            var runner = StageRunner(stage: stage, cell: cell, dispatcher: dispatcher, options: options, logger: logger)
            let reason = await runner.run()
            cell.termination.finish(reason)
        }
        cell.attach(running)
    }

    // MARK: Subscriptions

    /// Subscribes this stage to `producer` and waits until the producer accepted.
    ///
    /// - Returns: The new subscription's identifier.
    /// - Throws: ``SluiceError`` naming the bad option, or code
    ///   ``SluiceError/Code-swift.struct/stageEnded`` if either stage has ended.
    @discardableResult
    public func subscribe<P: Stage>(
        to producer: StageHandle<P>,
        options: SubscriptionOptions<S.Input> = .init()
    ) async throws -> SubscriptionID where P.Output == S.Input {
        try await self.subscribe(to: producer.cell.source, options: options)
    }

    /// Subscribes this stage to a type-erased producer and waits until the producer accepted.
    @discardableResult
    public func subscribe(
        to producer: ProducerRef<S.Input>,
        options: SubscriptionOptions<S.Input> = .init()
    ) async throws -> SubscriptionID {
        try await self.subscribe(to: producer.source, options: options)
    }

    @usableFromInline
    func subscribe(
        to source: EventSource<S.Input>,
        options: SubscriptionOptions<S.Input>
    ) async throws -> SubscriptionID {
        try options.validate()
        return try await Reply<SubscriptionID>.awaiting { reply in
            if !self.cell.mailbox.send(.subscribeUpstream(source, options, reply)) {
                reply.fail(SluiceError(.stageEnded, "cannot subscribe \(self.name) (\(self.id)): it has ended"))
            }
        }
    }

    /// Asks this stage to cancel one of its upstream subscriptions.
    public func cancel(_ subscription: SubscriptionID, reason: StopReason = .normal) {
        self.cell.mailbox.send(.cancelUpstream(subscription, reason))
    }

    // MARK: Messages

    /// Sends a message to the stage's ``Stage/handleInfo(_:context:)``.
    ///
    /// - Returns: `false` if the stage has ended and the message was not delivered.
    @discardableResult
    public func send(_ info: S.Info) -> Bool {
        self.cell.mailbox.send(.info(info))
    }

    /// Sends a message carrying a ``Reply`` and waits for the stage to answer it.
    ///
    /// - Throws: ``SluiceError/Code-swift.struct/stageEnded`` if the stage ends (or drops the
    ///   message) without answering, or the error the stage answered with.
    public func call<Value: Sendable>(_ message: (Reply<Value>) -> S.Info) async throws -> Value {
        try await Reply<Value>.awaiting { reply in
            // If the stage has ended the message is dropped here, and so is the reply,
            // which then fails with `stageEnded`.
            self.cell.mailbox.send(.info(message(reply)))
        }
    }

    /// Switches a producer between forwarding and accumulating demand.
    public func setDemandMode(_ mode: ProducerDemandMode) {
        self.cell.mailbox.send(.demandMode(mode))
    }

    /// The stage's counters, read in order with its other mail.
    public func statistics() async throws -> StageStatistics {
        try await Reply<StageStatistics>.awaiting { reply in
            self.cell.mailbox.send(.statistics(reply))
        }
    }

    // MARK: Ending

    /// Asks the stage to stop after the mail already queued, and waits for its end.
    ///
    /// - Returns: The reason the stage ended (which may differ if it had already ended).
    @discardableResult
    public func stop(_ reason: StopReason = .shutdown) async -> StopReason {
        self.cell.mailbox.send(.stop(reason))
        return await self.cell.termination.wait()
    }

    /// Stops the stage at once and waits for its end: the task running it is cancelled, so a
    /// callback that is awaiting (a sleep, I/O) sees cancellation instead of finishing its work.
    /// The stage ends with ``StopReason/shutdown``.
    ///
    /// Use ``stop(_:)`` to let the current callback finish first.
    @discardableResult
    public func kill() async -> StopReason {
        self.cell.kill(.shutdown)
        return await self.cell.termination.wait()
    }

    /// Waits until the stage ends and returns why.
    public func waitForTermination() async -> StopReason {
        await self.cell.termination.wait()
    }

    /// Why the stage ended, or `nil` while it runs.
    public var stopReason: StopReason? { self.cell.termination.reason }
}

/// A running producer or producer-consumer with its concrete stage type erased.
public struct ProducerRef<Output: Sendable>: Sendable {
    @usableFromInline
    let source: EventSource<Output>

    @usableFromInline
    init(source: EventSource<Output>) { self.source = source }

    /// The producer's identity.
    public var id: StageID { self.source.stageID }
    /// The producer's name.
    public var name: String { self.source.stageName }
}
