//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The whole lines of one or more files, read in large chunks with POSIX `read` and split on
/// newline bytes: each element holds as many whole lines as fit in about ``chunkSize`` bytes
/// (more when one line is longer).
///
/// Reads run on a dispatch queue the sequence owns, never on the cooperative pool; each
/// `next()` reads one chunk.
public struct FileChunks: AsyncSequence, Sendable {
    /// Each element is a chunk of whole lines.
    public typealias Element = TextChunk

    /// The smallest chunk size accepted.
    public static let minimumChunkSize = 4096
    /// The largest chunk size accepted.
    public static let maximumChunkSize = 64 << 20
    /// The chunk size used unless told otherwise: 512 KiB.
    public static let defaultChunkSize = 512 << 10

    /// The files, read one after the other.
    public let paths: [String]
    /// How many bytes to read at a time.
    public let chunkSize: Int

    /// Reads `paths` in chunks of about `chunkSize` bytes.
    ///
    /// - Throws: ``SluiceError`` (``SluiceError/Code-swift.struct/invalidOption``) when
    ///   `chunkSize` is outside ``minimumChunkSize``...``maximumChunkSize``.
    public init(paths: [String], chunkSize: Int = FileChunks.defaultChunkSize) throws(SluiceError) {
        try Self.validate(chunkSize: chunkSize)
        self.paths = paths
        self.chunkSize = chunkSize
    }

    @usableFromInline
    static func validate(chunkSize: Int) throws(SluiceError) {
        guard chunkSize >= Self.minimumChunkSize && chunkSize <= Self.maximumChunkSize else {
            throw .invalidOption(
                "chunkSize",
                chunkSize,
                "must be \(Self.minimumChunkSize)...\(Self.maximumChunkSize) bytes"
            )
        }
    }

    /// Opens the first file when the first chunk is asked for.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: FileChunkReader(paths: self.paths, chunkSize: self.chunkSize))
    }

    /// Reads the next chunk on the sequence's queue.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let reader: FileChunkReader

        /// The next chunk, or `nil` after the last line of the last file.
        ///
        /// - Throws: ``FlowError`` when a file cannot be opened or read.
        public mutating func next() async throws -> TextChunk? {
            let reader = self.reader
            return try await withCheckedThrowingContinuation { continuation in
                reader.queue.async {
                    continuation.resume(with: Result { try reader.readChunk() })
                }
            }
        }
    }
}

/// The state of a chunked read: the open file and the partial line carried into the next chunk.
/// Touched only on its own serial queue.
final class FileChunkReader: @unchecked Sendable {
    // @unchecked: every mutable property is used only by blocks on `queue`, which is serial.
    let queue = DispatchQueue(label: "sluice.flow.file-chunks")
    private let paths: [String]
    private let chunkSize: Int
    private var nextPath = 0
    private var descriptor: Int32 = -1
    private var path = ""
    private var carry: [UInt8] = []

    init(paths: [String], chunkSize: Int) {
        self.paths = paths
        self.chunkSize = chunkSize
    }

    deinit {
        if self.descriptor >= 0 { close(self.descriptor) }
    }

    /// Reads whole lines: at least `chunkSize` bytes (or the rest of the file), cut after the
    /// last newline; what follows it starts the next chunk.
    func readChunk() throws(FlowError) -> TextChunk? {
        while true {
            if self.descriptor < 0 {
                guard self.nextPath < self.paths.count else { return nil }
                self.path = self.paths[self.nextPath]
                self.nextPath += 1
                self.descriptor = open(self.path, O_RDONLY)
                guard self.descriptor >= 0 else {
                    throw FlowError(.cannotOpenFile, "cannot open \(self.path): \(String(cString: strerror(errno)))")
                }
            }
            var buffer = self.carry
            self.carry = []
            // Where the last newline may be: a failed search is not repeated over the same bytes.
            var searchFrom = 0
            // Read until the buffer holds a full chunk ending in a newline, or the file ends.
            while try self.readSome(into: &buffer, count: max(self.chunkSize - buffer.count, self.chunkSize / 4)) > 0 {
                guard buffer.count >= self.chunkSize else { continue }
                if let last = buffer[searchFrom...].lastIndex(of: UInt8(ascii: "\n")) {
                    self.carry = Array(buffer[(last + 1)...])
                    buffer.removeSubrange((last + 1)...)
                    return TextChunk(buffer)
                }
                searchFrom = buffer.count
            }
            close(self.descriptor)
            self.descriptor = -1
            if !buffer.isEmpty { return TextChunk(buffer) }
        }
    }

    /// Appends up to `count` bytes read from the file; returns how many (0 at its end).
    private func readSome(into buffer: inout [UInt8], count: Int) throws(FlowError) -> Int {
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: count))
        while true {
            let got = buffer.withUnsafeMutableBytes { bytes in
                read(self.descriptor, bytes.baseAddress! + start, count)
            }
            if got < 0 && errno == EINTR { continue }
            guard got >= 0 else {
                buffer.removeSubrange(start...)
                throw FlowError(.readFailed, "cannot read \(self.path): \(String(cString: strerror(errno)))")
            }
            buffer.removeSubrange((start + got)...)
            return got
        }
    }
}
