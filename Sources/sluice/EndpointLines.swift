//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a ``LineSource`` takes its messages from.
enum LineInput: Sendable, CustomStringConvertible {
    /// The lines of standard input (`stdin:`).
    case standardInput
    /// The lines of a file (`file:PATH`).
    case file(String)
    /// `count` generated payloads of `size` bytes each (`produce --count N --size B`).
    case generated(count: Int, size: Int)

    var description: String {
        switch self {
        case .standardInput: return "stdin"
        case .file(let path): return "file:\(path)"
        case .generated(let count, let size): return "\(count) generated payloads of \(size) bytes"
        }
    }
}

/// What a ``LineSource`` knows about a message: which line (or generated payload) it is.
struct LineMetadata: MessageMetadata {
    /// The line number, from 1.
    var line: Int
}

/// A pipeline source of text lines (standard input or a file, read in 1 MiB chunks on a
/// thread of its own, never on the cooperative pool) or of generated payloads.
///
/// Lines are emitted only as demanded; the reader stops reading while 64k lines wait. There
/// is nothing to give back: settling a line does nothing. With a `limit` it emits at most
/// that many and then ends.
struct LineSource: PipelineSource {
    typealias Metadata = LineMetadata

    /// The input.
    let input: LineInput
    /// The most lines emitted (`nil`: all of them).
    let limit: Int?

    func makeParts(context: SourceContext) async throws -> SourceParts<LineProducer, LineAcknowledger> {
        let feed = LineFeed(limit: self.limit)
        switch self.input {
        case .standardInput:
            feed.startReading(descriptor: STDIN_FILENO, name: "stdin")
        case .file(let path):
            let descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { throw EndpointError("cannot open \(path): \(String(cString: strerror(errno)))") }
            feed.startReading(descriptor: descriptor, name: path, closing: true)
        case .generated(let count, let size):
            feed.generate(count: count, size: size)
        }
        return SourceParts(stage: LineProducer(feed: feed), acknowledger: LineAcknowledger())
    }
}

/// Control of a ``LineProducer``.
enum LineSourceInfo: SourceInfo {
    /// Lines arrived, or the input ended.
    case ready
    /// Stop emitting and end.
    case drain
}

/// The producer stage of a ``LineSource``: emits buffered lines up to the demand.
struct LineProducer: Producer, Sendable {
    typealias Output = Message<LineMetadata>
    typealias Info = LineSourceInfo

    let feed: LineFeed
    private var demand = 0

    init(feed: LineFeed) {
        self.feed = feed
    }

    mutating func didStart(handle: StageHandle<Self>, context: inout StageContext<Output>) {
        self.feed.attach { handle.send(.ready) }
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        self.demand += demand
        self.emit(&context)
    }

    mutating func handleInfo(_ info: LineSourceInfo, context: inout StageContext<Output>) {
        switch info {
        case .ready:
            self.emit(&context)
        case .drain:
            self.feed.stop()
            context.stop(.normal)
        }
    }

    private mutating func emit(_ context: inout StageContext<Output>) {
        let (messages, end) = self.feed.take(self.demand)
        self.demand -= messages.count
        if !messages.isEmpty { context.emit(messages) }
        switch end {
        case .none: break
        case .some(.success): context.stop(.normal)
        case .some(.failure(let error)): context.stop(.failure(error))
        }
    }

    mutating func terminate(reason: StopReason) async {
        self.feed.stop()
    }
}

/// Settles lines: there is nothing to give back or confirm.
struct LineAcknowledger: Acknowledger {
    func settle(_ settlement: Settlement<LineMetadata>) {}
}

/// The lines read and not yet emitted, shared by the reader thread (or generator) and the
/// producer stage; the reader waits while ``highWater`` lines are buffered.
final class LineFeed: Sendable {
    private struct State: ~Copyable {
        var lines: [Message<LineMetadata>] = []
        /// Index of the first line of `lines` not emitted yet.
        var next = 0
        var numbered = 0
        var emitted = 0
        var end: Result<Void, EndpointError>?
        var stopped = false
        var notify: (@Sendable () -> Void)?
        var generated: (remaining: Int, size: Int)?
    }

    /// Buffered lines at which the reader stops reading until the stage took some.
    static let highWater = 65_536
    private static let chunkSize = 1 << 20

    private let state = Mutex(State())
    private let room = NSCondition()
    private let limit: Int?

    init(limit: Int?) {
        self.limit = limit
    }

    /// Sets what to call when lines arrive (and calls it once if some already did).
    func attach(_ notify: @escaping @Sendable () -> Void) {
        self.state.withLock { $0.notify = notify }
        notify()
    }

    /// Stops the reader at its next chunk; the stage emits nothing more.
    func stop() {
        self.state.withLock { $0.stopped = true }
        self.room.lock()
        self.room.broadcast()
        self.room.unlock()
    }

    /// Produces `count` payloads of `size` bytes on demand: the line number in decimal,
    /// padded with `x` (or cut) to the size.
    func generate(count: Int, size: Int) {
        self.state.withLock { state in
            state.generated = (count, size)
            if count == 0 { state.end = .success(()) }
        }
    }

