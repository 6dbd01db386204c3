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

/// `sluice tail URL`: prints messages as they arrive, acknowledging each after printing it.
struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print messages from a URL as they arrive, with their metadata.",
        discussion: """
            Each message is one line on standard output, acknowledged only once its line was \
            written. --format text prints the metadata as name=value pairs, a tab, then the payload \
            (newline, carriage return and tab escaped as \\n, \\r, \\t; a payload that is not UTF-8 \
            as base64:…); --format json prints one JSON object per line: {"metadata":{…},"payload":"…"} \
            (or "payload_base64" when the payload is not UTF-8). Without --count it runs until \
            SIGINT/SIGTERM, which drain gracefully (exit status 130 or 143); a second SIGINT stops at once. \
            When stdout is not a terminal, runs over a second show a live status on stderr.

            Examples:
              sluice tail 'redis://127.0.0.1:6379/0?key=events&mode=stream' --count 10
              sluice tail 'kafka://127.0.0.1:9092/events?group=tail&offset=earliest' --format json

            \(EndpointHelp.urls)
            """
    )

    @Argument(help: "The URL to read from.")
    var url: String

    @Option(parsing: .unconditional, help: "Stop after this many messages (1 to 1000000000; default: until SIGINT/SIGTERM).")
    var count: Int?

    @Option(help: "text or json.")
    var format: TailFormat = .text

    func validate() throws {
        if let count, !(1...1_000_000_000).contains(count) {
            throw ValidationError("invalid --count \(count): it must be from 1 to 1000000000")
        }
    }

    func run() async throws {
        try await reportingErrors {
            // Messages go to stdout; the live status goes to stderr only when stdout is not a
            // terminal (on one, it would be drawn among the messages).
            let status: LiveStatus.Mode = isatty(STDOUT_FILENO) == 1 ? .off : .automatic
            var transfer = Transfer(name: "tail", count: self.count, batchSize: 100, batchTimeout: .milliseconds(5), maxDemand: 200, status: status)
            if let count = self.count { transfer.maxDemand = min(transfer.maxDemand, max(count, 10)) }
            let outcome = try await withSource(self.url, limit: self.count, TailUser(transfer: transfer, format: self.format))
            try outcome.finish(count: self.count)
        }
    }
}

/// How `tail` prints a message.
enum TailFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json

    /// The line of one message, newline included.
    func line<Metadata: MetadataFields>(_ message: Message<Metadata>, into output: inout [UInt8]) {
        let payload = message.payload.bytes
        let text = String(validating: payload, as: UTF8.self)
        switch self {
        case .text:
            for (name, value) in message.metadata.fields {
                output += name.utf8
                output.append(UInt8(ascii: "="))
                Self.text(value, into: &output)
                output.append(UInt8(ascii: " "))
            }
            if output.last == UInt8(ascii: " ") { output.removeLast() }
            output.append(UInt8(ascii: "\t"))
            if let text {
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\n"): output += "\\n".utf8
                    case UInt8(ascii: "\r"): output += "\\r".utf8
                    case UInt8(ascii: "\t"): output += "\\t".utf8
                    default: output.append(byte)
                    }
                }
            } else {
                output += "base64:\(Data(payload).base64EncodedString())".utf8
            }
        case .json:
            output += "{\"metadata\":{".utf8
            for (index, field) in message.metadata.fields.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                Self.json(field.name, into: &output)
                output.append(UInt8(ascii: ":"))
                switch field.value {
                case .text(let value): Self.json(value, into: &output)
                case .number(let value): output += "\(value)".utf8
                case .flag(let value): output += (value ? "true" : "false").utf8
                case .bytes(let bytes):
                    if let value = String(validating: bytes, as: UTF8.self) {
                        Self.json(value, into: &output)
                    } else {
                        Self.json("base64:" + Data(bytes).base64EncodedString(), into: &output)
                    }
                }
            }
            output += "},".utf8
            if let text {
                output += "\"payload\":".utf8
                Self.json(text, into: &output)
            } else {
                output += "\"payload_base64\":\"\(Data(payload).base64EncodedString())\"".utf8
            }
            output.append(UInt8(ascii: "}"))
        }
        output.append(UInt8(ascii: "\n"))
    }

    /// A metadata value in text form: quoted (JSON-style) when it holds a space, `=`, a quote
    /// or a control character, or is empty.
    private static func text(_ value: MetadataValue, into output: inout [UInt8]) {
        let text: String
        switch value {
        case .text(let value): text = value
        case .number(let value): text = "\(value)"
        case .flag(let value): text = value ? "true" : "false"
        case .bytes(let bytes): text = String(validating: bytes, as: UTF8.self) ?? "base64:" + Data(bytes).base64EncodedString()
        }
        if text.isEmpty || text.utf8.contains(where: { $0 <= 0x20 || $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\"") }) {
            Self.json(text, into: &output)
        } else {
            output += text.utf8
        }
    }

    /// `text` as a JSON string literal.
    static func json(_ text: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output += "\\\"".utf8
            case UInt8(ascii: "\\"): output += "\\\\".utf8
            case UInt8(ascii: "\n"): output += "\\n".utf8
            case UInt8(ascii: "\r"): output += "\\r".utf8
            case UInt8(ascii: "\t"): output += "\\t".utf8
            case 0..<0x20: output += String(format: "\\u%04x", byte).utf8
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}

/// Runs `tail`'s transfer from whichever source to standard output.
struct TailUser: SourceUser {
    let transfer: Transfer
    let format: TailFormat

    func use<Source: PipelineSource>(_ source: Source) async throws -> TransferOutcome where Source.Metadata: MetadataFields {
        let format = self.format
        let writer = LineWriter.standardOutput
        return try await self.transfer.run(source) { batch in
            var bytes: [UInt8] = []
            for message in batch { format.line(message, into: &bytes) }
            try await writer.write(bytes)
        }
    }
}
