//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging

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

    /// Starts `stage` in its own task and returns its handle once its
    /// ``Stage/didStart(handle:context:)`` returned.
    ///
    /// The stage subscribes to each producer in `subscribeTo` before this returns; if a
    /// subscription is rejected (ended producer, unknown or taken partition, duplicate
    /// subscription) the stage is stopped and the error thrown.
    ///
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code-swift.struct/invalidOption`` for
    ///   bad options (also for a producer option given to a stage that has no use for it), the
    ///   error `didStart` threw (the stage has then ended), or the subscription's error.
    @inlinable
    public static func start(
        _ stage: sending S,
        options: StageOptions<S.Output> = .init(),
        subscribeTo subscriptions: [SubscribeTo<S.Input>] = []
    ) async throws -> StageHandle<S> {
        let prepared = try Self.prepare(stage, options: options, subscribeTo: subscriptions)
        return try await prepared.start { loop in
            // Detached: a stage is an independent process-like loop and must not inherit the
            // caller's actor (a `Task {}` in main.swift would otherwise run on the main actor).
            prepared.handle.cell.attach(Task.detached(executorPreference: prepared.executor, operation: loop))
        }
    }

    /// Validates `options` and `subscriptions` and builds the stage's cell and loop without
    /// running anything: the engine hook behind ``start(_:options:subscribeTo:)`` for callers
    /// that run the loop in a task of their own (a pipeline runs its stages as children of
    /// its task group). ``PreparedStage/start(launching:)`` then launches and subscribes.
    ///
    /// - Throws: ``SluiceError`` for bad options, as ``start(_:options:subscribeTo:)``.
    @inlinable
    package static func prepare(
        _ stage: sending S,
        options: StageOptions<S.Output> = .init(),
        subscribeTo subscriptions: [SubscribeTo<S.Input>] = []
    ) throws -> PreparedStage<S> {
        let name = options.name ?? String(describing: S.self)
        try options.validate(role: S.role, stageName: name)
        for subscription in subscriptions { try subscription.options.validate() }
        if S.role == .producer && !subscriptions.isEmpty { throw Self.notAConsumer(name) }
        let cell = StageCell<S>(name: name)
        var logger = options.logger ?? Logger.current
        logger[metadataKey: SluiceLogKey.stageName] = "\(name)"
        logger[metadataKey: SluiceLogKey.stageID] = "\(cell.stageID.rawValue)"
        let loop: @Sendable (Reply<Void>) async -> Void
        switch options.dispatcher?.kind ?? .demand {
        case .demand:
            loop = Self.loop(stage, cell: cell, dispatcher: DemandDispatcher<S.Output>(), options: options, logger: logger)
        case .broadcast:
            loop = Self.loop(stage, cell: cell, dispatcher: BroadcastDispatcher<S.Output>(), options: options, logger: logger)
        case .partition(let partitions, let route):
            loop = Self.loop(
                stage,
                cell: cell,
                dispatcher: PartitionDispatcher(partitions: partitions, routing: route),
                options: options,
                logger: logger
            )
        }
        return PreparedStage(
            handle: StageHandle(cell: cell),
            executor: Self.executor(for: options),
            subscriptions: subscriptions,
            loop: loop
        )
    }

    /// The executor a stage's task prefers: the one place that chooses it.
    @inlinable
    static func executor(for options: StageOptions<S.Output>) -> (any TaskExecutor)? {
        options.executor.taskExecutor
    }

    @usableFromInline
    static func notAConsumer(_ name: String) -> SluiceError {
        SluiceError(.notAConsumer, "\(name) is a producer: it takes no input and cannot subscribe to another stage")
    }

    /// The stage's loop: runs it until it ends, answering `started` once `didStart` returned,
    /// and records its end. To be run exactly once.
    @inlinable
    static func loop<D: EventDispatcher>(
        _ stage: sending S,
        cell: StageCell<S>,
        dispatcher: sending D,
        options: StageOptions<S.Output>,
        logger: Logger
    ) -> @Sendable (Reply<Void>) async -> Void where D.Event == S.Output {
        // `sending` values cross into the loop once: the loop runs exactly once.
        nonisolated(unsafe) let stage = stage
        nonisolated(unsafe) let dispatcher = dispatcher
        return { started in
            var runner = StageRunner(
                stage: stage,
                cell: cell,
                dispatcher: dispatcher,
                options: options,
                logger: logger,
                started: started
            )
            let reason = await runner.run()
            cell.termination.finish(reason)
        }
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
        if S.role == .producer { throw Self.notAConsumer(self.name) }
        try options.validate()
        return try await Reply<SubscriptionID>.awaiting { reply in
            if !self.cell.mailbox.send(.subscribeUpstream(source, options, reply)) {
                reply.fail(SluiceError(.stageEnded, "cannot subscribe \(self.name) (\(self.id)): it has ended"))
            }
        }
    }

    /// Asks this stage to cancel one of its subscriptions: one it made to a producer, or (for
    /// a producer) one of its subscribers. Both stages see ``CancelReason/cancelled(_:)`` with
    /// `reason`, after any events already on their way; the consumer's ``CancelMode`` then
    /// decides whether it ends (a permanent consumer does, whatever the reason).
    public func cancel(_ subscription: SubscriptionID, reason: StopReason = .normal) {
        self.cell.mailbox.send(.cancelSubscription(subscription, reason))
    }

    // MARK: Messages

    /// Sends a message to the stage's ``Stage/handleInfo(_:context:)``.
    ///
    /// - Returns: `false` if the stage has ended and the message was not delivered.
    @discardableResult
    public func send(_ info: S.Info) -> Bool {
        self.cell.mailbox.send(.info(info))
    }

    /// Sends a message that reaches ``Stage/handleInfo(_:context:)`` only after every event the
    /// stage holds now has been dispatched: its producer buffer, the events its dispatcher keeps
    /// for subscribers that have not asked for them yet (partition queues, broadcast backlogs)
    /// and, for a producer-consumer, the input queued for downstream demand (GenStage's
    /// `async_info`).
    ///
    /// - Returns: `false` if the stage has ended and the message was not delivered.
    @discardableResult
    public func sendBehindEvents(_ info: S.Info) -> Bool {
        self.cell.mailbox.send(.infoBehindEvents(info, nil))
    }

    /// Like ``sendBehindEvents(_:)``, and waits until the stage handled the message: when this
    /// returns, every event the stage held when it was sent has left it.
    ///
    /// - Throws: ``SluiceError/Code-swift.struct/stageEnded`` if the stage ends first.
    public func sendBehindEventsAndWait(_ info: S.Info) async throws {
        try await Reply<Void>.awaiting { reply in
            self.cell.mailbox.send(.infoBehindEvents(info, reply))
        }
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

    /// The producer's current demand mode (always ``ProducerDemandMode/forward`` for a
    /// producer-consumer), read in order with its other mail.
    ///
    /// - Throws: ``SluiceError/Code-swift.struct/notAProducer`` for a consumer,
    ///   ``SluiceError/Code-swift.struct/stageEnded`` if the stage has ended.
    public func demandMode() async throws -> ProducerDemandMode {
        try await Reply<ProducerDemandMode>.awaiting { reply in
            self.cell.mailbox.send(.demandModeQuery(reply))
        }
    }

    /// The stage's counters, read in order with its other mail.
    public func statistics() async throws -> StageStatistics {
        try await Reply<StageStatistics>.awaiting { reply in
            self.cell.mailbox.send(.statistics(reply))
        }
    }

    /// A snapshot of the stage: role, dispatcher, subscribers and producers with their pending
    /// demand, buffer and queued input, read in order with its other mail.
    public func status() async throws -> StageStatus {
        try await Reply<StageStatus>.awaiting { reply in
            self.cell.mailbox.send(.status(reply))
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
    /// The stage ends with ``StopReason/killed``, an abnormal end (a transient consumer of a
    /// killed producer ends too).
    ///
    /// Use ``stop(_:)`` to let the current callback finish first.
    @discardableResult
    public func kill() async -> StopReason {
        self.cell.kill(.killed)
        return await self.cell.termination.wait()
    }

    /// Waits until the stage ends and returns why.
    public func waitForTermination() async -> StopReason {
        await self.cell.termination.wait()
    }

    /// Why the stage ended, or `nil` while it runs.
    public var stopReason: StopReason? { self.cell.termination.reason }
}

extension StageHandle where S: Producer {
    /// Unavailable: a producer takes no input, so it starts without subscriptions.
    @available(*, unavailable, message: "a producer takes no input and cannot subscribe to another stage")
    public static func start(
        _ stage: sending S,
        options: StageOptions<S.Output> = .init(),
        subscribeTo subscriptions: [SubscribeTo<S.Input>]
    ) async throws -> StageHandle<S> {
        throw Self.notAConsumer(options.name ?? String(describing: S.self))
    }

    /// Unavailable: a producer takes no input, so it cannot subscribe to another stage.
    @available(*, unavailable, message: "a producer takes no input and cannot subscribe to another stage")
    public func subscribe<P: Stage>(
        to producer: StageHandle<P>,
        options: SubscriptionOptions<S.Input> = .init()
    ) async throws -> SubscriptionID where P.Output == S.Input {
        throw Self.notAConsumer(self.name)
    }

    /// Unavailable: a producer takes no input, so it cannot subscribe to another stage.
    @available(*, unavailable, message: "a producer takes no input and cannot subscribe to another stage")
    public func subscribe(
        to producer: ProducerRef<S.Input>,
        options: SubscriptionOptions<S.Input> = .init()
    ) async throws -> SubscriptionID {
        throw Self.notAConsumer(self.name)
    }
}

/// A running producer or producer-consumer with its concrete stage type erased.
public struct ProducerRef<Output: Sendable>: Sendable {
    @usableFromInline
    package let source: EventSource<Output>

    @usableFromInline
    package init(source: EventSource<Output>) { self.source = source }

    /// The producer's identity.
    public var id: StageID { self.source.stageID }
    /// The producer's name.
    public var name: String { self.source.stageName }
}

/// A stage built by ``StageHandle/prepare(_:options:subscribeTo:)`` whose loop does not run yet.
///
/// Call ``start(launching:)`` exactly once: it hands the loop to the caller's launcher, waits
/// for the stage's `didStart` and subscribes it.
@usableFromInline
package struct PreparedStage<S: Stage>: Sendable {
    /// The stage's handle, valid before it runs.
    @usableFromInline
    package let handle: StageHandle<S>
    /// The executor the stage's task should prefer.
    @usableFromInline
    package let executor: (any TaskExecutor)?
    @usableFromInline
    let subscriptions: [SubscribeTo<S.Input>]
    @usableFromInline
    let loop: @Sendable (Reply<Void>) async -> Void

    @inlinable
    init(
        handle: StageHandle<S>,
        executor: (any TaskExecutor)?,
        subscriptions: [SubscribeTo<S.Input>],
        loop: @escaping @Sendable (Reply<Void>) async -> Void
    ) {
        self.handle = handle
        self.executor = executor
        self.subscriptions = subscriptions
        self.loop = loop
    }

    /// Gives `launch` the stage's loop to run in a task (preferring ``executor``), waits until
    /// ``Stage/didStart(handle:context:)`` returned, then subscribes the stage to each producer
    /// it was prepared with. If a subscription is rejected the stage is stopped.
    ///
    /// - Throws: The error `didStart` threw (the stage has then ended), or the subscription's.
    @inlinable
    package func start(launching launch: (@escaping @Sendable () async -> Void) -> Void) async throws -> StageHandle<S> {
        let loop = self.loop
        try await Reply<Void>.awaiting { started in
            launch { await loop(started) }
        }
        let handle = self.handle
        do {
            for subscription in self.subscriptions {
                _ = try await handle.subscribe(to: subscription.source, options: subscription.options)
            }
        } catch {
            _ = await handle.stop(.shutdown)
            throw error
        }
        return handle
    }
}
