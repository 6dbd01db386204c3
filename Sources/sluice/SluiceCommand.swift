//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Logging
import Sluice
import SluiceKafka
import SluiceRabbitMQ
import SluiceRedis
import Synchronization

/// The `sluice` command-line tool.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Move messages from brokers through Sluice pipelines.",
        subcommands: [Demo.self, Drain.self, Tail.self, Produce.self, Bridge.self, WordCount.self]
    )

    /// Parses and runs like the argument parser's own `main`, but every message it prints
    /// (usage errors such as "Unexpected argument" repeat what was typed) goes through
    /// ``Redaction/redact(_:)``, so that no password or secret in a URL is ever printed.
    static func main() async {
        // Log lines (reconnects, refused settlements) go to stderr, above a live status that is
        // redrawn in place rather than into it.
        LoggingSystem.bootstrap { label in StatusLogHandler(label: label) }
        do {
            var command = try Self.parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            let code = Self.exitCode(for: error)
            let message = Redaction.redact(Self.oneLineMessage(for: error, code: code))
            if !message.isEmpty {
                let stream = code == .success ? FileHandle.standardOutput : FileHandle.standardError
                stream.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            }
            Foundation.exit(code.rawValue)
        }
    }

    /// What the argument parser prints for `error`: help and version texts whole; a usage
    /// error (a bad or missing value, an unknown argument) in one line: its first, then the
    /// option's help (which states its range) and the parser's pointer to `--help`, instead
    /// of the help and usage lines below it.
    static func oneLineMessage(for error: any Error, code: ExitCode) -> String {
        let full = Self.fullMessage(for: error)
        guard code != .success else { return full }
        guard let first = Self.message(for: error).split(whereSeparator: \.isNewline).first else { return full }
        let lines = full.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        var line = "Error: " + first
        // "Help:  --count <count>  How many … (1 or more)." names the range of a bad value.
        if let help = lines.first(where: { $0.hasPrefix("Help:") }) {
            let text = help.dropFirst("Help:".count).trimmingCharacters(in: CharacterSet.whitespaces.union(CharacterSet(charactersIn: ".")))
            line += ": " + (text.range(of: "  ").map { String(text[$0.upperBound...]).trimmingCharacters(in: .whitespaces) } ?? text)
        }
        if let hint = lines.last(where: { $0.contains("--help") }) { line += "; " + hint.prefix(1).lowercased() + hint.dropFirst() }
        return line
    }
}

/// `sluice drain URL --count N`: consume and acknowledge N messages, discarding them.
struct Drain: AsyncParsableCommand, SourceUser {
    static let configuration = CommandConfiguration(
        abstract: "Consume and acknowledge N messages from a broker URL through a pipeline, discarding them.",
        discussion: """
            Supported URLs: redis://[user:password@]host[:port][/db]?key=KEY[&mode=list|reliable|stream][&group=G][&consumer=C] \
            and unix:///path/to/redis.sock?key=KEY; amqp://[user:password@]host[:port][/vhost]?queue=QUEUE[&prefetch=P]; \
            kafka://host:port[,host:port]/topic?group=G[&offset=earliest|latest][&librdkafka.property=value]. \
            The drain never asks a Redis source for more than N (what is still missing), so nothing has to be \
            given back; messages a RabbitMQ queue delivered beyond N are given back to the broker, and Kafka \
            messages taken beyond N are not committed. SIGINT or SIGTERM drains gracefully: reading stops, what \
            was taken is handled and settled (or given back to the head of the list, in order), the summary line \
            is printed, and the exit status is 130 or 143. Passwords never appear in output; keep one out of the \
            URL (and `ps`) with --password-file or the URL parameter password_env=VARIABLE. stdin: and \
            file:PATH drain lines.

            Examples:
              sluice drain 'redis://127.0.0.1:6379/0?key=jobs&mode=reliable' --count 1000
              sluice drain 'amqp://127.0.0.1:5672/?queue=orders' --count 100
            """
    )

    @Argument(help: "The broker URL to drain.")
    var url: String

    // `.unconditional`: `--count -5` is read as a (bad) value, not as an unknown option.
    @Option(parsing: .unconditional, help: "How many messages to consume and acknowledge (1 or more).")
    var count: Int

    @Option(parsing: .unconditional, help: "Processor stages running in parallel (1 to 1024).")
    var concurrency: Int = 2

    @Option(parsing: .unconditional, help: "How many messages each processor asks for at once (1 to 1000000).")
    var maxDemand: Int = 1000

    @Option(help: "A file whose first line is the broker password (instead of a password in the URL).")
    var passwordFile: String?

    @Option(help: "The live status of runs longer than a second, on stderr: auto (redrawn in place on a terminal, plain lines otherwise), terminal, lines or off.")
    var status: StatusOption = .auto

