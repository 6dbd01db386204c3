//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import DequeModule

/// How many events a producer keeps when events exist and nobody asked for them.
public enum BufferLimit: Hashable, Sendable {
    /// Keep at most this many events (must be 0 or more).
    case events(Int)
    /// Keep every event. Use with care: memory then grows without bound.
    case unbounded
}

/// Which events a full producer buffer keeps.
public enum BufferKeep: Hashable, Sendable {
    /// Keep the newest events and discard the oldest (the default).
    case last
    /// Keep the oldest events and discard the new ones.
    case first
}

/// A producer's buffer for events that exist without demand. Pure value type.
@usableFromInline
struct EventBuffer<Event>: Sendable where Event: Sendable {
    @usableFromInline
    var events: Deque<Event> = []
    @usableFromInline
    let limit: Int
    @usableFromInline
    let keep: BufferKeep

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
    mutating func store(_ new: [Event]) -> Int {
        switch self.keep {
        case .last:
            self.events.append(contentsOf: new)
            let overflow = self.events.count - self.limit
            if overflow > 0 {
                self.events.removeFirst(overflow)
                return overflow
            }
            return 0
        case .first:
            let room = max(0, self.limit - self.events.count)
            if new.count <= room {
                self.events.append(contentsOf: new)
                return 0
            }
            self.events.append(contentsOf: new.prefix(room))
            return new.count - room
        }
    }

    /// Removes and returns the oldest `count` events (or fewer if there are fewer).
    @inlinable
    mutating func take(_ count: Int) -> [Event] {
        let n = min(count, self.events.count)
        let taken = Array(self.events.prefix(n))
        self.events.removeFirst(n)
        return taken
    }

    /// Puts events back at the front, in order (events a dispatcher could not place).
    @inlinable
    mutating func putBack(_ front: [Event]) {
        self.events.insert(contentsOf: front, at: 0)
    }
}
