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
