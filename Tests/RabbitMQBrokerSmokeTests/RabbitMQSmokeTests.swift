//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import Testing

@Suite("RabbitMQ through librabbitmq", .timeLimit(.minutes(1)))
struct RabbitMQSmokeTests {
    /// Declare a queue, publish to it, consume with a prefetch window and manual acks, and check
    /// that the acknowledged messages are gone for good (a closed channel would have returned
    /// unacknowledged ones to the queue).
    @Test func declarePublishConsumeAck() async throws {
        let url = try BrokerEnvironment.require(BrokerEnvironment.rabbitMQURL)
        let queue = BrokerEnvironment.uniqueName("queue")
        let bodies = (0..<5).map { "message-\($0)" }

        let (deliveries, readyAfterAck) = try await onDedicatedThread(
            named: "rabbitmq-smoke"
        ) { () throws -> ([AMQPDelivery], UInt32) in
            let connection = try AMQPConnection.connect(url: url)
            try connection.openChannel(1)
            try connection.declareQueue(queue, on: 1)
            for body in bodies {
                try connection.publish(body, routingKey: queue, on: 1)
            }
            try connection.setPrefetch(10, on: 1)
            try connection.consume(queue, on: 1)
            var deliveries: [AMQPDelivery] = []
            while deliveries.count < bodies.count, let delivery = try connection.nextDelivery(timeoutSeconds: 10) {
                deliveries.append(delivery)
            }
            if let last = deliveries.last {
                try connection.ack(last.deliveryTag, multiple: true, on: 1)
            }
            try connection.closeChannel(1)

            try connection.openChannel(2)
            let readyAfterAck = try connection.declareQueue(queue, on: 2, passive: true)
            try connection.deleteQueue(queue, on: 2)
            try connection.closeChannel(2)
            return (deliveries, readyAfterAck)
        }

        #expect(deliveries.map(\.body) == bodies)
        #expect(deliveries.allSatisfy { $0.routingKey == queue && !$0.redelivered })
        #expect(deliveries.map(\.deliveryTag) == Array(1...UInt64(bodies.count)))
        #expect(readyAfterAck == 0, "acknowledged messages must not come back when the channel closes")
    }
}
