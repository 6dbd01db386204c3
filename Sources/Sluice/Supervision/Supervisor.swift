//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

public import Logging
import Synchronization

/// When a supervisor restarts a child that ended.
///
/// Decided by the same rule as ``CancelMode`` (OTP and GenStage use the same three words), but
/// a separate type: the two answer different questions (is a child restarted, does a consumer
/// end) and are set in different places.
public struct RestartPolicy: Hashable, Sendable, CustomStringConvertible {
    private let rule: EndingRule

    /// Always restarted, whatever the reason (the default).
    public static let permanent = RestartPolicy(rule: .permanent)
    /// Restarted only if it crashed (ended with a ``StopReason/failure(_:)``) or was killed.
    public static let transient = RestartPolicy(rule: .transient)
    /// Never restarted.
    public static let temporary = RestartPolicy(rule: .temporary)

    func restarts(after reason: StopReason) -> Bool { self.rule.applies(to: reason) }

    public var description: String { self.rule.name }
}

/// A running stage with its type erased: a child of a supervisor, or a stage of a pipeline.
public struct SupervisedStage: Sendable {
    @usableFromInline let id: StageID
    /// The stage's name.
    public let name: String
    @usableFromInline let stop: @Sendable (StopReason) async -> StopReason
    @usableFromInline let kill: @Sendable () async -> StopReason
    @usableFromInline let wait: @Sendable () async -> StopReason
    @usableFromInline let reason: @Sendable () -> StopReason?
    @usableFromInline let handle: any Sendable

    /// Wraps a running stage.
    public init<S: Stage>(_ handle: StageHandle<S>) {
        self.id = handle.id
        self.name = handle.name
        self.stop = { await handle.stop($0) }
        self.kill = { await handle.kill() }
        self.wait = { await handle.waitForTermination() }
        self.reason = { handle.stopReason }
        self.handle = handle
    }

    /// Why the stage ended, or `nil` while it runs.
    public var stopReason: StopReason? { self.reason() }

    /// Waits until the stage ends and returns why.
    public func waitForTermination() async -> StopReason { await self.wait() }
}

/// How to start (and restart) one child of a supervisor.
///
/// The start closure runs again on every restart, so a stage that subscribes in its start
/// closure (`subscribeTo:`) subscribes again after a crash. Look up the current handle of an
/// earlier child through the ``Supervisor/Children`` argument, so a restarted consumer finds a
/// producer that was itself restarted.
public struct ChildSpec: Sendable {
    /// The child's identifier within its supervisor.
    public var id: String
    /// When the child is restarted.
    public var restart: RestartPolicy
    let start: @Sendable (Supervisor.Children) async throws -> SupervisedStage

    /// Creates a child specification.
    public init<S: Stage>(
        id: String,
        restart: RestartPolicy = .permanent,
        start: @escaping @Sendable (Supervisor.Children) async throws -> StageHandle<S>
    ) {
        self.id = id
        self.restart = restart
        self.start = { children in SupervisedStage(try await start(children)) }
    }
}

/// Restarts crashed stages, one for one, within a restart intensity.
///
/// Children start in order. When one ends and its ``RestartPolicy`` says so, only that child is
/// started again. If children restart more than `maxRestarts` times within `period`, the
/// supervisor stops every child (in reverse order) and ends with
/// ``SluiceError/Code-swift.struct/restartIntensityExceeded``.
///
/// ```swift
/// let supervisor = try await Supervisor.start(children: [
///     ChildSpec(id: "manager") { _ in try await StageHandle.start(EventManager(), options: .init(dispatcher: .broadcast)) },
///     ChildSpec(id: "printer") { children in
///         try await StageHandle.start(Printer(), subscribeTo: [.init(children.handle("manager", as: EventManager.self)!)])
///     },
/// ])
/// ```
public final class Supervisor: Sendable {
    /// The children a start closure can look up (the ones started before it).
    public struct Children: Sendable {
        let supervisor: Supervisor

        /// The current handle of the child `id`, if it runs and has stage type `S`.
        public func handle<S: Stage>(_ id: String, as type: S.Type) -> StageHandle<S>? {
            self.supervisor.handle(id, as: type)
        }
    }

    private enum Event: Sendable {
        case ended(index: Int, generation: Int, reason: StopReason)
        case stop(StopReason)
    }

    private struct State: ~Copyable {
        var running: [SupervisedStage?]
        var generations: [Int]
        var intensity: RestartIntensity
        var restartCount = 0
    }

    private let specs: [ChildSpec]
    private let maxRestarts: Int
    private let period: Duration
    private let logger: Logger
    private let state: Mutex<State>
    private let events: AsyncStream<Event>
    private let eventsContinuation: AsyncStream<Event>.Continuation
    private let termination = Termination()

