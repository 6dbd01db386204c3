//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import BrokerSmokeSupport
import CRabbit
import Foundation

/// A message delivered by `basic.deliver`, copied out of librabbitmq's envelope.
struct AMQPDelivery: Equatable, Sendable {
    var deliveryTag: UInt64
    var redelivered: Bool
    var routingKey: String
    var body: String
}

/// One blocking librabbitmq connection (`amqp_connection_state_t`) with its TCP socket.
/// A connection is not thread-safe: use it from one thread.
final class AMQPConnection {
    private let state: amqp_connection_state_t

    private init(state: amqp_connection_state_t) {
        self.state = state
    }

    deinit {
        _ = amqp_connection_close(self.state, AMQP_REPLY_SUCCESS)
        _ = amqp_destroy_connection(self.state)
    }

    /// Connects and logs in to `amqp://user:password@host:port/vhost`.
    ///
    /// An empty path (`…:port` or `…:port/`) means the default vhost `/`, as the URL printed by
    /// `scripts/brokers env` intends; `%2F` works too. (librabbitmq's own `amqp_parse_url`
    /// reads a lone trailing `/` as the empty vhost, so it is not used here.)
    static func connect(url: String, timeoutSeconds: Int = 5) throws -> AMQPConnection {
        guard let components = URLComponents(string: url), components.scheme == "amqp",
            let host = components.host, !host.isEmpty
        else {
            throw BrokerSmokeError("'\(url)' is not an amqp://user:password@host:port/ URL")
        }
        let port = Int32(components.port ?? 5672)
        let user = components.user ?? "guest"
        let password = components.password ?? "guest"
        let path = String(components.path.dropFirst())
        let vhost = path.isEmpty ? "/" : path

        guard let state = amqp_new_connection() else {
            throw BrokerSmokeError("librabbitmq could not allocate a connection")
        }
        let connection = AMQPConnection(state: state)
        guard let socket = amqp_tcp_socket_new(state) else {
            throw BrokerSmokeError("librabbitmq could not create a TCP socket")
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        let status = amqp_socket_open_noblock(socket, host, port, &timeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw BrokerSmokeError(
                "cannot connect to RabbitMQ at \(host):\(port): \(String(cString: amqp_error_string2(status)))"
            )
        }
        // Bound every later blocking RPC too.
        _ = amqp_set_rpc_timeout(state, &timeout)
        try connection.check(
            sluice_amqp_login_plain(state, vhost, 0, 131_072, 0, user, password),
            "logging in to vhost '\(vhost)' as \(user)"
        )
        return connection
    }

    func openChannel(_ channel: amqp_channel_t) throws {
        _ = amqp_channel_open(self.state, channel)
        try self.check(amqp_get_rpc_reply(self.state), "opening channel \(channel)")
    }

    func closeChannel(_ channel: amqp_channel_t) throws {
        try self.check(amqp_channel_close(self.state, channel, AMQP_REPLY_SUCCESS), "closing channel \(channel)")
    }

    /// Declares a queue (or, when `passive`, checks that it exists) and returns its count of
    /// ready messages.
    @discardableResult
    func declareQueue(_ name: String, on channel: amqp_channel_t, passive: Bool = false) throws -> UInt32 {
        let passive: amqp_boolean_t = passive ? 1 : 0
        let durable: amqp_boolean_t = 0
        let exclusive: amqp_boolean_t = 0
        let autoDelete: amqp_boolean_t = 0
        let declared = name.withCString { name in
            amqp_queue_declare(
                self.state, channel, amqp_cstring_bytes(name),
                passive, durable, exclusive, autoDelete, amqp_empty_table
            )
        }
        try self.check(amqp_get_rpc_reply(self.state), "declaring queue \(name)")
        guard let declared else { throw BrokerSmokeError("queue.declare \(name) returned no reply") }
        return declared.pointee.message_count
    }

    func deleteQueue(_ name: String, on channel: amqp_channel_t) throws {
        _ = name.withCString { name in
            amqp_queue_delete(self.state, channel, amqp_cstring_bytes(name), 0, 0)
        }
        try self.check(amqp_get_rpc_reply(self.state), "deleting queue \(name)")
    }

    /// Publishes to the default exchange, which routes by queue name.
    func publish(_ body: String, routingKey: String, on channel: amqp_channel_t) throws {
        var bytes = Array(body.utf8)
        let mandatory: amqp_boolean_t = 0
        let immediate: amqp_boolean_t = 0
        let status = routingKey.withCString { routingKey in
            bytes.withUnsafeMutableBytes { bytes in
                amqp_basic_publish(
                    self.state, channel, amqp_empty_bytes, amqp_cstring_bytes(routingKey),
                    mandatory, immediate, nil,
                    amqp_bytes_t(len: bytes.count, bytes: bytes.baseAddress)
                )
            }
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            let reason = String(cString: amqp_error_string2(status))
            throw BrokerSmokeError("basic.publish to \(routingKey) failed: \(reason)")
        }
    }

    /// Sets the prefetch window: the broker stops pushing once this many are unacknowledged.
    func setPrefetch(_ count: UInt16, on channel: amqp_channel_t) throws {
        _ = amqp_basic_qos(self.state, channel, 0, count, 0)
        try self.check(amqp_get_rpc_reply(self.state), "basic.qos \(count)")
    }

    /// Starts a consumer with manual acknowledgement.
    func consume(_ queue: String, on channel: amqp_channel_t) throws {
        let noLocal: amqp_boolean_t = 0
        let noAck: amqp_boolean_t = 0
        let exclusive: amqp_boolean_t = 0
        _ = queue.withCString { queue in
            amqp_basic_consume(
                self.state, channel, amqp_cstring_bytes(queue), amqp_empty_bytes,
                noLocal, noAck, exclusive, amqp_empty_table
            )
        }
        try self.check(amqp_get_rpc_reply(self.state), "basic.consume \(queue)")
    }

    /// Waits up to `timeoutSeconds` for the next delivery; nil when none arrived in time.
    func nextDelivery(timeoutSeconds: Int) throws -> AMQPDelivery? {
        amqp_maybe_release_buffers(self.state)
        var envelope = amqp_envelope_t()
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        let reply = amqp_consume_message(self.state, &envelope, &timeout, 0)
        if reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION, reply.library_error == AMQP_STATUS_TIMEOUT.rawValue {
            return nil
        }
        try self.check(reply, "waiting for a delivery")
        defer { amqp_destroy_envelope(&envelope) }
        return AMQPDelivery(
            deliveryTag: envelope.delivery_tag,
            redelivered: envelope.redelivered != 0,
            routingKey: Self.string(envelope.routing_key),
            body: Self.string(envelope.message.body)
        )
    }

    /// Acknowledges one delivery, or with `multiple` every delivery up to and including it.
    func ack(_ deliveryTag: UInt64, multiple: Bool, on channel: amqp_channel_t) throws {
        let status = amqp_basic_ack(self.state, channel, deliveryTag, multiple ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw BrokerSmokeError("basic.ack \(deliveryTag) failed: \(String(cString: amqp_error_string2(status)))")
        }
    }

    private func check(_ reply: amqp_rpc_reply_t, _ step: String) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw BrokerSmokeError("\(step) failed: \(String(cString: amqp_error_string2(reply.library_error)))")
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            throw BrokerSmokeError("\(step) failed: the broker closed \(Self.describeClose(reply.reply))")
        default:
            throw BrokerSmokeError("\(step) failed: no RPC reply")
        }
    }

    private static func describeClose(_ method: amqp_method_t) -> String {
        if method.id == sluice_amqp_connection_close_method(), let decoded = method.decoded {
            let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            return "the connection: \(close.reply_code) \(Self.string(close.reply_text))"
        }
        if method.id == sluice_amqp_channel_close_method(), let decoded = method.decoded {
            let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            return "the channel: \(close.reply_code) \(Self.string(close.reply_text))"
        }
        return "with method 0x\(String(method.id, radix: 16))"
    }

    private static func string(_ bytes: amqp_bytes_t) -> String {
        guard let start = bytes.bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: start, count: bytes.len), as: UTF8.self)
    }
}

@available(*, unavailable)
extension AMQPConnection: Sendable {}
