//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Synchronization

/// A producer that emits the elements of an async sequence on demand, then ends when the
/// sequence ends (normally, or with the sequence's error).
///
/// A task pulls elements from the sequence only while there is pending demand, so nothing is read
/// ahead of what subscribers asked for. Elements that arrive while the stage is busy are emitted
/// together as one batch.
public struct AsyncSequenceProducer<Base: AsyncSequence & Sendable>: Producer
where Base.Element: Sendable {
    public typealias Output = Base.Element

    /// A message from the pulling task to the producer: elements (or the end) are ready to be
    /// emitted.
    ///
    /// Only the producer's own task makes these; it has no public initializer.
    public struct Info: Sendable {
        init() {}
    }

    private let base: Base
    private let pump = AsyncPump<Base.Element>()
    private var handle: StageHandle<Self>?
    private var task: Task<Void, Never>?

    /// Creates a producer of `base`'s elements.
    public init(_ base: Base) {
        self.base = base
    }

    public mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.handle = handle
    }

    public mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        if self.task == nil, let handle = self.handle {
            let base = self.base
            let pump = self.pump
            self.task = Task { await pump.run(base) { handle.send(Info()) } }
        }
        self.pump.addDemand(demand)
    }

    public mutating func handleInfo(_ info: Info, context: inout StageContext<Output>) throws {
        let (elements, end) = self.pump.take()
        if !elements.isEmpty { context.emit(elements) }
        switch end {
        case .none:
            break
        case .some(.success):
            context.stop(.normal)
        case .some(.failure(let error)):
            context.stop(.failure(error))
        }
    }

    public mutating func terminate(reason: StopReason) async {
        self.task?.cancel()
        self.pump.cancel()
    }
}

/// State shared by an async-sequence producer and its pulling task.
final class AsyncPump<Element: Sendable>: Sendable {
    private struct State: ~Copyable {
        var demand = 0
        var elements: [Element] = []
        var end: Result<Void, any Error>?
        var notified = false
        var cancelled = false
        var waiter: CheckedContinuation<Bool, Never>?
    }

    private let state = Mutex(State())

    init() {}

    func addDemand(_ demand: Int) {
        let waiter = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.demand += demand
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: true)
    }

    func cancel() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.cancelled = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
    }

    /// Takes the elements pulled so far and the end, if the sequence ended.
    func take() -> ([Element], Result<Void, any Error>?) {
        self.state.withLock { state in
            state.notified = false
            defer { state.elements = [] }
            return (state.elements, state.end)
        }
    }

    /// Waits until there is pending demand; `false` once cancelled.
    private func waitForDemand() async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let answer = self.state.withLock { state -> Bool? in
                    if state.cancelled || Task.isCancelled { return false }
                    if state.demand > 0 { return true }
                    state.waiter = continuation
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Pulls `base` while there is demand; calls `notify` when the stage should take elements.
    func run<Base: AsyncSequence & Sendable>(_ base: Base, notify: @Sendable () -> Void) async
    where Base.Element == Element {
        var iterator = base.makeAsyncIterator()
        while await self.waitForDemand() {
            let end: Result<Void, any Error>?
            let element: Element?
            do {
                element = try await iterator.next()
                end = element == nil ? .success(()) : nil
            } catch {
                element = nil
                end = .failure(error)
            }
            let shouldNotify = self.state.withLock { state -> Bool in
                if let element {
                    state.elements.append(element)
                    state.demand -= 1
                }
                if let end { state.end = end }
                if state.notified { return false }
                state.notified = true
                return true
            }
            if shouldNotify { notify() }
            if end != nil { return }
        }
    }
}