    private init(specs: [ChildSpec], maxRestarts: Int, period: Duration, logger: Logger) {
        self.specs = specs
        self.maxRestarts = maxRestarts
        self.period = period
        self.logger = logger
        self.state = Mutex(
            State(
                running: Array(repeating: nil, count: specs.count),
                generations: Array(repeating: 0, count: specs.count),
                intensity: RestartIntensity(maxRestarts: maxRestarts, period: period)
            )
        )
        (self.events, self.eventsContinuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Starts the children in order and supervises them.
    ///
    /// - Throws: ``SluiceError`` with code ``SluiceError/Code-swift.struct/invalidOption`` for a
    ///   negative `maxRestarts`, a non-positive `period` or duplicate child ids; or the error of
    ///   a child that failed to start (children already started are stopped).
    public static func start(
        children: [ChildSpec],
        maxRestarts: Int = 3,
        within period: Duration = .seconds(5),
        logger: Logger? = nil
    ) async throws -> Supervisor {
        try RestartIntensity.validate(maxRestarts: maxRestarts, period: period)
        var ids = Set<String>()
        for spec in children where !ids.insert(spec.id).inserted {
            throw SluiceError.invalidOption("children", spec.id, "child ids must be unique")
        }
        let supervisor = Supervisor(specs: children, maxRestarts: maxRestarts, period: period, logger: logger ?? Logger.current)
        for index in children.indices {
            do {
                try await supervisor.startChild(index)
            } catch {
                await supervisor.stopChildren(.shutdown)
                supervisor.finish(.failure(error))
                throw error
            }
        }
        Task.detached { await supervisor.supervise() }
        return supervisor
    }

    /// The current handle of child `id`, if it runs and has stage type `S`.
    public func handle<S: Stage>(_ id: String, as type: S.Type = S.self) -> StageHandle<S>? {
        guard let index = self.specs.firstIndex(where: { $0.id == id }) else { return nil }
        return self.state.withLock { $0.running[index]?.handle as? StageHandle<S> }
    }

    /// How many restarts happened so far.
    public var restartCount: Int { self.state.withLock { $0.restartCount } }

    /// Stops every child in reverse order, then the supervisor; returns once all ended.
    public func stop() async {
        self.eventsContinuation.yield(.stop(.shutdown))
        _ = await self.termination.wait()
    }

    /// Waits until the supervisor ends and returns why.
    public func waitForTermination() async -> StopReason {
        await self.termination.wait()
    }

    private func startChild(_ index: Int) async throws {
        let child = try await self.specs[index].start(Children(supervisor: self))
        let generation = self.state.withLock { state -> Int in
            state.running[index] = child
            state.generations[index] += 1
            return state.generations[index]
        }
        let continuation = self.eventsContinuation
        Task.detached {
            let reason = await child.wait()
            continuation.yield(.ended(index: index, generation: generation, reason: reason))
        }
    }

    private func supervise() async {
        for await event in self.events {
            switch event {
            case .stop(let reason):
                await self.stopChildren(reason)
                self.finish(reason)
                return
            case .ended(let index, let generation, let reason):
                let current = self.state.withLock { state -> Bool in
                    guard state.generations[index] == generation else { return false }
                    state.running[index] = nil
                    return true
                }
                guard current else { continue }
                let spec = self.specs[index]
                guard spec.restart.restarts(after: reason) else {
                    self.logger.debug("child ended, not restarted", metadata: ["sluice.child": "\(spec.id)", SluiceLogKey.reason: "\(reason)"])
                    continue
                }
                if !(await self.restart(index, after: reason)) { return }
            }
        }
    }

    /// Restarts a child (retrying if its start fails); `false` if the intensity was exceeded.
    private func restart(_ index: Int, after reason: StopReason) async -> Bool {
        let spec = self.specs[index]
        while true {
            let now = ContinuousClock.now
            let exceeded = self.state.withLock { state -> Bool in
                state.restartCount += 1
                return !state.intensity.allowsRestart(at: now)
            }
            if exceeded {
                let error = SluiceError(
                    .restartIntensityExceeded,
                    "child \(spec.id) ended (\(reason)) after more than \(self.maxRestarts) restarts within \(self.period)"
                )
                self.logger.info("restart intensity exceeded; stopping all children", metadata: ["sluice.child": "\(spec.id)"])
                await self.stopChildren(.shutdown)
                self.finish(.failure(error))
                return false
            }
            self.logger.info("restarting child", metadata: ["sluice.child": "\(spec.id)", SluiceLogKey.reason: "\(reason)"])
            do {
                try await self.startChild(index)
                return true
            } catch {
                self.logger.info("child failed to restart", metadata: ["sluice.child": "\(spec.id)", SluiceLogKey.reason: "\(error)"])
            }
        }
    }

    private func stopChildren(_ reason: StopReason) async {
        for index in self.specs.indices.reversed() {
            let child = self.state.withLock { state -> SupervisedStage? in
                defer {
                    state.running[index] = nil
                    state.generations[index] += 1
                }
                return state.running[index]
            }
            if let child { _ = await child.stop(reason) }
        }
    }

    private func finish(_ reason: StopReason) {
        self.eventsContinuation.finish()
        self.termination.finish(reason)
    }
}
