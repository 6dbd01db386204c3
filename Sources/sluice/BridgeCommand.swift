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

/// `sluice bridge SOURCE_URL SINK_URL`: moves messages from one broker to another at least once.
struct Bridge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move messages from a source URL to a sink URL at least once.",
        discussion: """
            A source message is acknowledged only after the sink confirmed it (publisher confirms, \
            Kafka delivery reports, Redis replies): messages go in batches to the sink, and a batch \
            the sink refuses is given back to the source (requeued, or not committed) and ends the \
            bridge with one error line and exit status 1. A sink that cannot be reached fails before \
            anything is read. Without --count the bridge runs until the source ends or SIGINT/SIGTERM, \
            which drain gracefully (exit status 130 or 143); a second SIGINT stops at once. Runs over a \
            second show a live status on stderr (--status). Ends with one summary line.

            Example:
              sluice bridge 'amqp://127.0.0.1:5672/?queue=orders' \
            'kafka://127.0.0.1:9092/orders?group=bridge' --count 1000

            \(EndpointHelp.urls)
            """
    )

    @Argument(help: "The URL to read from.")
    var source: String

    @Argument(help: "The URL to write to.")
    var sink: String

    @OptionGroup var transfer: TransferOptions

    func validate() throws { try self.transfer.validate() }

    func run() async throws {
        try await reportingErrors {
            let sink = try SinkEndpoint(url: self.sink)
            try await sink.connect()
            let outcome = try await withSource(self.source, limit: self.transfer.count, TransferUser(transfer: self.transfer.transfer(name: "bridge"), sink: sink))
            await sink.close()
            print(outcome.summary("bridged"))
            try outcome.finish(count: self.transfer.count)
        }
    }
}

/// The options `produce` and `bridge` share.
struct TransferOptions: ParsableArguments {
    // `.unconditional`: `--count -5` is read as a (bad) value, not as an unknown option.
    @Option(parsing: .unconditional, help: "How many messages to move (1 to 1000000000; default: until the source ends).")
    var count: Int?

    @Option(parsing: .unconditional, help: "The most messages delivered to the sink at once (1 to 100000).")
    var batch: Int = 500

    @Option(help: "The live status of runs longer than a second, on stderr: auto (redrawn in place on a terminal, plain lines otherwise), terminal, lines or off.")
    var status: StatusOption = .auto

    func validate() throws {
        if let count, !(1...1_000_000_000).contains(count) {
            throw ValidationError("invalid --count \(count): it must be from 1 to 1000000000")
        }
        guard (1...100_000).contains(self.batch) else { throw ValidationError("invalid --batch \(self.batch): it must be from 1 to 100000") }
    }

    /// The transfer these options describe.
    func transfer(name: String) -> Transfer {
        Transfer(name: name, count: self.count, batchSize: self.batch, maxDemand: max(self.batch * 2, 10), status: self.status.mode)
    }
}

/// Runs a ``Transfer`` from whichever source to a ``SinkEndpoint``.
struct TransferUser: SourceUser {
    let transfer: Transfer
    let sink: SinkEndpoint

    func use<Source: PipelineSource>(_ source: Source) async throws -> TransferOutcome where Source.Metadata: MetadataFields {
        let sink = self.sink
        return try await self.transfer.run(source) { batch in try await sink.deliver(&batch) }
    }
}
