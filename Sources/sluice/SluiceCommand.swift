//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import ArgumentParser
import Foundation
import Sluice
import SluiceKafka
import SluiceRedis
import Synchronization

/// The `sluice` command-line tool.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Move messages from brokers through Sluice pipelines.",
        subcommands: [Drain.self]
    )
}

/// `sluice drain URL --count N`: consume and acknowledge N messages, discarding them.
struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume and acknowledge N messages from a broker URL through a pipeline, discarding them.",
        discussion: """
            Supported URLs: redis://[user:password@]host[:port][/db]?key=KEY[&mode=list|reliable|stream][&group=G][&consumer=C] \
            and unix:///path/to/redis.sock?key=KEY; \
            kafka://host:port[,host:port]/topic?group=G[&offset=earliest|latest][&librdkafka.property=value]. \
            Messages taken beyond N are given back to the broker (Kafka: not committed).
            """
    )

    @Argument(help: "The broker URL to drain.")
    var url: String

    @Option(help: "How many messages to consume and acknowledge.")
    var count: Int

    @Option(help: "Processor stages running in parallel.")
    var concurrency: Int = 2

    @Option(help: "How many messages each processor asks for at once.")
    var maxDemand: Int = 1000

    func validate() throws {
        guard self.count > 0 else { throw ValidationError("--count must be greater than 0 (got \(self.count))") }
        guard self.concurrency > 0 else { throw ValidationError("--concurrency must be greater than 0 (got \(self.concurrency))") }
        guard self.maxDemand > 0 else { throw ValidationError("--max-demand must be greater than 0 (got \(self.maxDemand))") }
    }

    func run() async throws {
        do {
            let scheme = self.url.split(separator: ":", maxSplits: 1).first.map { $0.lowercased() } ?? ""
            switch scheme {
            case "redis", "unix":
                try await self.drain(RedisSource(url: self.url))
            case "kafka":
                try await self.drain(KafkaSource(url: self.url))
            default:
                throw UnsupportedURL(scheme: scheme)
            }
        } catch {
            FileHandle.standardError.write(Data("sluice: \(error)\n".utf8))
            throw ExitCode.failure
        }
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
        let clock = ContinuousClock()
        let started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            group.addTask {
                for await _ in reached {}
                pipeline.drain()
            }
            // Whichever ends first (the pipeline, done or failed, or the trigger after draining),
            // make sure the trigger does not wait for a count that will never come.
            while try await group.next() != nil {
                reachedContinuation.finish()
            }
        }
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let drained = min(target, taken.load(ordering: .relaxed))
        print(String(format: "drained %d in %.3f s (%.0f msg/s)", drained, seconds, Double(drained) / seconds))
        if drained < target { throw ExitCode.failure }
    }
}

/// A URL whose scheme no connector handles.
struct UnsupportedURL: Error, CustomStringConvertible {
    let scheme: String
    var description: String { "unsupported URL scheme \"\(self.scheme)\"; supported: redis://, unix://, kafka://" }
}

/// The error of messages taken after the count was reached (they are requeued).
struct BeyondCount: Error, CustomStringConvertible {
    var description: String { "taken after the requested count was reached" }
}
