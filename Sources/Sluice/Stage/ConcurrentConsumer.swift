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
/// The consumer asks for `maxDemand` events; as tasks finish it asks again once the running
/// tasks plus the events still asked for fall to `minDemand`, back up to `maxDemand`. So it
/// never holds more than `maxDemand` events of a subscription, running or on their way.
///
/// A handler that throws does not stop the consumer: the failure is logged and passed to
/// `onFailure` if set. When the consumer stops, it waits for its running tasks; when it is
/// killed (``StageHandle/kill()``) it cancels them first.
///
/// ```swift
/// let workers = try await StageHandle.start(
///     ConcurrentConsumer<Int> { job in try await process(job) },
///     subscribeTo: [.init(jobs, options: .init(maxDemand: 8))]
/// )
/// ```
public struct ConcurrentConsumer<Input: Sendable>: Consumer {
    /// Messages from the event tasks.
    public enum Info: Sendable {
        /// The task `task` for one event of `subscription` finished.
        case finished(task: Int, subscription: SubscriptionID)
    }

    private struct Slot {
        var pending: Int
        var running = 0
        let maxDemand: Int
        let minDemand: Int
    }

    private let handler: @Sendable (Input) async throws -> Void
    private let onFailure: (@Sendable (Input, any Error) -> Void)?
    private var handle: StageHandle<Self>?
    private var slots: [SubscriptionID: Slot] = [:]
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
        self.handler = handler
        self.onFailure = onFailure
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Never>) {
        self.handle = handle
    }

    public mutating func handleSubscribe(
        _ subscription: SubscriptionInfo,
        context: inout StageContext<Never>
    ) -> DemandMode {
        self.slots[subscription.id] = Slot(
            pending: subscription.maxDemand,
            maxDemand: subscription.maxDemand,
            minDemand: subscription.minDemand
        )
        context.ask(subscription.maxDemand, on: subscription.id)
        return .manual
    }

    public mutating func handleEvents(
        _ events: [Input],
        from subscription: SubscriptionID,
        context: inout StageContext<Never>
    ) {
        guard let handle = self.handle, self.slots[subscription] != nil else { return }
        self.slots[subscription]!.pending -= events.count
        self.slots[subscription]!.running += events.count
        let handler = self.handler
        let onFailure = self.onFailure
        let logger = context.logger
        for event in events {
            let id = self.nextTask
            self.nextTask += 1
            self.tasks[id] = Task {
                do {
                    try await handler(event)
                } catch {
                    logger.info("event handler failed", metadata: [SluiceLogKey.reason: "\(error)"])
                    onFailure?(event, error)
                }
                handle.send(.finished(task: id, subscription: subscription))
            }
        }
    }

    public mutating func handleInfo(_ info: Info, context: inout StageContext<Never>) {
        switch info {
        case .finished(let task, let subscription):
            self.tasks[task] = nil
            guard var slot = self.slots[subscription] else { return }
            slot.running -= 1
            let outstanding = slot.pending + slot.running
            if outstanding <= slot.minDemand {
                let ask = slot.maxDemand - outstanding
                slot.pending += ask
                context.ask(ask, on: subscription)
            }
            self.slots[subscription] = slot
        }
    }

    public mutating func handleCancel(
        _ subscription: SubscriptionID,
        reason: CancelReason,
        context: inout StageContext<Never>
    ) {
        self.slots[subscription] = nil
    }

    public mutating func terminate(reason: StopReason) async {
        // Killed (the stage's task was cancelled): cancel the running handlers too. Otherwise
        // let them finish.
        if Task.isCancelled {
            for task in self.tasks.values { task.cancel() }
        }
        for task in self.tasks.values { await task.value }
    }
}
