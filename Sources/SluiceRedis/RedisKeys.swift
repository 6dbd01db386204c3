//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

/// The keys a source uses besides its list or stream.
struct RedisKeys: Sendable {
    /// The list or stream read.
    var source: String
    /// The dead-letter list or stream.
    var dead: String
    /// Reliable mode: this consumer's processing list.
    var processing: String
    /// Reliable mode: this consumer's liveness key.
    var alive: String
    /// Reliable mode: the set of consumers' names.
    var registry: String
    /// Reliable mode: this consumer's positions hash (epoch, moved, trimmed; see
    /// ``RedisScripts``).
    var positions: String
    var processingPrefix: String
    var alivePrefix: String
    var positionsPrefix: String

    init(_ configuration: RedisConfiguration) {
        self.source = configuration.key
        self.dead = configuration.effectiveDeadLetterKey
        self.processingPrefix = "\(configuration.key):processing:"
        self.alivePrefix = "\(configuration.key):alive:"
        self.processing = self.processingPrefix + configuration.consumer
        self.alive = self.alivePrefix + configuration.consumer
        self.positionsPrefix = "\(configuration.key):positions:"
        self.positions = self.positionsPrefix + configuration.consumer
        self.registry = "\(configuration.key):consumers"
    }

    /// The script that returns at most `limit` items from the tail of `list` (this
    /// consumer's processing list by default) to the head of the source
    /// (``RedisScripts/giveBack``).
    func giveBack(from list: String? = nil, limit: Int) -> RedisCommand {
        var command = RedisCommand("EVAL")
        command.append(RedisScripts.giveBack)
        command.append(2)
        command.append(list ?? self.processing)
        command.append(self.source)
        command.append(limit)
        return command
    }

    /// The script `script` on the processing list, the positions hash, the source and the
    /// dead-letter list, with `arguments`.
    func positional(_ script: String, _ arguments: String...) -> RedisCommand {
        var command = RedisCommand("EVAL")
        command.append(script)
        command.append(4)
        command.append(self.processing)
        command.append(self.positions)
        command.append(self.source)
        command.append(self.dead)
        for argument in arguments { command.append(argument) }
        return command
    }
}
