//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import Logging
import Synchronization
import Testing

@testable import sluice

#if canImport(Glibc)
import Glibc
#endif

private let escape = "\u{1B}"

private func sample(settled: Int, failed: Int = 0, lag: Int? = nil) -> StatusSample {
    StatusSample(
        processed: settled - failed,
        failed: failed,
        retried: 3,
        deadLettered: failed,
        inFlight: 1234,
        stages: [
            .init(name: "demo.source", pendingDemand: 100),
            .init(name: "demo.processor.0", pendingDemand: 40),
            .init(name: "demo.processor.1", pendingDemand: 60),
            .init(name: "demo.batcher.orders", pendingDemand: 1500),
        ],
        lag: lag
    )
}

@Suite("live status rendering")
struct StatusRendererTests {
    @Test("terminal frames have a fixed line count and redraw in place: cursor up over the last frame, erase")
    func terminalFramesRedrawInPlace() {
        let renderer = StatusRenderer(title: "sluice test", style: .terminal(width: 60))
        let first = renderer.render(sample(settled: 1000), elapsed: .seconds(1))
        let second = renderer.render(
            sample(settled: 3000, lag: 77),
            elapsed: .seconds(2),
            previous: .init(sample: sample(settled: 1000), elapsed: .seconds(1)),
            replacing: true
        )
        #expect(!first.contains(escape), "a first frame has nothing to replace: \(first.debugDescription)")
        #expect(second.hasPrefix("\(escape)[\(StatusRenderer.terminalLines)A\r\(escape)[J"), "\(second.debugDescription)")
        for frame in [first, second] {
            #expect(frame.hasSuffix("\n"))
            #expect(frame.filter { $0 == "\n" }.count == StatusRenderer.terminalLines, "\(frame.debugDescription)")
            let body = frame.replacingOccurrences(of: "\(escape)[\(StatusRenderer.terminalLines)A\r\(escape)[J", with: "")
            for line in body.split(separator: "\n") {
                #expect(line.count < 60, "a line is cut to the terminal's width: \(line)")
            }
        }
        #expect(second.contains("lag 77"))
        #expect(!first.contains("lag"))
        let final = renderer.render(sample(settled: 3000), elapsed: .seconds(3), replacing: true, final: true)
        #expect(final.contains("done"))
    }

    @Test("lines mode: one plain line per sample, no escape sequences, the whole demand list")
    func linesAreOnePlainLineEach() {
        let renderer = StatusRenderer(title: "sluice test", style: .lines)
        let line = renderer.render(
            sample(settled: 2_500_000, failed: 12),
            elapsed: .milliseconds(2500),
            previous: .init(sample: sample(settled: 1_000_000), elapsed: .seconds(1)),
            replacing: true
        )
        #expect(!line.contains(escape))
        #expect(line.filter { $0 == "\n" }.count == 1 && line.hasSuffix("\n"))
        #expect(line.hasPrefix("sluice test  2.5 s: "), "\(line)")
        #expect(line.contains("processed 2,499,988, failed 12, retried 3, dead-lettered 12, in flight 1,234"), "\(line)")
        #expect(line.contains("pending demand: source 100 | processor x2 100 | batcher.orders 1,500"), "\(line)")
    }

    @Test("the lag, where the source knows it, follows the rates: ', lag N' with separators; nothing when unknown")
    func lagFollowsTheRates() {
        let renderer = StatusRenderer(title: "sluice test", style: .lines)
        let known = renderer.render(sample(settled: 10, lag: 1_234_567), elapsed: .seconds(1))
        #expect(known.contains("msg/s overall, lag 1,234,567; pending demand"), "\(known)")
        let zero = renderer.render(sample(settled: 10, lag: 0), elapsed: .seconds(1))
        #expect(zero.contains("msg/s overall, lag 0; "), "\(zero)")
        let unknown = renderer.render(sample(settled: 10), elapsed: .seconds(1))
        #expect(!unknown.contains("lag"), "\(unknown)")
    }

