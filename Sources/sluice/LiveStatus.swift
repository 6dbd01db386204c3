//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Dispatch
import Sluice
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One sample of a running command, taken at each redraw.
struct StatusSample: Sendable {
    var processed: Int = 0  // settled successfully
    var failed: Int = 0  // failed for good (dead-lettered, requeued after an error, dropped)
    /// Taken beyond a command's `--count` and given back to the broker untouched: neither
    /// processed nor failed (shown only when there are some).
    var givenBack: Int = 0
    var retried: Int = 0
    var deadLettered: Int = 0
    var inFlight: Int = 0
    var stages: [StageDemand] = []  // pending demand per stage, in pipeline order
    var lag: Int? = nil  // where the source knows it (nil: unknown, not shown)
    /// `false` while the command is still connecting: ``LiveStatus`` draws nothing until a
    /// sample says the work runs (so a failed start prints only its error line).
    var running = true

    struct StageDemand: Sendable, Equatable {
        var name: String
        var pendingDemand: Int
    }

    /// Messages settled one way or the other.
    var settled: Int { self.processed + self.failed + self.givenBack }
}

/// Draws samples: redrawn in place on a terminal (ANSI, one block, rate over the last
/// interval and overall), plain periodic lines otherwise. Output to stderr by default.
final class LiveStatus: Sendable {
    enum Mode: Sendable { case automatic, terminal, lines, off }

    /// What the drawing task keeps between frames, handed to ``finish()`` when it ends.
    private struct Drawn: Sendable {
        var frames = 0
        var previous: StatusRenderer.Reading?
    }

    private let renderer: StatusRenderer?
    private let interval: Duration
    private let firstDrawAfter: Duration
    private let output: Int32
    private let sample: @Sendable () async -> StatusSample
    private let lag: LagSampler?
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private let task = Mutex<Task<Drawn, Never>?>(nil)
    /// Writes happen here, never on the cooperative pool (a terminal or pipe may block).
    private let writer = DispatchQueue(label: "sluice.live-status")
    /// Terminal style: the frame now on screen (without its redraw prefix), so that a log line
    /// can be written above it and the frame drawn again below. Used on ``writer`` only.
    private let onScreen = Mutex<String?>(nil)
    /// Whether frames are redrawn in place (a log line must then not land inside one).
    private var redrawsInPlace: Bool {
        if case .terminal = self.renderer?.style { return true }
        return false
    }

    /// The live status now drawing in place on a terminal, if any: ``StatusLogHandler`` writes
    /// log lines through it, so that they do not land inside a frame.
    static let current = Mutex<LiveStatus?>(nil)

    /// Creates a live status; nothing is drawn before ``start()``.
    ///
    /// - Parameters:
    ///   - title: The first words of every frame (`sluice drain`).
    ///   - mode: `.automatic` redraws in place when `output` is a terminal (and `TERM` is not
    ///     `dumb`) and prints plain lines otherwise.
    ///   - interval: Time between frames.
    ///   - firstDrawAfter: Nothing is drawn before this much time passed, so short runs stay
    ///     quiet (``finish()`` then draws nothing either).
    ///   - output: The file descriptor drawn on.
    ///   - lag: The source's lag, sampled in a task of its own from the first frame on (a
    ///     frame shows its last answer, never waits for it); `nil`: the source does not know
    ///     its lag. The final frame shows none (the source has ended).
    ///   - sample: Reads the command's counters; called once per frame.
    init(
        title: String,
        mode: Mode = .automatic,
        interval: Duration = .seconds(1),
        firstDrawAfter: Duration = .zero,
        output: Int32 = STDERR_FILENO,
        lag: LagSampler? = nil,
        sample: @escaping @Sendable () async -> StatusSample
    ) {
        self.interval = interval
        self.firstDrawAfter = firstDrawAfter
        self.output = output
        self.lag = lag
        self.sample = sample
        self.started = self.clock.now
        switch Self.resolve(mode, output: output) {
        case .terminal: self.renderer = StatusRenderer(title: title, style: .terminal(width: Self.width(of: output)))
        case .lines: self.renderer = StatusRenderer(title: title, style: .lines)
        case .off, .automatic: self.renderer = nil
        }
    }

    /// `.automatic` made concrete for `output`.
    static func resolve(_ mode: Mode, output: Int32) -> Mode {
        guard mode == .automatic else { return mode }
        let dumb = getenv("TERM").map { String(cString: $0) == "dumb" } ?? false
        return isatty(output) == 1 && !dumb ? .terminal : .lines
    }

