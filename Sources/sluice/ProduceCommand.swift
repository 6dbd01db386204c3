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

/// `sluice produce URL`: publishes standard input's lines (or generated payloads) to a sink.
struct Produce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish the lines of standard input (or generated payloads) to a URL.",
        discussion: """
            Each line of standard input is one message (read in 1 MiB chunks; a final line without \
            a newline counts). With --size, --count payloads of that many bytes are generated instead \
            (the message number padded with x). Messages go to the sink in batches, and the next batch \
            is read only once the sink confirmed the last (publisher confirms, Kafka delivery \
            reports, Redis replies), so a slow broker slows the producer down. Ends with one line: \
            produced N in S s (R msg/s). SIGINT/SIGTERM stop reading and finish what was read; \
            a second SIGINT stops at once. Runs over a second show a live status on stderr (--status).

            Examples:
              seq 1000 | sluice produce 'redis://127.0.0.1:6379/0?key=numbers'
              sluice produce 'kafka://127.0.0.1:9092/events' --count 100000 --size 100

            \(EndpointHelp.urls)
            """
    )

    @Argument(help: "The URL to publish to.")
    var url: String

    @OptionGroup var transfer: TransferOptions

    @Option(parsing: .unconditional, help: "Generate --count payloads of this many bytes (1 to 1048576) instead of reading standard input.")
    var size: Int?

    func validate() throws {
        try self.transfer.validate()
        if let size {
            guard (1...1_048_576).contains(size) else { throw ValidationError("invalid --size \(size): it must be from 1 to 1048576") }
            guard self.transfer.count != nil else { throw ValidationError("--size needs --count: how many payloads to generate") }
        }
    }

    func run() async throws {
        try await reportingErrors {
            let sink = try SinkEndpoint(url: self.url)
            try await sink.connect()
            let input: LineInput = self.size.map { .generated(count: self.transfer.count ?? 0, size: $0) } ?? .standardInput
            let source = LineSource(input: input, limit: self.transfer.count)
            let outcome = try await TransferUser(transfer: self.transfer.transfer(name: "produce"), sink: sink).use(source)
            await sink.close()
            print(outcome.summary("produced"))
            try outcome.finish(count: self.transfer.count)
        }
    }
}