    @Test("messages given back beyond --count are shown as given back, not as failed")
    func givenBackIsNotFailed() {
        let renderer = StatusRenderer(title: "sluice tail", style: .lines)
        var given = sample(settled: 3)
        given.givenBack = 17
        let line = renderer.render(given, elapsed: .seconds(1), replacing: true, final: true)
        #expect(line.contains("processed 3, failed 0, given back 17, retried 3"), "\(line)")
        #expect(!renderer.render(sample(settled: 3), elapsed: .seconds(1), replacing: true).contains("given back"))
    }

    @Test("the current rate is taken since the previous sample, the overall one since the start")
    func ratesComeFromTheSamples() {
        let renderer = StatusRenderer(title: "t", style: .lines)
        let line = renderer.render(
            sample(settled: 3000),
            elapsed: .seconds(2),
            previous: .init(sample: sample(settled: 1000), elapsed: .milliseconds(1500))
        )
        #expect(line.contains("4,000 msg/s now, 1,500 msg/s overall"), "\(line)")
        let first = renderer.render(sample(settled: 500), elapsed: .milliseconds(250))
        #expect(first.contains("2,000 msg/s now, 2,000 msg/s overall"), "\(first)")
        let atStart = renderer.render(sample(settled: 0), elapsed: .zero)
        #expect(atStart.contains("0 msg/s now, 0 msg/s overall"), "\(atStart)")
    }

    @Test("numbers get thousands separators; durations read as seconds, then minutes and hours")
    func numbersAreFormatted() {
        #expect(StatusRenderer.format(0) == "0")
        #expect(StatusRenderer.format(999) == "999")
        #expect(StatusRenderer.format(1000) == "1,000")
        #expect(StatusRenderer.format(1_234_567) == "1,234,567")
        #expect(StatusRenderer.format(-12_345) == "-12,345")
        #expect(StatusRenderer.format(1499.6) == "1,500")
        #expect(StatusRenderer.format(Double.nan) == "-")
        #expect(StatusRenderer.format(Duration.milliseconds(4200)) == "4.2 s")
        #expect(StatusRenderer.format(Duration.milliseconds(59_940)) == "59.9 s")
        #expect(StatusRenderer.format(Duration.seconds(187)) == "3:07")
        #expect(StatusRenderer.format(Duration.seconds(3723)) == "1:02:03")
    }

    @Test("stages that differ by a trailing index are one entry, demand summed, the pipeline name left out")
    func stagesAreGrouped() {
        let groups = StatusRenderer.groups([
            .init(name: "p.source", pendingDemand: 5),
            .init(name: "p.processor.0", pendingDemand: 1),
            .init(name: "p.processor.1", pendingDemand: 2),
            .init(name: "p.processor.2", pendingDemand: 3),
            .init(name: "p.batcher.a", pendingDemand: 10),
            .init(name: "p.batch_processor.a.0", pendingDemand: 4),
            .init(name: "p.batcher.b", pendingDemand: 20),
        ])
        #expect(
            groups == [
                .init(name: "source", pendingDemand: 5),
                .init(name: "processor x3", pendingDemand: 6),
                .init(name: "batcher.a", pendingDemand: 10),
                .init(name: "batch_processor.a", pendingDemand: 4),
                .init(name: "batcher.b", pendingDemand: 20),
            ]
        )
    }
}

/// How many samples a live status took.
private final class SampleCount: Sendable {
    let value = Atomic<Int>(0)
}

/// The read end of a pipe and everything written to it, collected on a thread of its own.
private final class PipeReader: @unchecked Sendable {
    let writeEnd: Int32
    private let readEnd: Int32
    private let done = DispatchSemaphore(value: 0)
    private let bytes = Mutex<[UInt8]>([])

    init() {
        var ends: [Int32] = [0, 0]
        _ = pipe(&ends)
        self.readEnd = ends[0]
        self.writeEnd = ends[1]
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(self.readEnd, &buffer, buffer.count)
                guard count > 0 else { break }
                self.bytes.withLock { $0 += buffer[0..<count] }
            }
            close(self.readEnd)
            self.done.signal()
        }.start()
    }

    /// Closes the write end and returns all that was written.
    func finish() async throws -> String {
        close(self.writeEnd)
        try await offPool { self.done.wait() }
        return String(decoding: self.bytes.withLock { $0 }, as: UTF8.self)
    }
}

