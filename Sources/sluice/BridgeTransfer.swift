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
import Synchronization

/// How a ``Transfer`` ended.
struct TransferOutcome {
    /// Messages delivered and acknowledged.
    var moved: Int
    /// How long it ran.
    var elapsed: Duration
    /// The first signal caught (SIGINT, SIGTERM), if one ended it.
    var signal: Int32?
    /// Why the sink refused a batch or a message (those were given back, not acknowledged).
    var failure: (any Error)?

    /// The elapsed time in seconds.
    var seconds: Double {
        Double(self.elapsed.components.seconds) + Double(self.elapsed.components.attoseconds) / 1e18
    }

    /// `"<verb> N in S s (R msg/s)"`, the summary line of `produce` and `bridge` (like drain's).
    func summary(_ verb: String) -> String {
        String(format: "%@ %d in %.3f s (%.0f msg/s)", verb, self.moved, self.seconds, Double(self.moved) / max(self.seconds, 1e-9))
    }

    /// Throws what ended the run badly: the sink's failure (one line on standard error, exit
    /// status 1), a signal (128 + it), or a count not reached (1).
    func finish(count: Int?) throws {
        if let failure = self.failure {
            FileHandle.standardError.write(Data("sluice: the sink failed, its messages were not acknowledged: \(Redaction.redact("\(failure)"))\n".utf8))
            throw ExitCode.failure
        }
        if let signal = self.signal { throw ExitCode(128 + signal) }
        if let count, self.moved < count {
            FileHandle.standardError.write(Data("sluice: the source ended after \(self.moved) of \(count) messages\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Moves messages from a source through a pipeline to a delivery function, at least once:
/// one processor (so the order is kept) hands messages to a batcher whose handler returns only
/// once the delivery confirmed the batch; only then are the messages acknowledged to the
/// source. A batch the delivery throws for, or a message it marks failed, is given back to the
/// source (failure policy `.requeue`) and ends the transfer (drained: what is in flight is
/// finished and settled). With a count, messages beyond it are given back as the drain does.
/// SIGINT and SIGTERM drain gracefully; a second SIGINT stops at once (``DrainSignals``).
struct Transfer {
    /// The pipeline's name.
    var name: String
    /// How many messages to move (`nil`: until the source ends or a signal).
    var count: Int?
    /// The most messages in a delivered batch.
    var batchSize: Int = 500
    /// How long a partial batch waits before it is delivered anyway.
    var batchTimeout: Duration = .milliseconds(20)
    /// What the processor asks the source for at once.
    var maxDemand: Int = 1000

    /// The live status on standard error (for runs over a second).
    var status: LiveStatus.Mode = .automatic

    /// Runs the transfer, with the live status drawn meanwhile.
    func run<Source: PipelineSource>(
        _ source: Source,
        deliver: @escaping @Sendable (inout [Message<Source.Metadata>]) async throws -> Void
    ) async throws -> TransferOutcome {
        let target = self.count
        let taken = Atomic<Int>(0)
        let failure = Mutex<(any Error)?>(nil)
        let (stop, stopContinuation) = AsyncStream.makeStream(of: Void.self)
        let pipeline = Pipeline(
            self.name,
            source: source,
            configuration: PipelineConfiguration(failurePolicy: .requeue, shutdownTimeout: .seconds(30))
        ) {
            Processors(concurrency: 1, maxDemand: self.maxDemand) { message in
                guard let target else { return }
                let number = taken.add(1, ordering: .relaxed).newValue
                if number > target {
                    message.fail(BeyondCount(), disposition: .requeue)
                } else if number == target {
                    stopContinuation.finish()
                }
            }
            Batcher(size: self.batchSize, timeout: self.batchTimeout) { batch in
                do {
                    try await deliver(&batch)
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                    stopContinuation.finish()
                    throw error
                }
                if let refused = batch.lazy.compactMap(\.failure).first {
                    failure.withLock { $0 = $0 ?? refused.error }
                    stopContinuation.finish()
                }
            }
        }
        let signals = DrainSignals { pipeline.drain() }
        defer { signals.cancel() }
        let sampler = PipelineStatusSampler(pipeline) { target.map { max(0, taken.load(ordering: .relaxed) - $0) } ?? 0 }
        let status = LiveStatus(title: "sluice \(self.name)", mode: self.status, firstDrawAfter: .seconds(1), lag: LagSampler(of: source)) {
            await sampler.sample()
        }
        let clock = ContinuousClock()
        let start = clock.now
        try await runWithStatus(pipeline, status: status, drainingWhen: stop, stopContinuation)
        return TransferOutcome(
            moved: pipeline.statistics.acknowledged,
            elapsed: clock.now - start,
            signal: signals.caught,
            failure: failure.withLock { $0 }
        )
    }
}
