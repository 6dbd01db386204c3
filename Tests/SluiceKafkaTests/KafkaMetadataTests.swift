//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceKafka
import Testing

/// The metadata's topic is interned: one object per name, so copying a message counts no
/// reference for it.
@Suite struct KafkaMetadataTests {
    @Test func aTopicReadsBackAndEqualNamesShareOneObject() {
        let name = "orders-\(Int.random(in: 0..<1_000_000))"
        var first = KafkaMetadata(topic: name, partition: 3, offset: 7)
        let second = KafkaMetadata(topic: String(name.utf8.map { Character(UnicodeScalar($0)) }), partition: 1, offset: 2)
        #expect(first.topic == name)
        #expect(first.topicName === second.topicName)
        first.topic = "refunds"
        #expect(first.topic == "refunds")
        #expect(first.topicName !== second.topicName)
        #expect(first.topicName === KafkaTopicName.interned("refunds"))
        #expect(second.topic == name)
        #expect(first.partition == 3 && first.offset == 7)
    }

    @Test func theTopicOutlivesEveryMessageThatNamedIt() {
        let name = "short-lived-\(Int.random(in: 0..<1_000_000))"
        weak var interned: KafkaTopicName?
        do {
            let metadata = KafkaMetadata(topic: name, partition: 0, offset: 0)
            interned = metadata.topicName
        }
        // The table keeps it: metadata refer to it without counting references.
        #expect(interned != nil)
        #expect(interned?.name == name)
    }
}