@Suite("live status", .timeLimit(.minutes(1)))
struct LiveStatusTests {
    @Test("lines mode draws a plain line per interval and a final one that says done")
    func drawsLinesPeriodically() async throws {
        let counter = SampleCount()
        let text = try await drawn(for: .milliseconds(100), until: counter, reaches: 3) { output in
            LiveStatus(title: "sluice test", mode: .lines, interval: .milliseconds(20), output: output) {
                StatusSample(processed: 100 * counter.value.add(1, ordering: .relaxed).newValue)
            }
        }
        let lines = text.split(separator: "\n")
        #expect(!text.contains(escape))
        #expect(lines.count >= 3, "\(text)")
        #expect(lines.allSatisfy { $0.hasPrefix("sluice test  ") }, "\(text)")
        #expect(lines.last?.contains("done") == true, "\(text)")
        #expect(lines.dropLast().allSatisfy { !$0.contains("done") })
        // The samples grow, and each line shows the sample it was drawn from.
        let processed = lines.compactMap { line in
            line.components(separatedBy: "processed ").last?.components(separatedBy: ", failed").first
                .flatMap { Int($0.replacingOccurrences(of: ",", with: "")) }
        }
        #expect(processed.count == lines.count && processed == processed.sorted(), "\(text)")
    }

    @Test("nothing is drawn while the sample says the command is not running yet, nor after a quiet start")
    func drawsNothingBeforeRunningOrBeforeTheDelay() async throws {
        let notRunning = try await drawn(for: .milliseconds(100)) { output in
            LiveStatus(title: "t", mode: .terminal, interval: .milliseconds(10), output: output) { StatusSample(running: false) }
        }
        #expect(notRunning.isEmpty)
        let quiet = try await drawn(for: .milliseconds(50)) { output in
            LiveStatus(title: "t", mode: .lines, firstDrawAfter: .seconds(5), output: output) { StatusSample() }
        }
        #expect(quiet.isEmpty)
        let off = try await drawn(for: .milliseconds(50)) { output in
            LiveStatus(title: "t", mode: .off, interval: .milliseconds(10), output: output) { StatusSample() }
        }
        #expect(off.isEmpty)
    }

    /// What the live status made for a pipe draws when it runs for `duration` (and at least
    /// until `samples` reached `least`, however loaded the machine) and finishes.
    private func drawn(
        for duration: Duration,
        until samples: SampleCount? = nil,
        reaches least: Int = 0,
        _ make: (Int32) -> LiveStatus
    ) async throws -> String {
        let reader = PipeReader()
        let status = make(reader.writeEnd)
        status.start()
        try await Task.sleep(for: duration)
        while let samples, samples.value.load(ordering: .relaxed) < least {
            try await Task.sleep(for: .milliseconds(10))
        }
        await status.finish()
        return try await reader.finish()
    }

    @Test("terminal mode redraws each frame over the previous one")
    func terminalModeRedraws() async throws {
        let counter = SampleCount()
        let text = try await drawn(for: .milliseconds(100), until: counter, reaches: 3) { output in
            LiveStatus(title: "t", mode: .terminal, interval: .milliseconds(20), output: output) {
                counter.value.add(1, ordering: .relaxed)
                return StatusSample()
            }
        }
        let redraw = "\(escape)[\(StatusRenderer.terminalLines)A\r\(escape)[J"
        let frames = text.components(separatedBy: redraw)
        #expect(frames.count >= 3, "\(text.debugDescription)")
        #expect(!frames[0].isEmpty && !frames[0].contains(escape))
        #expect(frames.allSatisfy { $0.filter { $0 == "\n" }.count == StatusRenderer.terminalLines })
        #expect(frames.last?.contains("done") == true)
    }

