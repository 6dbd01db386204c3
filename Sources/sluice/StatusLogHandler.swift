//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `sluice` command's log handler: lines like swift-log's `StreamLogHandler` on stderr,
/// but while a live status redraws in place on that terminal, each line goes through it
/// (``LiveStatus/log(_:)``), so that a reconnect warning is printed above the frame instead of
/// being overwritten by the next one.
struct StatusLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    private let label: String

    init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        let line = Self.format(event, metadata: merged, label: self.label, timestamp: Self.timestamp())
        if let status = LiveStatus.current.withLock({ $0 }) {
            status.log(line)
        } else {
            writeAll(STDERR_FILENO, line)
        }
    }

    /// One log line, ending in a newline: `time level label: key=value … [source] message`.
    static func format(_ event: LogEvent, metadata: Logger.Metadata, label: String, timestamp: String) -> String {
        var line = "\(timestamp) \(event.level)"
        if !label.isEmpty { line += " \(label)" }
        line += ":"
        if !metadata.isEmpty {
            line += " " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        line += " [\(event.source)] \(event.message)\n"
        return line
    }

    /// The local time as `2026-12-01T18:40:00+0000`.
    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
