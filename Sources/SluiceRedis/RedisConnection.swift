//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Dispatch
import Logging
import Sluice
import SluiceConnector
import Synchronization

/// One Redis connection on a ``ConnectionLoop`` of its own: the loop's thread makes every
/// hiredis call, so blocking calls never run on Swift's cooperative pool.
///
/// Jobs (closures on the ``RedisLink``) are the loop's commands; between them the loop
/// services the connection: runs the periodic jobs that are due (liveness refresh, reaper)
/// and the ``serve(_:)`` step a reader installed (one read per turn).
final class RedisConnection: Sendable {
    typealias Job = @Sendable (RedisLink) -> Void

    private let loop: ConnectionLoop<RedisLink>
    /// How long ``shutdown()`` waits for the loop to end.
    private let stopTimeout: Duration

    /// Starts the connection's thread; it connects on first use.
    ///
    /// - Parameters:
    ///   - blocking: Whether blocking commands are sent (their wait lengthens the read timeout).
    ///   - replyArena: Whether replies are built in a ``ReplyArena`` (large replies).
    ///   - onConnect: Runs on every new connection (for example to learn its client id).
    init(
        name: String,
        configuration: RedisConfiguration,
        blocking: Bool,
        replyArena: Bool = false,
        logger: Logger,
        onConnect: (@Sendable (HiredisContext) throws(RedisError) -> Void)? = nil
    ) {
        let readTimeout = configuration.commandTimeout + (blocking ? configuration.blockTimeout : .zero)
        self.stopTimeout = configuration.commandTimeout + configuration.blockTimeout + configuration.maximumReconnectBackoff
        self.loop = ConnectionLoop(name: name) {
            RedisLink(configuration: configuration, readTimeout: readTimeout, replyArena: replyArena, logger: logger, onConnect: onConnect)
        }
    }

    /// Queues `job`. Returns `false` (and drops it) once the connection is stopping.
    @discardableResult
    func enqueue(_ job: @escaping Job) -> Bool {
        self.loop.enqueue(.job(job))
    }

    /// Runs `job` every `interval`, first after one interval.
    func every(_ interval: Duration, _ job: @escaping Job) {
        self.loop.enqueue(.periodic(interval, job))
    }

    /// Installs the step each service turn runs (a reader's read): `makeStep` runs on the
    /// connection's thread, and what it makes lives there.
    func serve(_ makeStep: @escaping @Sendable () -> (RedisLink) -> ServiceOutcome) {
        self.loop.enqueue(.serve(makeStep))
    }