    @Test("a log line while frames redraw in place lands above the frame, which is drawn again below it")
    func logLinesGoAboveTheFrame() async throws {
        let counter = SampleCount()
        let reader = PipeReader()
        let status = LiveStatus(title: "t", mode: .terminal, interval: .milliseconds(20), output: reader.writeEnd) {
            counter.value.add(1, ordering: .relaxed)
            return StatusSample()
        }
        status.log("before any frame\n")
        status.start()
        while counter.value.load(ordering: .relaxed) < 2 { try await Task.sleep(for: .milliseconds(5)) }
        status.log("reconnecting in 0.5 s\n")
        let seen = counter.value.load(ordering: .relaxed)
        while counter.value.load(ordering: .relaxed) < seen + 2 { try await Task.sleep(for: .milliseconds(5)) }
        await status.finish()
        status.log("after the final frame\n")
        try await Task.sleep(for: .milliseconds(50))  // the writer queue
        let text = try await reader.finish()

        let segments = text.components(separatedBy: StatusRenderer.erasePrevious)
        // Before the first frame the line is written as it is; the first frame follows it.
        #expect(segments[0].hasPrefix("before any frame\nt  "), "\(text.debugDescription)")
        // Each erase takes away one frame (4 lines). The segment that starts with the log line
        // holds it and a whole frame, so the next erase leaves the log line on screen.
        let logged = try #require(segments.first { $0.hasPrefix("reconnecting in 0.5 s\n") }, "\(text.debugDescription)")
        let lines = logged.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 1 + StatusRenderer.terminalLines, "\(logged.debugDescription)")
        #expect(lines.dropFirst().first?.hasPrefix("t  ") == true, "\(logged.debugDescription)")
        // Frames without a log line are exactly one frame, and after the final frame a line is
        // written below it.
        #expect(segments.dropFirst().filter { $0 != logged }.allSatisfy { $0.filter { $0 == "\n" }.count == StatusRenderer.terminalLines || $0.hasSuffix("after the final frame\n") })
        #expect(text.hasSuffix("after the final frame\n"))
        #expect(segments.last?.contains("done") == true)
    }

    @Test("log lines read like swift-log's stream handler: time, level, label, sorted metadata, source, message")
    func logLineFormat() {
        let event = LogEvent(level: .warning, message: "reconnecting", metadata: nil, source: "SluiceRabbitMQ", file: "f", function: "g", line: 1)
        let line = StatusLogHandler.format(event, metadata: ["b": "2", "a": "1"], label: "sluice", timestamp: "2026-12-01T18:00:00+0000")
        #expect(line == "2026-12-01T18:00:00+0000 warning sluice: a=1 b=2 [SluiceRabbitMQ] reconnecting\n")
        let bare = StatusLogHandler.format(event, metadata: [:], label: "", timestamp: "T")
        #expect(bare == "T warning: [SluiceRabbitMQ] reconnecting\n")
    }

    @Test("frames show the lag sampler's last answer; the final frame none (the source has ended)")
    func framesShowTheLag() async throws {
        let counter = SampleCount()
        let lag = LagSampler(interval: .milliseconds(10)) { 4321 }
        let text = try await drawn(for: .milliseconds(100), until: counter, reaches: 5) { output in
            LiveStatus(title: "t", mode: .lines, interval: .milliseconds(20), output: output, lag: lag) {
                counter.value.add(1, ordering: .relaxed)
                return StatusSample()
            }
        }
        let lines = text.split(separator: "\n")
        #expect(lines.dropLast().contains { $0.contains(", lag 4,321;") }, "\(text)")
        #expect(lines.last.map { $0.contains("done") && !$0.contains("lag") } == true, "\(text)")
        #expect(lag.current == nil, "stopped with the status")
    }

    @Test("a failing or hanging lag query shows no lag and never holds a frame back", arguments: ["failing", "hanging"])
    func aFailingOrHangingQueryShowsNoLag(kind: String) async throws {
        let counter = SampleCount()
        let lag = LagSampler(interval: .milliseconds(10)) { () async throws -> Int? in
            if kind == "failing" { throw LagUnreachable() }
            try await Task.sleep(for: .seconds(60))
            return 1
        }
        let clock = ContinuousClock()
        let started = clock.now
        let text = try await drawn(for: .milliseconds(100), until: counter, reaches: 5) { output in
            LiveStatus(title: "t", mode: .lines, interval: .milliseconds(20), output: output, lag: lag) {
                counter.value.add(1, ordering: .relaxed)
                return StatusSample()
            }
        }
        #expect(clock.now - started < .seconds(30), "frames kept coming and finish() did not wait for the query")
        #expect(text.split(separator: "\n").count >= 5, "\(text)")
        #expect(!text.contains("lag"), "\(text)")
    }

    @Test("automatic mode: plain lines on a pipe")
    func automaticModeOnAPipe() {
        let reader = PipeReader()
        defer { close(reader.writeEnd) }
        #expect(LiveStatus.resolve(.automatic, output: reader.writeEnd) == .lines)
        #expect(LiveStatus.resolve(.off, output: reader.writeEnd) == .off)
    }
}

