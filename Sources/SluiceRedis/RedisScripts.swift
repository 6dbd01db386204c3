//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The Lua scripts of reliable-list mode. Each runs atomically inside Redis.
///
/// **Bound:** no script does work proportional to anything but its own batch: the count
/// (and, for ``move``, the bytes) it is given, at most one read or one settle chunk. None
/// searches a list by value or walks a whole list; a long list is handled by calling a script
/// repeatedly, each call taking one bounded chunk.
///
/// A consumer's processing list `P` has a positions hash `H` (`RedisKeys/positions`) with
/// fields `epoch`, `moved` (items ever moved into `P` in this epoch) and `trimmed` (items
/// removed from its head in this epoch), so `LLEN P == moved - trimmed`. An item's position is
/// the value of `moved` before it was moved in: the head of `P` is position `trimmed`.
enum RedisScripts {
    /// Moves items from the head of KEYS[1] (source) to the tail of KEYS[2] (processing list):
    /// at most ARGV[2] items and at most ARGV[3] payload bytes (an item larger than the budget
    /// moves alone). It looks at the list a chunk at a time (`LRANGE`: 16 items first, then as
    /// many as the sizes seen so far leave room for), takes the prefix within the budget and
    /// moves it with `LTRIM` and `RPUSH`. Counts the items in KEYS[3]'s `moved`. Returns the
    /// items, or -1 when KEYS[3]'s epoch is not ARGV[1] (Redis lost writes: the reader
    /// resets). O(ARGV[2]) items, and at most one chunk beyond the budget in bytes.
    static let move = """
        if tonumber(redis.call('HGET', KEYS[3], 'epoch') or '-1') ~= tonumber(ARGV[1]) then return -1 end
        local limit = tonumber(ARGV[2])
        local budget = tonumber(ARGV[3])
        local items = {}
        local bytes = 0
        local chunk = math.min(limit, 16)
        while #items < limit and bytes < budget do
          local seen = redis.call('LRANGE', KEYS[1], 0, chunk - 1)
          if #seen == 0 then break end
          local taken = 0
          for i = 1, #seen do
            local size = #seen[i]
            if #items > 0 and bytes + size > budget then break end
            items[#items + 1] = seen[i]
            bytes = bytes + size
            taken = taken + 1
            if #items == limit or bytes >= budget then break end
          end
          if taken == 0 then break end
          redis.call('LTRIM', KEYS[1], taken, -1)
          redis.call('RPUSH', KEYS[2], unpack(seen, 1, taken))
          if taken < #seen or #seen < chunk then break end
          local average = math.max(1, math.floor(bytes / #items))
          chunk = math.max(1, math.min(limit - #items, 1000, math.floor((budget - bytes) / average)))
        end
        if #items > 0 then redis.call('HINCRBY', KEYS[3], 'moved', #items) end
        return items
        """

    /// The Lua function both ``trim`` and ``untail`` end with: for each removed item and its
    /// operation, `k` pushes it back to the head of the source KEYS[3], `r` to its tail, `d`
    /// to the dead-letter list KEYS[4]; `a` and `x` leave it removed. O(#items).
    private static let dispose = """
        local function dispose(items, ops)
          for i = 1, #items do
            local op = string.sub(ops, i, i)
            if op == 'k' then redis.call('LPUSH', KEYS[3], items[i])
            elseif op == 'r' then redis.call('RPUSH', KEYS[3], items[i])
            elseif op == 'd' then redis.call('RPUSH', KEYS[4], items[i]) end
          end
        end

        """

    /// Removes a settled run from the head of the processing list KEYS[1]: ARGV[2] is the
    /// run's first position and ARGV[3] one operation per item (`a` acknowledged, `x`
    /// dropped, `r` pushed back to the tail of the source KEYS[3], `d` pushed to the
    /// dead-letter list KEYS[4]). Only if KEYS[2] is at epoch ARGV[1] with `trimmed` equal to
    /// the run's start; a retry whose first attempt ran finds `trimmed` past it and does
    /// nothing. Returns how many items it removed, 0 if that was done already, -1 if the list
    /// is not where the run expects it (another epoch, or Redis lost writes: the reader
    /// resets). O(run length).
    static let trim = dispose + """
        local h = redis.call('HMGET', KEYS[2], 'epoch', 'trimmed', 'moved')
        if tonumber(h[1] or '-1') ~= tonumber(ARGV[1]) then return -1 end
        local trimmed = tonumber(h[2] or '0')
        local base = tonumber(ARGV[2])
        local ops = ARGV[3]
        local n = #ops
        if trimmed >= base + n then return 0 end
        if trimmed ~= base or tonumber(h[3] or '0') < base + n then return -1 end
        if string.find(ops, '[rd]') then
          dispose(redis.call('LPOP', KEYS[1], n) or {}, ops)
        else
          redis.call('LTRIM', KEYS[1], n, -1)
        end
        redis.call('HSET', KEYS[2], 'trimmed', base + n)
        return n
        """

    // Same opening as trim (HMGET, epoch check, already-done check), kept as its own script: untail
    // works on the list's tail against `moved` where trim works on its head against `trimmed`, and
    // each script must run as one atomic EVALSHA.
    /// Removes ARGV[3]'s length of items from the tail of the processing list KEYS[1], whose
    /// `moved` in KEYS[2] must be ARGV[2] at epoch ARGV[1]: ARGV[3] holds one operation per
    /// item, tail first (`k` back to the head of the source KEYS[3], so that what is given
    /// back keeps its order there; `r`, `d`, `a`, `x` as in ``trim``). Returns how many it
    /// removed, 0 if that was done already, -1 if the list is not where it expects it.
    /// O(ARGV[3]'s length).
    static let untail = dispose + """
        local h = redis.call('HMGET', KEYS[2], 'epoch', 'moved', 'trimmed')
        if tonumber(h[1] or '-1') ~= tonumber(ARGV[1]) then return -1 end
        local moved = tonumber(h[2] or '0')
        local top = tonumber(ARGV[2])
        local ops = ARGV[3]
        local n = #ops
        if moved == top - n then return 0 end
        if moved ~= top or tonumber(h[3] or '0') > top - n then return -1 end
        dispose(redis.call('RPOP', KEYS[1], n) or {}, ops)
        redis.call('HSET', KEYS[2], 'moved', top - n)
        return n
        """

    /// Returns at most ARGV[1] items from the tail of the list KEYS[1] to the head of the
    /// source KEYS[2], in order (tail first, with `RPOPLPUSH`). Returns how many moved; fewer
    /// than ARGV[1] means KEYS[1] is empty now. Called repeatedly to empty a list of any
    /// length, one bounded chunk per call. O(ARGV[1]).
    static let giveBack = """
        local limit = tonumber(ARGV[1])
        local moved = 0
        while moved < limit do
          if not redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) then break end
          moved = moved + 1
        end
        return moved
        """

    /// Starts a new epoch in the positions hash KEYS[1]: one past both its epoch and ARGV[1]
    /// (the epoch the consumer knows, in case Redis lost the hash). Returns the new epoch; from
    /// now on, scripts of older epochs change nothing. O(1).
    static let nextEpoch = """
        local epoch = math.max(tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0'), tonumber(ARGV[1])) + 1
        redis.call('HSET', KEYS[1], 'epoch', epoch)
        return epoch
        """
}
