//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// How many events a producer keeps when events exist and nobody asked for them.
public enum BufferLimit: Hashable, Sendable, CustomStringConvertible {
    /// Keep at most this many events (must be 0 or more).
    case events(Int)
    /// Keep every event. Use with care: memory then grows without bound.
    case unbounded

    /// The limit as written in messages: the count, or "unbounded".
    public var description: String {
        switch self {
        case .events(let count): return "\(count)"
        case .unbounded: return "unbounded"
        }
    }
}

/// Which events a full producer buffer keeps.
public enum BufferKeep: Hashable, Sendable, CustomStringConvertible {
    /// Keep the newest events and discard the oldest (the default).
    case last
    /// Keep the oldest events and discard the new ones.
    case first

    /// "last" or "first".
    public var description: String { self == .last ? "last" : "first" }
}

/// A producer's buffer for events that exist without demand. Pure value type.
///
/// Events are moved in and out whole batches at a time where possible (``EventQueue``), never
/// copied one by one.
@usableFromInline
struct EventBuffer<Event>: Sendable where Event: Sendable {
    @usableFromInline
    var events = EventQueue<Event>()
    @usableFromInline
    let limit: Int
    @usableFromInline
    let keep: BufferKeep
    /// Events ever stored at the back; with ``removed``, positions in the buffer's history
    /// that an info waiting behind the events can refer to.
    @usableFromInline
    var stored = 0
    /// Events ever removed from the front (taken, or discarded to keep the newest), net of
    /// events put back.
    @usableFromInline
    var removed = 0

    @inlinable
    init(limit: BufferLimit, keep: BufferKeep) {
        switch limit {
        case .events(let count): self.limit = count
        case .unbounded: self.limit = .max
        }
        self.keep = keep
    }

    @inlinable
    var isEmpty: Bool { self.events.isEmpty }
    @inlinable
    var count: Int { self.events.count }

    /// Stores `new`; returns how many events were discarded to respect the limit.
    @inlinable
    mutating func store(_ new: consuming [Event]) -> Int {
        switch self.keep {
        case .last:
            self.stored += new.count
            self.events.append(new)
            let overflow = self.events.count - self.limit
            if overflow > 0 {
                self.events.dropFirst(overflow)
                self.removed += overflow
                return overflow
            }
            return 0
        case .first:
            let room = max(0, self.limit - self.events.count)
            var new = new
            let discarded = max(0, new.count - room)
            if discarded > 0 { new.removeLast(discarded) }
            self.stored += new.count
            self.events.append(new)
            return discarded
        }
    }

    /// Removes and returns the oldest `count` events (or fewer if there are fewer).
    @inlinable
    mutating func take(_ count: Int) -> [Event] {
        let taken = self.events.take(count)
        self.removed += taken.count
        return taken
    }

    /// Puts events back at the front, in order (events a dispatcher could not place).
    @inlinable
    mutating func putBack(_ front: consuming [Event]) {
        self.removed -= front.count
        self.events.prepend(front)
    }
}