@Suite("pipeline stage statuses", .timeLimit(.minutes(1)))
struct PipelineStatusSamplerTests {
    @Test("a running pipeline reports its stages in order with their pending demand; none before and after")
    func samplesARunningPipeline() async throws {
        let pipeline = Pipeline("sampled", source: DemoOrders(count: 1_000_000), configuration: PipelineConfiguration(failurePolicy: .drop)) {
            Processors(concurrency: 2, maxDemand: 10) { _ in try await Task.sleep(for: .milliseconds(1)) }
            Batcher("b", size: 5, timeout: .milliseconds(10)) { _ in }
        }
        let sampler = PipelineStatusSampler(pipeline, wait: .seconds(5))
        let before = await sampler.sample()
        #expect(!before.running && before.stages.isEmpty)
        #expect(await pipeline.stageStatuses().isEmpty)
        let run = Task { try await pipeline.run() }
        var sample = await sampler.sample()
        while !sample.running {
            try await Task.sleep(for: .milliseconds(10))
            sample = await sampler.sample()
        }
        while sample.processed == 0 {
            try await Task.sleep(for: .milliseconds(10))
            sample = await sampler.sample()
        }
        #expect(
            sample.stages.map(\.name) == [
                "sampled.source", "sampled.processor.0", "sampled.processor.1", "sampled.batcher.b", "sampled.batch_processor.b.0",
            ]
        )
        // The processors ask for 10 at a time and handle them slowly: the source owes what they
        // asked for and did not receive, at most their maxDemand each.
        #expect(sample.stages[1].pendingDemand <= 10 && sample.stages[2].pendingDemand <= 10, "\(sample.stages)")
        #expect(sample.stages[0].pendingDemand <= 20, "\(sample.stages)")
        #expect(sample.inFlight > 0, "\(sample)")
        pipeline.drain()
        try await run.value
        let after = await sampler.sample()
        #expect(after.running && after.stages.isEmpty)
        #expect(after.inFlight == 0 && after.processed == pipeline.statistics.received && after.processed < 1_000_000)
        #expect(await pipeline.stageStatuses().isEmpty)
    }

    @Test("a sample waits for stages busy in a long callback only a moment, then shows what they said last")
    func aBusyStageDoesNotHoldTheSample() async throws {
        let open = Atomic<Bool>(false)
        let pipeline = Pipeline("busy", source: DemoOrders(count: 1_000_000), configuration: PipelineConfiguration(failurePolicy: .drop)) {
            Processors(concurrency: 1, maxDemand: 10) { _ in
                while !open.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        let sampler = PipelineStatusSampler(pipeline, wait: .milliseconds(100))
        let run = Task { try await pipeline.run() }
        while pipeline.statistics.received == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0..<3 { _ = await sampler.sample() }
        // The processor stays busy until opened: a sample that waited for it would never return.
        #expect(clock.now - started < .seconds(10), "three samples while the processor is busy")
        open.store(true, ordering: .relaxed)
        pipeline.drain()
        try await run.value
    }
}

/// What a failing lag query throws in these tests.
private struct LagUnreachable: Error {}