    func validate() throws {
        guard self.count > 0 else { throw ValidationError("invalid --count \(self.count): it must be a whole number of 1 or more") }
        guard (1...1024).contains(self.concurrency) else {
            throw ValidationError("invalid --concurrency \(self.concurrency): it must be from 1 to 1024")
        }
        guard (1...1_000_000).contains(self.maxDemand) else {
            throw ValidationError("invalid --max-demand \(self.maxDemand): it must be from 1 to 1000000")
        }
    }

    /// The password of `--password-file` (its first line), if given.
    private func filePassword() throws -> String? {
        guard let path = self.passwordFile else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PasswordFileUnreadable(path: path)
        }
        return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
    }

    func run() async throws {
        try await reportingErrors {
            // Every endpoint, stdin: and file:PATH included; at most --count is read where the
            // connector can cap its reads (Redis, lines).
            try await withSource(self.url, limit: self.count, password: try self.filePassword(), self)
        }
    }

    func use<Source: PipelineSource>(_ source: Source) async throws {
        try await self.drain(source)
    }

    private func drain<Source: PipelineSource>(_ source: Source) async throws {
        let target = self.count
        let taken = Atomic<Int>(0)
        let (reached, reachedContinuation) = AsyncStream.makeStream(of: Void.self)
        let pipeline = Pipeline(
            "drain",
            source: source,
            configuration: PipelineConfiguration(failurePolicy: .requeue, shutdownTimeout: .seconds(30))
        ) {
            Processors(concurrency: self.concurrency, maxDemand: self.maxDemand) { message in
                let number = taken.add(1, ordering: .relaxed).newValue
                if number > target {
                    // Taken past the count: give it back rather than discard it.
                    message.fail(BeyondCount(), disposition: .requeue)
                } else if number == target {
                    reachedContinuation.finish()
                }
            }
        }
        // SIGINT and SIGTERM drain gracefully: stop reading, finish and settle what was taken.
        let signals = DrainSignals { pipeline.drain() }
        defer { signals.cancel() }
        let sampler = PipelineStatusSampler(pipeline) { max(0, taken.load(ordering: .relaxed) - target) }
        let status = LiveStatus(title: "sluice drain", mode: self.status.mode, firstDrawAfter: .seconds(1), lag: LagSampler(of: source)) {
            await sampler.sample()
        }
        let clock = ContinuousClock()
        let started = clock.now
        try await runWithStatus(pipeline, status: status, drainingWhen: reached, reachedContinuation)
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let drained = min(target, taken.load(ordering: .relaxed))
        print(String(format: "drained %d in %.3f s (%.0f msg/s)", drained, seconds, Double(drained) / seconds))
        if let signal = signals.caught { throw ExitCode(128 + signal) }
        if drained < target { throw ExitCode.failure }
    }
}

/// Catches SIGINT and SIGTERM while a drain runs: the first one calls `onSignal` (once) and is
/// remembered for the exit status (128 + the signal: 130, 143); a second SIGINT ends the
/// process at once with status 130 (the broker delivers what was not settled again).
final class DrainSignals {
    /// The first signal caught (0: none), shared with the handlers.
    private final class First: Sendable {
        let number = Atomic<Int32>(0)
    }

    private let sources: [any DispatchSourceSignal]
    private let first = First()

    init(onSignal: @escaping @Sendable () -> Void) {
        var sources: [any DispatchSourceSignal] = []
        let first = self.first
        for number in [SIGINT, SIGTERM] {
            // The default action would end the process at once; the dispatch source sees it instead.
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if first.number.compareExchange(expected: 0, desired: number, ordering: .relaxed).exchanged {
                    onSignal()
                } else if number == SIGINT {
                    // A second SIGINT: stop at once, without waiting for the drain.
                    let line = Array("sluice: stopped at once (second SIGINT); what was taken and not settled is delivered again\n".utf8)
                    _ = line.withUnsafeBytes { Foundation.write(STDERR_FILENO, $0.baseAddress, $0.count) }
                    _exit(130)
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// The first signal caught, if any.
    var caught: Int32? {
        let number = self.first.number.load(ordering: .relaxed)
        return number == 0 ? nil : number
    }

    /// Stops catching (the default actions apply again).
    func cancel() {
        for source in self.sources { source.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// `--password-file` names a file that cannot be read.
struct PasswordFileUnreadable: Error, CustomStringConvertible {
    let path: String
    var description: String { "cannot read the password file \(self.path)" }
}

/// The error of messages taken after the count was reached (they are requeued).
struct BeyondCount: Error, CustomStringConvertible {
    var description: String { "taken after the requested count was reached" }
}
