//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging

/// A consumer that handles each event in a task of its own, with at most `maxDemand` tasks
/// running at once per subscription (like GenStage's ConsumerSupervisor).
///
/// The consumer first asks for `maxDemand` events. It then counts the tasks that finished
/// since its last ask, and once that count reaches `minDemand` it asks for exactly that many
/// more: with `maxDemand` 10 and `minDemand` 2 it asks 10, then 2 after every 2 finished
/// tasks. So the number of running tasks stays near `maxDemand`: while the producer keeps
/// up, it is refilled each time it is `minDemand` below, and it never exceeds `maxDemand`.
/// With `minDemand` 0 every finished task is replaced at once (it asks 1 per finished task).
///
/// A handler that throws does not stop the consumer: the failure is logged and passed to
/// `onFailure` if set. By default it is not run again (like a temporary ConsumerSupervisor
/// child) and its slot is freed like any finished task's. With the ``RestartPolicy/transient``
/// policy it runs again on the same event and keeps its slot meanwhile, so nothing is asked
/// for it; more than `maxRestarts` reruns within `period` stop the consumer with
/// ``SluiceError/Code-swift.struct/restartIntensityExceeded``.
///
/// When the consumer stops, it waits for its running tasks (failed ones are not run again
/// then); when it is killed (``StageHandle/kill()``) it cancels them first.
///
/// ```swift
/// let workers = try await StageHandle.start(
///     ConcurrentConsumer<Int> { job in try await process(job) },
///     subscribeTo: [.init(jobs, options: .init(maxDemand: 8))]
/// )
/// ```
public struct ConcurrentConsumer<Input: Sendable>: Consumer {
    /// A message from one of the consumer's event tasks to the consumer.
    ///
    /// Only the consumer's own tasks make these; it has no public initializer.
    public struct Info: Sendable {
        /// How a task ended.
        enum Outcome: Sendable {
            /// The handler returned, or threw and does not run again.
            case done
            /// The handler threw on this event and, by the restart policy, may run again.
            case failed(Input, any Error)
        }

        /// The task that finished.
        let task: Int
        /// The subscription its event came from.
        let subscription: SubscriptionID
        /// How the task ended.
        let outcome: Outcome
    }

    private let handler: @Sendable (Input) async throws -> Void
    private let onFailure: (@Sendable (Input, any Error) -> Void)?
    /// The reruns of handlers that threw (`.transient`); `nil` if they do not run again.
    private var restarts: RestartIntensity?
    private var handle: StageHandle<Self>?
    private var slots: [SubscriptionID: TaskSlots] = [:]
    private var tasks: [Int: Task<Void, Never>] = [:]
    private var nextTask = 0

    /// Creates a consumer that runs `handler` for each event in its own task.
    ///
    /// - Parameters:
    ///   - onFailure: Called with the event and the error when `handler` throws.
    ///   - handler: The work for one event.
    public init(
        onFailure: (@Sendable (Input, any Error) -> Void)? = nil,
        handler: @escaping @Sendable (Input) async throws -> Void
    ) {
        self.init(restarts: nil, onFailure, handler)
    }

    /// Creates a consumer that runs `handler` for each event in its own task and, with the
    /// ``RestartPolicy/transient`` policy, runs a handler that threw again on the same event.
    ///
    /// - Parameters:
    ///   - restart: ``RestartPolicy/temporary`` (never run again) or ``RestartPolicy/transient``
    ///     (run again after a throw).
    ///   - maxRestarts: How many reruns `period` may hold; one more stops the consumer. 0 or more.
    ///   - period: The window of `maxRestarts`; greater than zero.
    ///   - onFailure: Called with the event and the error each time `handler` throws.
    ///   - handler: The work for one event.
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code-swift.struct/invalidOption`` for
    ///   ``RestartPolicy/permanent`` (a handler that returned is done), a negative
    ///   `maxRestarts` or a `period` that is not positive.
    public init(
        restart: RestartPolicy,
        maxRestarts: Int = 3,
        within period: Duration = .seconds(5),
        onFailure: (@Sendable (Input, any Error) -> Void)? = nil,
        handler: @escaping @Sendable (Input) async throws -> Void
    ) throws(SluiceError) {
        guard restart != .permanent else {
            throw .invalidOption("restart", restart, "a handler that returned is done; use .transient to rerun failed ones")
        }
        try RestartIntensity.validate(maxRestarts: maxRestarts, period: period)
        let restarts = restart == .transient ? RestartIntensity(maxRestarts: maxRestarts, period: period) : nil
        self.init(restarts: restarts, onFailure, handler)
    }

    private init(
        restarts: RestartIntensity?,
        _ onFailure: (@Sendable (Input, any Error) -> Void)?,
        _ handler: @escaping @Sendable (Input) async throws -> Void
    ) {
        self.handler = handler
        self.onFailure = onFailure
        self.restarts = restarts
    }

