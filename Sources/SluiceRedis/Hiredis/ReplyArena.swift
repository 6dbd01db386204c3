//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CRedis

/// Memory for the replies of one hiredis context, reused from reply to reply.
///
/// By default hiredis allocates every element of a reply on its own (a `calloc` for the
/// `redisReply` and a `malloc` for its string) and frees each again: two allocations and two
/// frees per item of a 1000-item pop, which made up much of the read thread's time. With an
/// arena installed (``install(on:)``) the reader builds the same `redisReply` structures in
/// a few large blocks instead, so ``RedisReplyRef`` reads them unchanged; ``reset()`` (instead
/// of `freeReplyObject`) releases a reply once it was read. Only one reply is built at a time:
/// hiredis parses the next one only when asked for it.
///
/// Used only on the thread of the context that owns it.
final class ReplyArena {
    private struct Block {
        var start: UnsafeMutableRawPointer
        var size: Int
    }

    private static let blockSize = 256 * 1024
    /// Blocks up to this size are kept for the next reply; a larger one is freed.
    private static let keptSize = 8 * 1024 * 1024

    // `@exclusivity(unchecked)`: touched only by the owning thread, a few times per reply
    // element; the dynamic exclusivity checks showed up in profiles.
    @exclusivity(unchecked) private var blocks: [Block] = []
    /// The block being filled and the offset in it.
    @exclusivity(unchecked) private var current = 0
    @exclusivity(unchecked) private var offset = 0
    /// Bytes handed out since the last reset, to size the block kept for the next reply.
    @exclusivity(unchecked) private var used = 0

    init() {
        self.blocks.append(Block(start: .allocate(byteCount: Self.blockSize, alignment: 16), size: Self.blockSize))
    }

    deinit {
        for block in self.blocks { block.start.deallocate() }
    }

    /// Makes `context`'s reader build its replies here. The arena must outlive the context's
    /// reader (the context owns both and frees the reader first).
    func install(on context: UnsafeMutablePointer<redisContext>) {
        guard let reader = context.pointee.reader else { return }
        reader.pointee.fn = Self.functions
        reader.pointee.privdata = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Forgets every reply built so far; their memory is reused.
    func reset() {
        if self.blocks.count > 1 || self.used > self.blocks[0].size {
            // The last reply did not fit one block: keep one block that fits such a reply.
            let needed = self.used
            for block in self.blocks { block.start.deallocate() }
            let size = needed <= Self.keptSize ? max(Self.blockSize, needed) : Self.blockSize
            self.blocks = [Block(start: .allocate(byteCount: size, alignment: 16), size: size)]
        }
        self.current = 0
        self.offset = 0
        self.used = 0
    }

    /// `size` bytes aligned to 8, valid until ``reset()``.
    private func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        let rounded = (size + 7) & ~7
        self.used += rounded
        if self.offset + rounded > self.blocks[self.current].size {
            self.current += 1
            if self.current == self.blocks.count {
                let size = max(Self.blockSize, rounded)
                self.blocks.append(Block(start: .allocate(byteCount: size, alignment: 16), size: size))
            } else if self.blocks[self.current].size < rounded {
                self.blocks[self.current].start.deallocate()
                self.blocks[self.current] = Block(start: .allocate(byteCount: rounded, alignment: 16), size: rounded)
            }
            self.offset = 0
        }
        let pointer = self.blocks[self.current].start + self.offset
        self.offset += rounded
        return pointer
    }

    /// A reply object of `type`, hung into its parent array (as hiredis's own functions do).
    private func reply(_ task: UnsafePointer<redisReadTask>, type: Int32) -> UnsafeMutablePointer<redisReply> {
        let object = self.allocate(MemoryLayout<redisReply>.stride).bindMemory(to: redisReply.self, capacity: 1)
        object.initialize(to: redisReply(type: type, integer: 0, len: 0, str: nil, elements: 0, element: nil))
        if let parent = task.pointee.parent, let array = parent.pointee.obj?.assumingMemoryBound(to: redisReply.self) {
            array.pointee.element[Int(task.pointee.idx)] = object
        }
        return object
    }

    private func string(_ task: UnsafePointer<redisReadTask>, _ bytes: UnsafeMutablePointer<CChar>?, _ length: Int) -> UnsafeMutableRawPointer {
        let object = self.reply(task, type: task.pointee.type)
        let text = self.allocate(length + 1).bindMemory(to: CChar.self, capacity: length + 1)
        if let bytes, length > 0 { text.update(from: bytes, count: length) }
        text[length] = 0
        object.pointee.str = text
        object.pointee.len = length
        return UnsafeMutableRawPointer(object)
    }

    private func array(_ task: UnsafePointer<redisReadTask>, _ count: Int32) -> UnsafeMutableRawPointer {
        let object = self.reply(task, type: REDIS_REPLY_ARRAY)
        if count > 0 {
            let elements = self.allocate(Int(count) * MemoryLayout<UnsafeMutablePointer<redisReply>?>.stride)
                .bindMemory(to: UnsafeMutablePointer<redisReply>?.self, capacity: Int(count))
            elements.initialize(repeating: nil, count: Int(count))
            object.pointee.element = elements
        }
        object.pointee.elements = Int(count)
        return UnsafeMutableRawPointer(object)
    }

    private func integer(_ task: UnsafePointer<redisReadTask>, _ value: Int64) -> UnsafeMutableRawPointer {
        let object = self.reply(task, type: REDIS_REPLY_INTEGER)
        object.pointee.integer = value
        return UnsafeMutableRawPointer(object)
    }

    private func null(_ task: UnsafePointer<redisReadTask>) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(self.reply(task, type: REDIS_REPLY_NIL))
    }

    /// The arena of a read task (the reader hands its `privdata` to every task).
    private static func arena(_ task: UnsafePointer<redisReadTask>) -> ReplyArena {
        var root = task
        while root.pointee.privdata == nil, let parent = root.pointee.parent { root = UnsafePointer(parent) }
        return Unmanaged<ReplyArena>.fromOpaque(root.pointee.privdata!).takeUnretainedValue()
    }

    /// The reader callbacks. `nonisolated(unsafe)`: written once here, then only read (by
    /// hiredis, on the threads of the contexts it is installed on).
    private nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
        functions.initialize(
            to: redisReplyObjectFunctions(
                createString: { task, bytes, length in ReplyArena.arena(task!).string(task!, bytes, length) },
                createArray: { task, count in ReplyArena.arena(task!).array(task!, count) },
                createInteger: { task, value in ReplyArena.arena(task!).integer(task!, value) },
                createNil: { task in ReplyArena.arena(task!).null(task!) },
                // A reply the reader gives up on (protocol error) is dropped with the arena's
                // next reset or the context.
                freeObject: { _ in }
            )
        )
        return functions
    }()
}
