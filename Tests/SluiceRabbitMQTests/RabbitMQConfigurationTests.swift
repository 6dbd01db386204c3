//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

@testable import SluiceRabbitMQ
import Testing

@Suite struct RabbitMQConfigurationTests {
    @Test func readsEveryPartOfAURL() throws {
        let configuration = try RabbitMQConfiguration(
            url: "amqp://user:p%40ss@broker.example:5673/orders?queue=q1&prefetch=500&declare=true&queue_type=quorum"
                + "&dead_letter_exchange=dlx&exchange=ex&exchange_type=topic&binding_keys=a.*,b.%23&heartbeat=30"
        )
        #expect(configuration.host == "broker.example")
        #expect(configuration.port == 5673)
        #expect(configuration.virtualHost == "orders")
        #expect(configuration.username == "user")
        #expect(configuration.password == "p@ss")
        #expect(configuration.queue == "q1")
        #expect(configuration.prefetch == 500)
        #expect(configuration.topology.declare)
        #expect(configuration.topology.queueType == .quorum)
        #expect(configuration.topology.deadLetterExchange == "dlx")
        #expect(configuration.topology.exchange == "ex")
        #expect(configuration.topology.exchangeType == .topic)
        #expect(configuration.topology.bindingKeys == ["a.*", "b.#"])
        #expect(configuration.heartbeat == .seconds(30))
    }

    @Test func anEmptyPathIsTheDefaultVhostAndPercent2FDecodes() throws {
        #expect(try RabbitMQConfiguration(url: "amqp://h?queue=q").virtualHost == "/")
        #expect(try RabbitMQConfiguration(url: "amqp://h:5672/?queue=q").virtualHost == "/")
        #expect(try RabbitMQConfiguration(url: "amqp://h/%2F?queue=q").virtualHost == "/")
        #expect(try RabbitMQConfiguration(url: "amqp://h/a%2Fb?queue=q").virtualHost == "a/b")
        #expect(try RabbitMQConfiguration(url: "amqp://h?queue=q").port == 5672)
    }

    @Test(arguments: [
        ("amqp://h", "missing queue"),
        ("http://h?queue=q", "scheme must be amqp"),
        ("amqp://h?queue=q&prefetch=0", "prefetch 0 must be between 1 and 65535"),
        ("amqp://h?queue=q&prefetch=70000", "prefetch 70000 must be between 1 and 65535"),
        ("amqp://h?queue=q&prefetch=-3", "prefetch must be a whole number"),
        ("amqp://h?queue=q&heartbeat=601", "heartbeat must be whole seconds between 0 and 600"),
        ("amqp://h?queue=q&wat=1", "unknown parameter wat"),
        ("amqp://h?queue=q&queue=r", "given twice"),
        ("amqp://h?queue=q&queue_type=lazy", "queue_type must be classic or quorum"),
        ("amqp://h?queue=q&declare=maybe", "declare must be true or false"),
        ("amqp://h:99999?queue=q", "port"),
        ("amqp://h/a/b?queue=q", "one vhost name"),
        ("amqp://h?queue=q&dead_letter_routing_key=k", "needs a deadLetterExchange"),
    ])
    func refusesBadURLsWithOneLine(url: String, expected: String) {
        #expect {
            try RabbitMQConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RabbitMQError else { return false }
            return error.code == .invalidURL && error.message.contains(expected) && !error.message.contains("\n")
        }
    }

    @Test func amqpsNeedsACAAndDefaultsToPort5671() throws {
        let configuration = try RabbitMQConfiguration(url: "amqps://h/?queue=q&cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem&verify=verify_none")
        #expect(configuration.port == 5671)
        #expect(configuration.tls?.caCertificatePath == "/ca.pem")
        #expect(configuration.tls?.certificatePath == "/c.pem")
        #expect(configuration.tls?.keyPath == "/k.pem")
        #expect(configuration.tls?.verifyPeer == false)
        #expect(throws: RabbitMQError.self) { try RabbitMQConfiguration(url: "amqps://h/?queue=q") }
        #expect(throws: RabbitMQError.self) { try RabbitMQConfiguration(url: "amqps://h/?queue=q&cacertfile=/ca.pem&certfile=/c.pem") }
        #expect(throws: RabbitMQError.self) { try RabbitMQConfiguration(url: "amqp://h/?queue=q&cacertfile=/ca.pem") }
    }

    @Test func passwordsNeverShow() throws {
        let url = "amqp://admin:s3cr3t@h:5672/?queue=q&prefetch=0"
        #expect(RabbitMQConfiguration.redacted(url) == "amqp://admin:***@h:5672/?queue=q&prefetch=0")
        do {
            _ = try RabbitMQConfiguration(url: url)
            Issue.record("a prefetch of 0 was accepted")
        } catch {
            #expect(!error.message.contains("s3cr3t"))
            #expect(!"\(error)".contains("s3cr3t"))
        }
        let configuration = try RabbitMQConfiguration(url: "amqp://admin:s3cr3t@h/?queue=q")
        #expect(!configuration.description.contains("s3cr3t"))
        #expect(configuration.description.contains("***"))
    }

    @Test func validateChecksRanges() {
        var configuration = RabbitMQConfiguration(queue: "q")
        configuration.ackDelay = .seconds(11)
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration(queue: "")
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration(queue: "q")
        configuration.reconnectBackoff = .seconds(10)
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        #expect(throws: Never.self) { try RabbitMQConfiguration(queue: "q").validate() }
    }

    @Test func prefetchComesFromTheWindowOrMustHoldIt() throws {
        #expect(try RabbitMQSource.prefetch(nil, window: 40) == 40)
        #expect(try RabbitMQSource.prefetch(100, window: 40) == 100)
        #expect {
            try RabbitMQSource.prefetch(10, window: 40)
        } throws: { error in
            let error = error as? RabbitMQError
            return error?.code == .prefetchTooSmall && error!.message.contains("10") && error!.message.contains("40")
        }
        #expect(throws: RabbitMQError.self) { try RabbitMQSource.prefetch(nil, window: 70_000) }
    }

    @Test func deliveryCountFromHeaderOrRedeliveredFlag() {
        #expect(RabbitMQMetadata(deliveryTag: 1, channelGeneration: 1).deliveryCount == 1)
        #expect(RabbitMQMetadata(deliveryTag: 1, channelGeneration: 1, redelivered: true).deliveryCount == 2)
        let quorum = RabbitMQMetadata(deliveryTag: 1, channelGeneration: 1, redelivered: true, headers: ["x-delivery-count": "4"])
        #expect(quorum.deliveryCount == 5)
    }
}