    /// The terminal's width in columns (80 when it does not say).
    private static func width(of output: Int32) -> Int {
        var size = winsize()
        guard ioctl(output, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    /// Starts the periodic redraw (a task). Calling it again does nothing.
    func start() {
        guard let renderer = self.renderer else { return }
        self.task.withLock { task in
            guard task == nil else { return }
            task = Task.detached { await self.drawLoop(renderer) }
        }
        if self.redrawsInPlace { Self.current.withLock { $0 = self } }
    }

    /// Stops the redraw and draws the final state once (if anything was drawn before).
    func finish() async {
        self.lag?.stop()
        guard let renderer = self.renderer, let task = self.task.withLock({ $0 }) else { return }
        task.cancel()
        let drawn = await task.value
        if drawn.frames > 0 {
            let sample = await self.sample()
            let elapsed = self.clock.now - self.started
            self.write(renderer.render(sample, elapsed: elapsed, previous: drawn.previous, replacing: true, final: true))
        }
        Self.current.withLock { current in
            if current === self { current = nil }
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            self.writer.async {
                // What is logged from now on goes below the final frame.
                self.onScreen.withLock { $0 = nil }
                done.resume()
            }
        }
    }

    /// Writes a log line (ending in a newline) so that it does not land inside a frame drawn in
    /// place: the frame on screen is erased, the line written, and the frame drawn again below
    /// it. In lines style, or before the first frame, the line is just written.
    func log(_ line: String) {
        let output = self.output
        self.writer.async {
            guard let frame = self.onScreen.withLock({ $0 }) else { return writeAll(output, line) }
            writeAll(output, StatusRenderer.erasePrevious + line + frame)
        }
    }

    /// Draws a frame per interval until cancelled; while the command is not running yet it
    /// looks again sooner, so the first frame comes as soon as it runs.
    private func drawLoop(_ renderer: StatusRenderer) async -> Drawn {
        var drawn = Drawn()
        if self.firstDrawAfter > .zero {
            try? await Task.sleep(for: self.firstDrawAfter)
        }
        while !Task.isCancelled {
            var sample = await self.sample()
            guard !Task.isCancelled else { break }
            guard sample.running else {
                try? await Task.sleep(for: min(self.interval, .milliseconds(20)))
                continue
            }
            if let lag = self.lag {
                lag.start()
                sample.lag = sample.lag ?? lag.current
            }
            let elapsed = self.clock.now - self.started
            self.write(renderer.render(sample, elapsed: elapsed, previous: drawn.previous, replacing: drawn.frames > 0))
            drawn.frames += 1
            drawn.previous = StatusRenderer.Reading(sample: sample, elapsed: elapsed)
            try? await Task.sleep(for: self.interval)
        }
        return drawn
    }

    private func write(_ text: String) {
        let output = self.output
        let inPlace = self.redrawsInPlace
        self.writer.async {
            if inPlace {
                let frame = text.hasPrefix(StatusRenderer.erasePrevious) ? String(text.dropFirst(StatusRenderer.erasePrevious.count)) : text
                self.onScreen.withLock { $0 = frame }
            }
            writeAll(output, text)
        }
    }
}

/// Writes all of `text` to `output`, retrying after interruptions; gives up on an error (a
/// closed terminal or pipe: the status is not worth failing the command for).
func writeAll(_ output: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(output, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        offset += written
    }
}

/// Pure rendering, testable without a terminal.
struct StatusRenderer: Sendable {
    /// How frames look.
    enum Style: Sendable, Equatable {
        /// A block of ``StatusRenderer/terminalLines`` lines, each cut to the width, that the
        /// next frame replaces (cursor up, erase to the end of the screen).
        case terminal(width: Int)
        /// One plain line per frame, no escape sequences.
        case lines
    }

    /// An earlier sample and when it was taken, for the rate over the last interval.
    struct Reading: Sendable {
        var sample: StatusSample
        var elapsed: Duration
    }

    /// Lines in every terminal frame.
    static let terminalLines = 4

    /// Terminal style: moves the cursor up over the previous frame and erases to the end of the
    /// screen (the start of every frame but the first).
    static let erasePrevious = "\u{1B}[\(terminalLines)A\r\u{1B}[J"

    var title: String
    var style: Style

    /// One frame.
    ///
    /// - Parameters:
    ///   - sample: What to show.
    ///   - elapsed: Time since the command started.
    ///   - previous: The sample of the frame before, if any: the current rate is taken over the
    ///     time since then (without one it equals the overall rate).
    ///   - replacing: Terminal style: the frame starts by moving up over the previous frame
    ///     and erasing it, so that it is redrawn in place.
    ///   - final: The last frame (says `done`).
    func render(
        _ sample: StatusSample,
        elapsed: Duration,
        previous: Reading? = nil,
        replacing: Bool = false,
        final: Bool = false
    ) -> String {
        let seconds = Self.seconds(elapsed)
        let overall = seconds > 0 ? Double(sample.settled) / seconds : 0
        var current = overall
        if let previous {
            let span = seconds - Self.seconds(previous.elapsed)
            if span > 0 { current = Double(sample.settled - previous.sample.settled) / span }
        }
        var counts = [
            "processed \(Self.format(sample.processed))",
            "failed \(Self.format(sample.failed))",
            "retried \(Self.format(sample.retried))",
            "dead-lettered \(Self.format(sample.deadLettered))",
            "in flight \(Self.format(sample.inFlight))",
        ]
        if sample.givenBack > 0 { counts.insert("given back \(Self.format(sample.givenBack))", at: 2) }
        var rates = "\(Self.format(current)) msg/s now, \(Self.format(overall)) msg/s overall"
        if let lag = sample.lag { rates += ", lag \(Self.format(lag))" }
        let stages = Self.groups(sample.stages).map { "\($0.name) \(Self.format($0.pendingDemand))" }
        let demand = "pending demand: " + (stages.isEmpty ? "-" : stages.joined(separator: " | "))
        let heading = "\(self.title)  \(Self.format(elapsed))" + (final ? "  done" : "")
        switch self.style {
        case .lines:
            return "\(heading): " + counts.joined(separator: ", ") + "; \(rates); \(demand)\n"
        case .terminal(let width):
            let lines = [heading, "  " + counts.joined(separator: "   "), "  rate " + rates, "  " + demand]
            let cut = lines.map { String($0.prefix(max(width - 1, 10))) }
            let up = replacing ? Self.erasePrevious : ""
            return up + cut.joined(separator: "\n") + "\n"
        }
    }

    /// Stages that differ only by a trailing index (`processor.0`, `processor.1`) as one
    /// entry, `processor x2`, with their demand summed; the pipeline's name is left out.
    static func groups(_ stages: [StatusSample.StageDemand]) -> [StatusSample.StageDemand] {
        var order: [String] = []
        var sums: [String: (count: Int, demand: Int)] = [:]
        for stage in stages {
            var parts = stage.name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            if parts.count > 1 { parts.removeFirst() }
            if parts.count > 1, let last = parts.last, Int(last) != nil { parts.removeLast() }
            let name = parts.joined(separator: ".")
            if sums[name] == nil { order.append(name) }
            sums[name, default: (0, 0)].count += 1
            sums[name, default: (0, 0)].demand += stage.pendingDemand
        }
        return order.map { name in
            let sum = sums[name]!
            return StatusSample.StageDemand(name: sum.count > 1 ? "\(name) x\(sum.count)" : name, pendingDemand: sum.demand)
        }
    }

    /// A whole number with thousands separators: `1,234,567`.
    static func format(_ number: Int) -> String {
        let digits = String(number.magnitude)
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(digit)
        }
        return number < 0 ? "-" + grouped : grouped
    }

    /// A rate, rounded to a whole number.
    static func format(_ rate: Double) -> String {
        rate.isFinite ? Self.format(Int(rate.rounded())) : "-"
    }

    /// Elapsed time: `4.2 s` below a minute, then `3:07` or `1:02:03`.
    static func format(_ elapsed: Duration) -> String {
        let seconds = Self.seconds(elapsed)
        guard seconds >= 60 else {
            let tenths = Int((seconds * 10).rounded())
            return "\(tenths / 10).\(tenths % 10) s"
        }
        let whole = Int(seconds)
        let (hours, minutes, rest) = (whole / 3600, whole / 60 % 60, whole % 60)
        let pad = { (value: Int) in value < 10 ? "0\(value)" : "\(value)" }
        return hours > 0 ? "\(hours):\(pad(minutes)):\(pad(rest))" : "\(minutes):\(pad(rest))"
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Fills ``StatusSample``s from a running ``Pipeline``: its message counts and the pending
/// demand of each stage.
///
/// A stage answers status requests in order with its other mail, so one busy in a long
/// callback answers late: ``sample()`` waits at most a moment for the stages and otherwise
/// shows the demand they reported last time (one request at a time is outstanding).
final class PipelineStatusSampler: Sendable {
    private struct State: Sendable {
        var stages: [StatusSample.StageDemand] = []
        var seenRunning = false
        var refresh: Task<Void, Never>?
    }

    private let statistics: @Sendable () -> PipelineStatistics
    private let statuses: @Sendable () async -> [StageStatus]
    private let givenBack: @Sendable () -> Int
    private let wait: Duration
    private let state = Mutex(State())

    /// Samples `pipeline`, waiting at most `wait` for its stages at each sample. `givenBack`
    /// counts the messages the command took beyond its `--count` and failed with the
    /// `.requeue` disposition: they are shown as given back, not as failed.
    init<Source: PipelineSource>(
        _ pipeline: Pipeline<Source>,
        wait: Duration = .milliseconds(200),
        givenBack: @escaping @Sendable () -> Int = { 0 }
    ) {
        self.statistics = { pipeline.statistics }
        self.statuses = { await pipeline.stageStatuses() }
        self.givenBack = givenBack
        self.wait = wait
    }

    /// The pending demand of one stage: what it asked its producers for and did not receive;
    /// for a source (which has no producer) what its consumers asked it for and it did not
    /// send yet, that is what it still has to fetch.
    static func pendingDemand(of status: StageStatus) -> Int {
        status.producers.isEmpty
            ? status.subscribers.reduce(0) { $0 + $1.pendingDemand }
            : status.producers.reduce(0) { $0 + $1.pendingDemand }
    }

    /// The current counts and the stages' pending demand. ``StatusSample/running`` is `false`
    /// until the pipeline was seen running its stages.
    func sample() async -> StatusSample {
        await self.refreshStages()
        let statistics = self.statistics()
        // Counted by the handler just before it fails the message: at most the requeued ones.
        let givenBack = min(self.givenBack(), statistics.requeued)
        let (stages, running) = self.state.withLock { ($0.stages, $0.seenRunning) }
        return StatusSample(
            processed: statistics.acknowledged,
            failed: statistics.failed - givenBack,
            givenBack: givenBack,
            retried: statistics.retried,
            deadLettered: statistics.deadLettered,
            inFlight: statistics.inFlight,
            stages: stages,
            running: running
        )
    }

    /// Asks the stages for their status (unless a request is still outstanding) and waits for
    /// the answers at most ``wait``.
    private func refreshStages() async {
        let statuses = self.statuses
        let refresh = self.state.withLock { state -> Task<Void, Never> in
            if let refresh = state.refresh { return refresh }
            let refresh = Task.detached {
                let stages = await statuses().map { StatusSample.StageDemand(name: $0.name, pendingDemand: Self.pendingDemand(of: $0)) }
                self.state.withLock { state in
                    state.refresh = nil
                    // Empty before the stages start and after they ended: no demand to show.
                    state.stages = stages
                    if !stages.isEmpty { state.seenRunning = true }
                }
            }
            state.refresh = refresh
            return refresh
        }
        let wait = self.wait
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = ResumeOnce(continuation)
            Task.detached {
                try? await Task.sleep(for: wait)
                once.resume()
            }
            Task.detached {
                await refresh.value
                once.resume()
            }
        }
    }
}

/// Resumes a continuation the first time it is asked to, ignoring later calls.
private final class ResumeOnce: Sendable {
    private let continuation: Mutex<CheckedContinuation<Void, Never>?>

    init(_ continuation: CheckedContinuation<Void, Never>) {
        self.continuation = Mutex(continuation)
    }

    func resume() {
        self.continuation.withLock { continuation in
            defer { continuation = nil }
            return continuation
        }?.resume()
    }
}

/// The `--status` option of commands that show a live status.
enum StatusOption: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Redraw in place on a terminal, plain lines otherwise.
    case auto
    /// Always redraw in place (ANSI escape sequences).
    case terminal
    /// Always plain lines.
    case lines
    /// No live status.
    case off

    /// The live status mode.
    var mode: LiveStatus.Mode {
        switch self {
        case .auto: .automatic
        case .terminal: .terminal
        case .lines: .lines
        case .off: .off
        }
    }
}