    /// Up to `demand` lines (fewer if the limit is near), and the end of the input once
    /// every line was emitted.
    func take(_ demand: Int) -> (messages: [Message<LineMetadata>], end: Result<Void, EndpointError>?) {
        let (result, wake) = self.state.withLock { state -> ((messages: [Message<LineMetadata>], end: Result<Void, EndpointError>?), Bool) in
            var wanted = demand
            if let limit = self.limit { wanted = min(wanted, limit - state.emitted) }
            if state.stopped { return (([], .success(())), false) }
            var messages: [Message<LineMetadata>] = []
            if var generated = state.generated {
                let count = min(wanted, generated.remaining)
                messages = Self.generated(from: state.numbered, count: count, size: generated.size)
                state.numbered += count
                generated.remaining -= count
                state.generated = generated
                if generated.remaining == 0 { state.end = .success(()) }
            } else {
                let count = min(wanted, state.lines.count - state.next)
                messages = Array(state.lines[state.next..<state.next + count])
                state.next += count
                if state.next == state.lines.count {
                    state.lines.removeAll(keepingCapacity: true)
                    state.next = 0
                }
            }
            state.emitted += messages.count
            let buffered = state.lines.count - state.next
            let reachedLimit = self.limit.map { state.emitted >= $0 } ?? false
            let end: Result<Void, EndpointError>? = reachedLimit ? .success(()) : (buffered == 0 ? state.end : nil)
            return ((messages, end), buffered < Self.highWater)
        }
        if wake {
            self.room.lock()
            self.room.broadcast()
            self.room.unlock()
        }
        return result
    }

    private static func generated(from first: Int, count: Int, size: Int) -> [Message<LineMetadata>] {
        var parts: [[UInt8]] = []
        parts.reserveCapacity(count)
        for number in first + 1..<first + 1 + count {
            var bytes = Array(String(number).utf8.prefix(size))
            if bytes.count < size { bytes += repeatElement(UInt8(ascii: "x"), count: size - bytes.count) }
            parts.append(bytes)
        }
        return zip(Payload.packing(parts), first + 1..<first + 1 + count).map { Message(payload: $0, metadata: LineMetadata(line: $1)) }
    }

    /// Reads `descriptor` to its end on a thread of its own, splitting it into lines (a final
    /// line without a newline counts; a `\r` before the newline is dropped).
    func startReading(descriptor: Int32, name: String, closing: Bool = false) {
        let thread = Thread { [self] in
            self.read(descriptor: descriptor, name: name)
            if closing { close(descriptor) }
        }
        thread.name = "sluice-lines"
        thread.start()
    }

    private func read(descriptor: Int32, name: String) {
        var chunk = [UInt8](repeating: 0, count: Self.chunkSize)
        var carry: [UInt8] = []
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, Self.chunkSize) }
            if count < 0 {
                if errno == EINTR { continue }
                self.finish(.failure(EndpointError("cannot read \(name): \(String(cString: strerror(errno)))")))
                return
            }
            if count == 0 {
                if !carry.isEmpty, !self.append([carry[...]]) { return }
                self.finish(.success(()))
                return
            }
            var parts: [ArraySlice<UInt8>] = []
            var start = 0
            chunk.withUnsafeBytes { buffer in
                let base = buffer.baseAddress!
                while start < count, let found = memchr(base + start, Int32(UInt8(ascii: "\n")), count - start) {
                    let end = base.distance(to: UnsafeRawPointer(found))
                    parts.append(chunk[start..<end])
                    start = end + 1
                }
            }
            if !carry.isEmpty, !parts.isEmpty {
                carry += parts[0]
                parts[0] = carry[...]
                carry = []
            }
            if start < count { carry += chunk[start..<count] }
            for index in parts.indices where parts[index].last == UInt8(ascii: "\r") { parts[index] = parts[index].dropLast() }
            if !parts.isEmpty, !self.append(parts) { return }
        }
    }

    /// Queues lines, waiting while the buffer is full; `false` once stopped or at the limit.
    private func append(_ parts: [ArraySlice<UInt8>]) -> Bool {
        self.room.lock()
        while self.state.withLock({ !$0.stopped && $0.lines.count - $0.next >= Self.highWater }) { self.room.wait() }
        self.room.unlock()
        let payloads = Payload.packing(parts)
        let (notify, more) = self.state.withLock { state -> ((@Sendable () -> Void)?, Bool) in
            guard !state.stopped else { return (nil, false) }
            for payload in payloads {
                state.numbered += 1
                state.lines.append(Message(payload: payload, metadata: LineMetadata(line: state.numbered)))
            }
            return (state.notify, self.limit.map { state.numbered < $0 } ?? true)
        }
        notify?()
        return more
    }

    private func finish(_ end: Result<Void, EndpointError>) {
        let notify = self.state.withLock { state in
            state.end = end
            return state.notify
        }
        notify?()
    }
}

/// An endpoint problem (a bad URL, a file that cannot be opened or written): one line.
struct EndpointError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
