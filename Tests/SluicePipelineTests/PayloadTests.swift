//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Foundation
import Sluice
import SluiceTestKit
import Testing

/// Where a payload's bytes are, to tell shared buffers from copies.
private func address(_ payload: Payload) -> UInt {
    payload.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
}

@Suite(.timeLimit(.minutes(1))) struct PayloadTests {
    let parts: [[UInt8]] = [Array("alpha".utf8), [], Array("be".utf8), Array("gamma!".utf8)]

    @Test func packingViewsEachPartOfOneBuffer() {
        let payloads = Payload.packing(self.parts)
        #expect(payloads.map(Array.init) == self.parts)
        #expect(payloads.map(\.count) == [5, 0, 2, 6])
        // Indices start at 0 for every payload, wherever it lies in the buffer.
        #expect(payloads[2].startIndex == 0 && payloads[2][0] == UInt8(ascii: "b"))
        #expect(payloads[3].firstIndex(of: UInt8(ascii: "!")) == 5)
        // Back to back in one buffer.
        #expect(address(payloads[2]) == address(payloads[0]) + 5)
        #expect(address(payloads[3]) == address(payloads[2]) + 2)
    }

    @Test func changingOnePackedPayloadLeavesTheOthersAlone() {
        var payloads = Payload.packing(self.parts)
        let untouched = payloads
        payloads[0].append(contentsOf: "!".utf8)
        payloads[2][1] = UInt8(ascii: "E")
        payloads[3].replaceSubrange(0..<5, with: "G".utf8)
        payloads[1] += [1, 2]
        #expect(payloads.map(Array.init) == [Array("alpha!".utf8), [1, 2], Array("bE".utf8), Array("G!".utf8)])
        #expect(untouched.map(Array.init) == self.parts)
        #expect(address(untouched[2]) == address(untouched[0]) + 5)
    }

    @Test func bytesAreTheBufferWhenThePayloadViewsAllOfIt() {
        let whole: [UInt8] = Array("whole".utf8)
        let payload = Payload(whole)
        #expect(whole.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == address(payload))
        #expect(payload.bytes.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == address(payload))
        let part = Payload.packing(self.parts)[2]
        let copy = part.bytes
        #expect(copy == Array("be".utf8))
        #expect(copy.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) } != address(part))
    }

    @Test func extractingSharesTheBytes() {
        let payload = Payload(Array("header:body".utf8))
        let body = payload.extracting(7..<11)
        #expect(Array(body) == Array("body".utf8))
        #expect(address(body) == address(payload) + 7)
        #expect(body.extracting(1..<3) == Payload(Array("od".utf8)))
    }

    @Test func equalityAndHashingGoByBytesNotStorage() {
        let packed = Payload.packing([Array("same".utf8), Array("same".utf8)])
        let own = Payload(Array("same".utf8))
        #expect(packed[0] == packed[1])
        #expect(packed[1] == own)
        #expect(Set([packed[0], packed[1], own]).count == 1)
        #expect(packed[0] != Payload(Array("some".utf8)))
        #expect(Payload() == [])
        #expect(Payload() == Payload.packing(self.parts)[1])
    }

    @Test func describesItself() {
        #expect(Payload(Array("hi".utf8)).debugDescription == #"Payload("hi")"#)
        #expect(Payload([0xFF, 0xFE]).debugDescription == "Payload(2 bytes)")
        #expect(Payload([7]).description == "1 byte")
    }

    @Test func decodingWorksOnAViewAndFailsCleanlyOnBadBytes() throws {
        struct Order: Codable, Equatable { var id: Int }
        let payloads = Payload.packing([Array(#"{"id":7}"#.utf8), [0x61, 0xFF, 0x62], Array("{ not json".utf8)])
        let good = Message(payload: payloads[0], metadata: BasicMetadata(id: 0))
        #expect(try good.decode(Order.self) == Order(id: 7))
        #expect(try good.string() == #"{"id":7}"#)
        let badText = Message(payload: payloads[1], metadata: BasicMetadata(id: 1))
        #expect(throws: DecodingFailure.self) { try badText.string() }
        let badJSON = Message(payload: payloads[2], metadata: BasicMetadata(id: 2))
        #expect(throws: DecodingFailure.self) { try badJSON.decode(Order.self) }
        var encoded = badJSON
        try encoded.encode(Order(id: 9))
        #expect(try encoded.decode(Order.self) == Order(id: 9))
        #expect(try badJSON.string() == "{ not json")  // the original's view is untouched
    }

    @Test func foundationTakesAPayloadAsContiguousBytes() {
        func copy(_ bytes: some ContiguousBytes) -> Data { bytes.withUnsafeBytes { Data($0) } }
        let payload = Payload.packing([Array("head".utf8), Array("tail".utf8)])[1]
        #expect(copy(payload) == Data("tail".utf8))
        #expect(Data(payload) == Data("tail".utf8))
    }

    @Test func inMemorySourcePacksAThousandPayloadsToABuffer() async throws {
        let source = InMemorySource()
        let seen = Recorder<(id: UInt64, address: UInt, count: Int)>()
        let pipeline = Pipeline("packed", source: source) {
            Processors(concurrency: 2, maxDemand: 300) { message in
                seen.append((message.metadata.id, address(message.payload), message.payload.count))
            }
        }
        source.push(payloads(2500))
        source.finishWhenEmpty()
        try await withTimeLimit(.seconds(20)) { try await pipeline.run() }
        let byID = Dictionary(uniqueKeysWithValues: seen.all.map { ($0.id, $0) })
        #expect(byID.count == 2500)
        func follows(_ id: UInt64) -> Bool {
            guard let previous = byID[id - 1], let this = byID[id] else { return false }
            return this.address == previous.address + UInt(previous.count)
        }
        // Within a buffer each payload follows the one before; a new buffer starts at 1000 and 2000.
        let starts = (1..<2500).map(UInt64.init).filter { !follows($0) }
        #expect(starts == [1000, 2000])
    }
}
