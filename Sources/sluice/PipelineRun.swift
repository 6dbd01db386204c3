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
import SluiceRabbitMQ
import SluiceRedis

/// Runs a command's body: an error other than an exit code becomes one line on stderr
/// (passwords and secrets redacted, ``Redaction/redact(_:)``) and exit status 1.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        FileHandle.standardError.write(Data("sluice: \(Redaction.redact("\(error)"))\n".utf8))
        throw ExitCode.failure
    }
}

/// Runs `pipeline` until it ends, with `status` drawn meanwhile (and its final state once it
/// ended, failed or not). When `reached` is given, its end (the count was reached) drains the
/// pipeline; `continuation` is `reached`'s, finished once the pipeline ended so the trigger never
/// waits for a count that will never come.
func runWithStatus<Source: PipelineSource>(
    _ pipeline: Pipeline<Source>,
    status: LiveStatus,
    drainingWhen reached: AsyncStream<Void>? = nil,
    _ continuation: AsyncStream<Void>.Continuation? = nil
) async throws {
    status.start()
    do {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            if let reached {
                group.addTask {
                    for await _ in reached {}
                    pipeline.drain()
                }
            }
            // Whichever ends first (the pipeline, done or failed, or the trigger after draining),
            // make sure the trigger does not wait for a count that will never come.
            while try await group.next() != nil {
                continuation?.finish()
            }
        }
    } catch {
        await status.finish()
        throw error
    }
    await status.finish()
}

/// What a command does with the source a broker URL names, whatever the source's type.
protocol BrokerSourceUser {
    /// Runs the command on `source`.
    func use<Source: PipelineSource>(_ source: Source) async throws
}

/// Makes the source a broker URL names (`redis://`, `unix://`, `amqp://`, `amqps://`,
/// `kafka://`) and hands it to `user`; `redis` makes the Redis configuration of the URL (where
/// the caller sets its limit or password).
func withBrokerSource(
    url: String,
    redis: (String) throws -> RedisConfiguration = { try RedisConfiguration(url: $0) },
    _ user: some BrokerSourceUser
) async throws {
    let scheme = url.split(separator: ":", maxSplits: 1).first.map { $0.lowercased() } ?? ""
    switch scheme {
    case "redis", "unix":
        try await user.use(RedisSource(configuration: redis(url)))
    case "amqp", "amqps":
        try await user.use(RabbitMQSource(url: url))
    case "kafka":
        try await user.use(KafkaSource(url: url))
    default:
        throw UnsupportedURL(scheme: scheme)
    }
}