    /// Runs `body` on the connection's thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable (RedisLink) throws(RedisError) -> T) async throws(RedisError) -> T {
        let result: Result<T, RedisError> = await withCheckedContinuation { continuation in
            let queued = self.enqueue { link in
                do throws(RedisError) {
                    continuation.resume(returning: .success(try body(link)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !queued { continuation.resume(returning: .failure(Self.stopped)) }
        }
        return try result.get()
    }

    /// Runs `body` on this connection's thread and blocks the calling thread until it
    /// returned. Only for jobs of another connection's thread (never the cooperative pool).
    /// A queued job always runs (a stopping loop runs its queue first), so the wait ends.
    func runBlocking<T: Sendable>(_ body: @escaping @Sendable (RedisLink) throws(RedisError) -> T) throws(RedisError) -> T {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<T, RedisError>?>(nil)
        let queued = self.enqueue { link in
            let result = Result { () throws(RedisError) -> T in try body(link) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        guard queued else { throw Self.stopped }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Wakes the connection for another service turn, and ends a backoff wait early.
    func wake() {
        self.loop.wake()
    }

    /// Lets queued jobs run, then ends the thread and closes the connection; waits at most
    /// the command and block timeouts plus the longest backoff.
    func shutdown() async {
        _ = await self.loop.stopAndWait(timeout: self.stopTimeout)
    }

    private static var stopped: RedisError { RedisError(.shutDown, "the Redis connection was shut down") }
}

/// The connection a ``RedisConnection`` owns, and the driver of its loop: connects on demand
/// and again after an I/O error (with the engine's jittered exponential ``Backoff``).
///
/// Lives on the loop's thread only (not `Sendable`).
final class RedisLink: ConnectionDriver {
    enum Command: Sendable {
        case job(RedisConnection.Job)
        case periodic(Duration, RedisConnection.Job)
        case serve(@Sendable () -> (RedisLink) -> ServiceOutcome)
    }

    private struct Periodic {
        var interval: Duration
        var due: ContinuousClock.Instant
        var job: RedisConnection.Job
    }

    let configuration: RedisConfiguration
    let logger: Logger
    private let readTimeout: Duration
    private let replyArena: Bool
    private let onConnect: (@Sendable (HiredisContext) throws(RedisError) -> Void)?
    private var context: HiredisContext?
    private var reconnect: Reconnect<SystemRandomNumberGenerator>
    private var periodic: [Periodic] = []
    private var step: ((RedisLink) -> ServiceOutcome)?
    /// The loop this link runs on (set by the loop's first call).
    private var loop: ConnectionLoop<RedisLink>?

    init(
        configuration: RedisConfiguration,
        readTimeout: Duration,
        replyArena: Bool,
        logger: Logger,
        onConnect: (@Sendable (HiredisContext) throws(RedisError) -> Void)?
    ) {
        self.configuration = configuration
        self.readTimeout = readTimeout
        self.replyArena = replyArena
        self.logger = logger
        self.onConnect = onConnect
        self.reconnect = Reconnect(backoff: configuration.reconnectSchedule)
    }

    // MARK: ConnectionDriver

    func handle(_ command: Command, on loop: ConnectionLoop<RedisLink>) {
        self.loop = loop
        switch command {
        case .job(let job):
            job(self)
        case .periodic(let interval, let job):
            self.periodic.append(Periodic(interval: interval, due: .now + interval, job: job))
        case .serve(let makeStep):
            self.step = makeStep()
        }
    }

    /// Runs the periodic jobs that are due, then the installed step; waits until the next
    /// periodic job is due (or as long as the step asks).
    func service(on loop: ConnectionLoop<RedisLink>) -> ServiceOutcome {
        self.loop = loop
        var now = ContinuousClock.now
        for index in self.periodic.indices where self.periodic[index].due <= now {
            self.periodic[index].job(self)
            now = .now
            self.periodic[index].due = now + self.periodic[index].interval
        }
        let untilPeriodic = self.periodic.lazy.map(\.due).min().map { $0 - now }
        guard let step = self.step else { return .wait(socket: nil, timeout: untilPeriodic) }
        switch step(self) {
        case .again:
            return .again
        case .wait(let socket, let timeout):
            // The sooner of the two, without building an array each turn.
            let soonest = switch (untilPeriodic, timeout) {
            case (let periodic?, let step?): min(periodic, step)
            case (let periodic?, nil): periodic
            case (nil, let step): step
            }
            return .wait(socket: socket, timeout: soonest)
        }
    }

    func close() {
        self.disconnect()
    }

    // MARK: For jobs

    /// Whether the connection is being shut down.
    var isStopping: Bool { self.loop?.isStopping ?? false }

    /// The connected context, connecting first if needed.
    func connected() throws(RedisError) -> HiredisContext {
        if let context = self.context, !context.isBroken { return context }
        self.context = nil
        let context = try HiredisContext.connect(self.configuration, readTimeout: self.readTimeout, replyArena: self.replyArena)
        try self.onConnect?(context)
        self.context = context
        if self.reconnect.connected() {
            self.logger.info("reconnected to Redis", metadata: [RedisLogKey.address: "\(self.configuration.address)"])
        }
        return context
    }

    /// Runs `body` on the connected context; a broken connection is dropped so that the next
    /// call reconnects.
    func perform<T>(_ body: (HiredisContext) throws(RedisError) -> T) throws(RedisError) -> T {
        let context = try self.connected()
        do {
            return try body(context)
        } catch {
            if context.isBroken || error.code == .connectionLost { self.context = nil }
            throw error
        }
    }

    /// After a transient error: log it, drop the connection and wait the reconnect backoff.
    /// Returns `false` if the connection is stopping.
    func backOff(after error: RedisError) -> Bool {
        self.context = nil
        let wait = self.reconnect.failed()
        if self.reconnect.shouldLog {
            self.logger.info(
                "Redis connection failed; retrying",
                metadata: [
                    RedisLogKey.address: "\(self.configuration.address)",
                    RedisLogKey.error: "\(error)",
                    RedisLogKey.attempt: "\(self.reconnect.failures)",
                ]
            )
        }
        return self.loop?.pause(for: wait) ?? false
    }

    /// Drops the connection (the next call reconnects).
    func disconnect() {
        self.context = nil
    }
}

@available(*, unavailable)
extension RedisLink: Sendable {}

extension RedisConfiguration {
    /// The reconnect backoff: ``reconnectBackoff`` doubling up to ``maximumReconnectBackoff``,
    /// each wait shortened by up to half at random.
    var reconnectSchedule: Backoff {
        Backoff(initial: self.reconnectBackoff, maximum: self.maximumReconnectBackoff, multiplier: 2, jitter: 0.5)
    }
}