    /// Keeps the handle its tasks report back to.
    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Never>) {
        self.handle = handle
    }

    /// Asks for `maxDemand` events and takes the subscription into manual mode: it re-asks as
    /// tasks finish.
    public mutating func handleSubscribe(
        _ subscription: SubscriptionInfo,
        context: inout StageContext<Never>
    ) -> DemandMode {
        let slots = TaskSlots(maxDemand: subscription.maxDemand, minDemand: subscription.minDemand)
        self.slots[subscription.id] = slots
        context.ask(slots.maxDemand, on: subscription.id)
        return .manual
    }

    /// Starts a task for each event.
    public mutating func handleEvents(
        _ events: [Input],
        from subscription: SubscriptionID,
        context: inout StageContext<Never>
    ) {
        // didStart always comes first; the engine hands no events before it.
        guard let handle = self.handle else { return }
        // Events of a subscription cancelled meanwhile still run; only their slots are no
        // longer counted (as ConsumerSupervisor does).
        self.slots[subscription]?.started(events.count)
        for event in events { self.run(event, of: subscription, handle: handle, logger: context.logger) }
    }

    /// Starts the task for `event`; it reports back to the stage when it ends.
    private mutating func run(_ event: Input, of subscription: SubscriptionID, handle: StageHandle<Self>, logger: Logger) {
        let id = self.nextTask
        self.nextTask += 1
        let handler = self.handler
        let onFailure = self.onFailure
        let rerunsFailures = self.restarts != nil
        self.tasks[id] = Task {
            var outcome = Info.Outcome.done
            do {
                try await handler(event)
            } catch {
                logger.info("event handler failed", metadata: [SluiceLogKey.reason: "\(error)"])
                onFailure?(event, error)
                if rerunsFailures && !Task.isCancelled { outcome = .failed(event, error) }
            }
            handle.send(Info(task: id, subscription: subscription, outcome: outcome))
        }
    }

    /// A task ended: runs a failed handler again (transient, within the restart intensity), or
    /// re-asks once enough tasks finished.
    public mutating func handleInfo(_ info: Info, context: inout StageContext<Never>) {
        guard self.tasks.removeValue(forKey: info.task) != nil else { return }
        if case .failed(let event, let error) = info.outcome, let handle = self.handle, var restarts = self.restarts {
            // Like a restarting ConsumerSupervisor child: the rerun keeps the slot, so nothing
            // is asked for it.
            let allowed = restarts.allowsRestart(at: .now)
            self.restarts = restarts
            guard allowed else {
                context.stop(.failure(SluiceError(
                    .restartIntensityExceeded,
                    "an event handler failed (\(error)) after more than \(restarts.maxRestarts) reruns within \(restarts.period)"
                )))
                return
            }
            self.run(event, of: info.subscription, handle: handle, logger: context.logger)
            return
        }
        if let ask = self.slots[info.subscription]?.finished() {
            context.ask(ask, on: info.subscription)
        }
    }

    /// Stops counting the subscription's slots; its running tasks still finish.
    public mutating func handleCancel(
        _ subscription: SubscriptionID,
        reason: CancelReason,
        context: inout StageContext<Never>
    ) {
        self.slots[subscription] = nil
    }

    /// Waits for the running tasks; a killed consumer cancels them first.
    public mutating func terminate(reason: StopReason) async {
        // Killed (the stage's task was cancelled): cancel the running handlers too. Otherwise
        // let them finish.
        if Task.isCancelled {
            for task in self.tasks.values { task.cancel() }
        }
        for task in self.tasks.values { await task.value }
    }
}

/// The demand of one subscription of a ``ConcurrentConsumer``, kept like GenStage's
/// ConsumerSupervisor keeps `{count, pending}` per producer.
///
/// Asked-and-not-received plus ``running`` plus ``finishedSinceAsk`` is always `maxDemand`
/// (while the producer sends no more than asked), so no more than `maxDemand` tasks run.
struct TaskSlots: Hashable, Sendable {
    let maxDemand: Int
    let minDemand: Int
    /// Tasks running for events of this subscription.
    private(set) var running = 0
    /// Tasks finished since the last ask.
    private(set) var finishedSinceAsk = 0

    init(maxDemand: Int, minDemand: Int) {
        self.maxDemand = maxDemand
        self.minDemand = minDemand
    }

    /// Tasks started for `count` events of the subscription.
    mutating func started(_ count: Int) {
        self.running += count
    }

    /// A task finished; returns what to ask for now, if anything.
    ///
    /// Once the tasks finished since the last ask reach `minDemand`, asks for all of them. With
    /// `minDemand` 0 that is every finished task, one at a time.
    mutating func finished() -> Int? {
        self.running -= 1
        self.finishedSinceAsk += 1
        guard self.finishedSinceAsk >= self.minDemand else { return nil }
        defer { self.finishedSinceAsk = 0 }
        return self.finishedSinceAsk
    }
}
