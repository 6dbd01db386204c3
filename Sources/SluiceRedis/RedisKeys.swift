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
    var processingPrefix: String
    var alivePrefix: String

    init(_ configuration: RedisConfiguration) {
        self.source = configuration.key
        self.dead = configuration.effectiveDeadLetterKey
        self.processingPrefix = "\(configuration.key):processing:"
        self.alivePrefix = "\(configuration.key):alive:"
        self.processing = self.processingPrefix + configuration.consumer
        self.alive = self.alivePrefix + configuration.consumer
        self.registry = "\(configuration.key):consumers"
    }

    /// The script that returns the tail of the processing list to the head of the source:
    /// all of it, or with `limit`, only that many (``RedisScripts/giveBack``).
    func giveBack(limit: Int? = nil) -> RedisCommand {
        var command = RedisCommand("EVAL")
        command.append(RedisScripts.giveBack)
        command.append(2)
        command.append(self.processing)
        command.append(self.source)
        if let limit { command.append(limit) }
        return command
    }
}
