//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import Sluice

/// An order of `sluice demo`, one JSON object per message:
/// `{"id": 42, "customer": 7, "region": "eu", "amount": 19.5}`.
struct Order: Codable, Sendable {
    var id: Int
    var customer: Int
    var region: String
    var amount: Double
}

/// The demo's embedded source: generates `count` orders on demand (no broker, nothing kept in
/// memory), every hundredth one malformed (ids 99, 199, …) to show dead-lettering.
struct DemoOrders: PipelineSource {
    typealias Metadata = BasicMetadata

    /// How many orders to generate.
    let count: Int

    /// How many of the first `count` orders are malformed: ids 99, 199, …
    static func malformed(in count: Int) -> Int { count / 100 }

    /// Whether order `id` is generated malformed.
    static func isMalformed(_ id: Int) -> Bool { id % 100 == 99 }

    static let regions = ["eu", "us", "apac"]

    /// The payload of order `id`: valid JSON, or a truncated object for the malformed ones.
    static func payload(_ id: Int) -> [UInt8] {
        let region = Self.regions[id % Self.regions.count]
        let amount = Double(id % 1000) / 10 + 1
        let json = "{\"id\":\(id),\"customer\":\(id % 37),\"region\":\"\(region)\",\"amount\":\(amount)}"
        return Array((Self.isMalformed(id) ? String(json.prefix(json.count / 2)) : json).utf8)
    }

    func makeParts(context: SourceContext) async throws -> SourceParts<DemoOrderProducer, DemoAcknowledger> {
        SourceParts(stage: DemoOrderProducer(count: self.count), acknowledger: DemoAcknowledger())
    }
}

/// Control of a ``DemoOrderProducer``.
enum DemoOrdersInfo: SourceInfo {
    /// Stop generating and end.
    case drain
}

/// Emits generated orders as they are asked for, and ends after the last.
struct DemoOrderProducer: Producer, Sendable {
    typealias Output = Message<BasicMetadata>
    typealias Info = DemoOrdersInfo

    let count: Int
    private var next = 0

    init(count: Int) {
        self.count = count
    }

    mutating func handleDemand(_ demand: Int, context: inout StageContext<Output>) {
        let end = min(self.count, self.next + demand)
        if end > self.next {
            context.emit((self.next..<end).map { id in
                Message(payload: DemoOrders.payload(id), metadata: BasicMetadata(id: UInt64(id)))
            })
            self.next = end
        }
        if self.next == self.count { context.stop(.normal) }
    }

    mutating func handleInfo(_ info: DemoOrdersInfo, context: inout StageContext<Output>) {
        switch info {
        case .drain: context.stop(.normal)
        }
    }
}

/// Generated orders need no settling: the pipeline's own counters say how each one ended.
struct DemoAcknowledger: Acknowledger {
    func settle(_ settlement: Settlement<BasicMetadata>) {}
}
