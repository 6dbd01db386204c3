//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The Lua scripts of reliable-list mode. Each runs atomically inside Redis.
enum RedisScripts {
    /// Moves up to ARGV[1] items from the head of KEYS[1] (source) to the tail of KEYS[2]
    /// (processing list) and returns them, in one step.
    static let move = """
        local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
        if #items > 0 then
          redis.call('LTRIM', KEYS[1], #items, -1)
          redis.call('RPUSH', KEYS[2], unpack(items))
        end
        return items
        """

    /// Settles items of the processing list KEYS[1]: ARGV holds pairs (operation, value).
    /// Each value is removed once (`LREM … 1`); only if it was there, `r` pushes it back to the
    /// source KEYS[2] and `d` to the dead-letter list KEYS[3] (`a` and `x` only remove).
    /// Returns how many were removed.
    static let settle = """
        local removed = 0
        for i = 1, #ARGV, 2 do
          local value = ARGV[i + 1]
          if redis.call('LREM', KEYS[1], 1, value) > 0 then
            removed = removed + 1
            local op = ARGV[i]
            if op == 'r' then redis.call('RPUSH', KEYS[2], value)
            elseif op == 'd' then redis.call('RPUSH', KEYS[3], value) end
          end
        end
        return removed
        """

    /// Returns the whole processing list KEYS[1] to the head of the source KEYS[2], in order
    /// (tail first, with `RPOPLPUSH`). With ARGV[1] given, returns only that many items from
    /// the tail. Returns how many moved.
    static let giveBack = """
        local limit = tonumber(ARGV[1])
        local moved = 0
        while limit == nil or moved < limit do
          if not redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) then break end
          moved = moved + 1
        end
        return moved
        """

    /// The reaper: for each consumer in the registry set KEYS[2] other than ARGV[3] whose
    /// liveness key (ARGV[2] .. name) is gone, returns its processing list (ARGV[1] .. name)
    /// to the head of the source KEYS[1] and forgets the consumer. Returns how many moved.
    static let reap = """
        local moved = 0
        for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
          if name ~= ARGV[3] and redis.call('EXISTS', ARGV[2] .. name) == 0 then
            local processing = ARGV[1] .. name
            while redis.call('RPOPLPUSH', processing, KEYS[1]) do moved = moved + 1 end
            redis.call('SREM', KEYS[2], name)
          end
        end
        return moved
        """

    /// Orphans after a reconnect: if the processing list KEYS[1] holds more than ARGV[1]
    /// items, the extra ones at its tail were moved by a read whose reply was lost; they go
    /// back to the head of the source KEYS[2]. Returns how many moved.
    static let recoverOrphans = """
        local extra = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
        local moved = 0
        while moved < extra do
          if not redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) then break end
          moved = moved + 1
        end
        return moved
        """
}
