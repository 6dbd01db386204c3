//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice

/// A failed message on its way to the dead-letter topic, with the headers that say where it
/// came from and why it failed.
struct KafkaDeadLetter: Sendable {
    /// The header names the dead-letter record carries.
    enum Header {
        static let topic = "sluice.original.topic"
        static let partition = "sluice.original.partition"
        static let offset = "sluice.original.offset"
        static let key = "sluice.original.key"
        static let error = "sluice.error"
    }

    let message: Message<KafkaMetadata>
    let error: String

    var key: KafkaPartitionKey { KafkaPartitionKey(topic: self.message.metadata.topic, partition: self.message.metadata.partition) }

    /// The original record's headers, then where it came from and the error text.
    var headers: [KafkaHeader] {
        let metadata = self.message.metadata
        var headers = metadata.headers
        headers.append(KafkaHeader(name: Header.topic, text: metadata.topic))
        headers.append(KafkaHeader(name: Header.partition, text: "\(metadata.partition)"))
        headers.append(KafkaHeader(name: Header.offset, text: "\(metadata.offset)"))
        if let key = metadata.key { headers.append(KafkaHeader(name: Header.key, value: key.bytes)) }
        headers.append(KafkaHeader(name: Header.error, text: self.error))
        return headers
    }
}
