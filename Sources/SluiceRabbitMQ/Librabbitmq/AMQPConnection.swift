//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

import CRabbit
import Sluice

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A message `basic.deliver` brought, copied out of librabbitmq's envelope.
struct AMQPDelivery {
    var deliveryTag: UInt64
    var redelivered: Bool
    var exchange: String
    var routingKey: String
    var headers: [String: String]
    var contentType: String?
    var messageID: String?
    var timestamp: UInt64?
    var body: [UInt8]
}

/// What reading the connection brought, besides deliveries.
enum AMQPEvent {
    /// Nothing more is readable now.
    case idle
    /// A delivery (consumers).
    case delivery(AMQPDelivery)
    /// A publisher confirm: `basic.ack` (`acknowledged`) or `basic.nack`.
    case confirm(acknowledged: Bool, tag: UInt64, multiple: Bool)
    /// A `mandatory` message came back unroutable; `messageID` is the one it was published with.
    case returned(messageID: String?, replyCode: UInt16, replyText: String)
    /// The broker cancelled the consumer (for example, the queue was deleted).
    case consumerCancelled
}

// Method ids (librabbitmq defines them as cast macros, which Swift does not import).
private let connectionCloseMethod: amqp_method_number_t = 0x000A_0032
private let connectionCloseOkMethod: amqp_method_number_t = 0x000A_0033
private let channelCloseMethod: amqp_method_number_t = 0x0014_0028
private let channelCloseOkMethod: amqp_method_number_t = 0x0014_0029
private let basicCancelMethod: amqp_method_number_t = 0x003C_001E
private let basicReturnMethod: amqp_method_number_t = 0x003C_0032
private let basicAckMethod: amqp_method_number_t = 0x003C_0050
private let basicNackMethod: amqp_method_number_t = 0x003C_0078
// Property flags (`AMQP_BASIC_*_FLAG`).
private let contentTypeFlag: amqp_flags_t = 1 << 15
private let headersFlag: amqp_flags_t = 1 << 13
private let deliveryModeFlag: amqp_flags_t = 1 << 12
private let messageIDFlag: amqp_flags_t = 1 << 7
private let timestampFlag: amqp_flags_t = 1 << 6

/// One librabbitmq connection (`amqp_connection_state_t`) with its TCP socket and one
/// channel. Not thread-safe: it lives on its ``ConnectionLoop``'s thread only.
final class AMQPConnection {
    private let state: amqp_connection_state_t
    private let channel: amqp_channel_t = 1
    private let address: String
    /// Whether the connection broke (no close handshake is attempted then).
    private(set) var isBroken = false
    /// The socket, for the loop to wait on.
    let socket: Int32
    /// The heartbeat the broker and client agreed on, in seconds (0: none).
    let heartbeat: Int
    /// The last delivery's exchange and routing key: deliveries of one queue nearly always
    /// repeat them, so each is decoded (and allocated) once rather than per message.
    private var lastExchange = ""
    private var lastRoutingKey = ""

    private init(state: amqp_connection_state_t, address: String) {
        self.state = state
        self.address = address
        self.socket = amqp_get_sockfd(state)
        self.heartbeat = Int(amqp_get_heartbeat(state))
    }

    deinit {
        if !self.isBroken {
            _ = amqp_channel_close(self.state, self.channel, Int32(AMQP_REPLY_SUCCESS))
            _ = amqp_connection_close(self.state, Int32(AMQP_REPLY_SUCCESS))
        }
        _ = amqp_destroy_connection(self.state)
    }

    // MARK: Setup

    /// Connects, logs in and opens the channel. Every step is bounded by
    /// ``RabbitMQConfiguration/connectTimeout``.
    static func open(_ configuration: RabbitMQConfiguration) throws(RabbitMQError) -> AMQPConnection {
        let address = configuration.address
        guard let state = amqp_new_connection() else {
            throw RabbitMQError(.connectionFailed, "librabbitmq could not allocate a connection for \(address)")
        }
        let socket: OpaquePointer
        do throws(RabbitMQError) {
            socket = try Self.socket(state, configuration)
        } catch {
            _ = amqp_destroy_connection(state)
            throw error
        }
        var timeout = timeval(configuration.connectTimeout)
        let status = amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &timeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            _ = amqp_destroy_connection(state)
            throw RabbitMQError(
                .connectionFailed,
                "cannot connect to RabbitMQ at \(configuration.host):\(configuration.port)\(configuration.tls == nil ? "" : " over TLS"): "
                    + "\(Self.describe(status)); check that the broker runs there"
                    + (configuration.tls == nil ? "" : ", speaks TLS, and has a certificate the CA signed for that host" + Self.clientCertificateHint(configuration))
            )
        }
        _ = amqp_set_handshake_timeout(state, &timeout)
        _ = amqp_set_rpc_timeout(state, &timeout)
        let heartbeat = Int32(configuration.heartbeat.components.seconds)
        let login = sluice_amqp_login_plain(
            state, configuration.virtualHost, 0, 131_072, heartbeat, configuration.username, configuration.password
        )
        if let error = Self.error(login, "logging in to \(address) as \(configuration.username)") {
            // The broker closed the connection; there is nothing left to close politely.
            _ = amqp_destroy_connection(state)
            switch error.code {
            case .accessRefused:
                throw RabbitMQError(.accessRefused, error.message + "; check the user name and password")
            case .notAllowed:
                throw RabbitMQError(.notAllowed, error.message + "; check that vhost \(configuration.virtualHost) exists and the user may use it")
            case .connectionLost where configuration.tls != nil && login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION:
                // With TLS 1.3 the broker checks the client's certificate after the client
                // finished its side of the handshake, so a refusal surfaces in the first read.
                throw RabbitMQError(
                    .connectionFailed,
                    error.message + "; the TLS session with \(configuration.host):\(configuration.port) ended before the AMQP login"
                        + Self.clientCertificateHint(configuration)
                )
            default:
                throw error
            }
        }
        let connection = AMQPConnection(state: state, address: address)
        _ = amqp_channel_open(state, connection.channel)
        try connection.check(amqp_get_rpc_reply(state), "opening a channel")
        return connection
    }

    /// A TCP socket, or a TLS one set up as `configuration.tls` says.
    private static func socket(_ state: amqp_connection_state_t, _ configuration: RabbitMQConfiguration) throws(RabbitMQError) -> OpaquePointer {
        guard let tls = configuration.tls else {
            guard let socket = amqp_tcp_socket_new(state) else {
                throw RabbitMQError(.connectionFailed, "librabbitmq could not create a TCP socket for \(configuration.address)")
            }
            return socket
        }
        guard let socket = amqp_ssl_socket_new(state) else {
            throw RabbitMQError(.connectionFailed, "librabbitmq could not create a TLS socket for \(configuration.address)")
        }
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        guard amqp_ssl_socket_set_cacert(socket, tls.caCertificatePath) == AMQP_STATUS_OK.rawValue else {
            throw RabbitMQError(.invalidConfiguration, "cannot read the CA certificate \(tls.caCertificatePath) (a PEM file is expected)")
        }
        if let certificate = tls.certificatePath, let key = tls.keyPath {
            guard amqp_ssl_socket_set_key(socket, certificate, key) == AMQP_STATUS_OK.rawValue else {
                throw RabbitMQError(
                    .invalidConfiguration,
                    "cannot read the client certificate \(certificate) with key \(key) (PEM files that belong together are expected)"
                )
            }
        }
        return socket
    }

    /// What to check about the client certificate when a TLS session could not be made.
    private static func clientCertificateHint(_ configuration: RabbitMQConfiguration) -> String {
        guard let certificate = configuration.tls?.certificatePath else {
            return "; if the broker requires a client certificate (ssl_options.fail_if_no_peer_cert), give certfile and keyfile"
        }
        return "; check that the broker trusts the CA that signed the client certificate \(certificate)"
    }

    /// Declares what `configuration` asks for, or checks that the queue exists.
    func declare(_ configuration: RabbitMQConfiguration) throws(RabbitMQError) {
        let topology = configuration.topology
        var strings = CStrings()
        defer { strings.release() }
        let queue = strings.bytes(configuration.queue)
        guard topology.declare else {
            _ = amqp_queue_declare(self.state, self.channel, queue, 1, 0, 0, 0, amqp_empty_table)
            try self.check(amqp_get_rpc_reply(self.state), "checking that queue \(configuration.queue) exists (declare=false)")
            return
        }
        let durable: amqp_boolean_t = topology.durable ? 1 : 0
        if let exchange = topology.exchange {
            _ = amqp_exchange_declare(
                self.state, self.channel, strings.bytes(exchange), strings.bytes(topology.exchangeType.name),
                0, durable, 0, 0, amqp_empty_table
            )
            try self.check(amqp_get_rpc_reply(self.state), "declaring exchange \(exchange)")
        }
        var arguments: [(String, String)] = []
        if let type = topology.queueType { arguments.append(("x-queue-type", type.description)) }
        if let exchange = topology.deadLetterExchange { arguments.append(("x-dead-letter-exchange", exchange)) }
        if let key = topology.deadLetterRoutingKey { arguments.append(("x-dead-letter-routing-key", key)) }
        _ = amqp_queue_declare(self.state, self.channel, queue, 0, durable, 0, 0, strings.table(arguments))
        try self.check(amqp_get_rpc_reply(self.state), "declaring queue \(configuration.queue)")
        if let exchange = topology.exchange {
            for key in topology.bindingKeys.isEmpty ? [configuration.queue] : topology.bindingKeys {
                _ = amqp_queue_bind(self.state, self.channel, queue, strings.bytes(exchange), strings.bytes(key), amqp_empty_table)
                try self.check(amqp_get_rpc_reply(self.state), "binding queue \(configuration.queue) to \(exchange) with \(key)")
            }
        }
    }

    /// How many messages `queue` holds ready for delivery (a passive declare).
    func readyCount(_ queue: String) throws(RabbitMQError) -> Int {
        var strings = CStrings()
        defer { strings.release() }
        let ok = amqp_queue_declare(self.state, self.channel, strings.bytes(queue), 1, 0, 0, 0, amqp_empty_table)
        try self.check(amqp_get_rpc_reply(self.state), "checking queue \(queue)")
        return Int(ok?.pointee.message_count ?? 0)
    }

    /// Deletes `queue` (and `exchange`, if given); missing ones are fine.
    func delete(queue: String, exchange: String?) throws(RabbitMQError) {
        var strings = CStrings()
        defer { strings.release() }
        _ = amqp_queue_delete(self.state, self.channel, strings.bytes(queue), 0, 0)
        try self.check(amqp_get_rpc_reply(self.state), "deleting queue \(queue)")
        if let exchange {
            _ = amqp_exchange_delete(self.state, self.channel, strings.bytes(exchange), 0)
            try self.check(amqp_get_rpc_reply(self.state), "deleting exchange \(exchange)")
        }
    }

    /// `basic.qos` and `basic.consume` with manual acknowledgement; returns the consumer tag.
    func consume(_ configuration: RabbitMQConfiguration, prefetch: Int) throws(RabbitMQError) -> String {
        _ = amqp_basic_qos(self.state, self.channel, 0, UInt16(prefetch), 0)
        try self.check(amqp_get_rpc_reply(self.state), "setting prefetch \(prefetch) (basic.qos)")
        var strings = CStrings()
        defer { strings.release() }
        let tag = configuration.consumerTag.map { strings.bytes($0) } ?? amqp_empty_bytes
        let ok = amqp_basic_consume(self.state, self.channel, strings.bytes(configuration.queue), tag, 0, 0, 0, amqp_empty_table)
        try self.check(amqp_get_rpc_reply(self.state), "consuming queue \(configuration.queue)")
        guard let ok else { return configuration.consumerTag ?? "" }
        return Self.string(ok.pointee.consumer_tag)
    }

    /// Puts the channel in confirm mode (publisher confirms).
    func selectConfirms() throws(RabbitMQError) {
        _ = amqp_confirm_select(self.state, self.channel)
        try self.check(amqp_get_rpc_reply(self.state), "enabling publisher confirms (confirm.select)")
    }

    /// `basic.cancel` for `consumerTag`; waits for `cancel-ok` (deliveries that arrive before
    /// it are kept for ``next()``).
    func cancel(consumerTag: String) throws(RabbitMQError) {
        var strings = CStrings()
        defer { strings.release() }
        _ = amqp_basic_cancel(self.state, self.channel, strings.bytes(consumerTag))
        try self.check(amqp_get_rpc_reply(self.state), "cancelling consumer \(consumerTag)")
    }

    // MARK: Traffic

    /// Reads the next event, waiting at most `waiting` (by default not at all): a delivery, a confirm, a return, or ``AMQPEvent/idle``.
    /// Heartbeats are sent and checked inside librabbitmq's reads.
    ///
    /// - Throws: ``RabbitMQError`` when the broker closed the channel or connection, or the
    ///   connection broke.
    func next(waiting: Duration = .zero) throws(RabbitMQError) -> AMQPEvent {
        amqp_maybe_release_buffers(self.state)
        var envelope = amqp_envelope_t()
        var timeout = waiting == .zero ? timeval(tv_sec: 0, tv_usec: 0) : timeval(waiting)
        let reply = amqp_consume_message(self.state, &envelope, &timeout, 0)
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            defer { amqp_destroy_envelope(&envelope) }
            return .delivery(self.delivery(envelope))
        case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_TIMEOUT.rawValue:
            return .idle
        case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_UNEXPECTED_STATE.rawValue:
            return try self.otherFrame()
        default:
            throw self.lost(reply, "reading from the broker")
        }
    }

    /// A frame other than a delivery, which `amqp_consume_message` left queued.
    private func otherFrame() throws(RabbitMQError) -> AMQPEvent {
        var frame = amqp_frame_t()
        var immediately = timeval(tv_sec: 0, tv_usec: 0)
        let status = amqp_simple_wait_frame_noblock(self.state, &frame, &immediately)
        if status == AMQP_STATUS_TIMEOUT.rawValue { return .idle }
        guard status == AMQP_STATUS_OK.rawValue else {
            self.isBroken = true
            throw RabbitMQError(.connectionLost, "the connection to \(self.address) broke: \(Self.describe(status))")
        }
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return .idle }
        let method = frame.payload.method
        switch method.id {
        case basicAckMethod:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            return .confirm(acknowledged: true, tag: ack.delivery_tag, multiple: ack.multiple != 0)
        case basicNackMethod:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            return .confirm(acknowledged: false, tag: nack.delivery_tag, multiple: nack.multiple != 0)
        case basicReturnMethod:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let code = returned.reply_code
            let text = Self.string(returned.reply_text)
            var message = amqp_message_t()
            let read = amqp_read_message(self.state, frame.channel, &message, 0)
            guard read.reply_type == AMQP_RESPONSE_NORMAL else { throw self.lost(read, "reading a returned message") }
            defer { amqp_destroy_message(&message) }
            let properties = message.properties
            let id = properties._flags & messageIDFlag != 0 ? Self.string(properties.message_id) : nil
            return .returned(messageID: id, replyCode: code, replyText: text)
        case basicCancelMethod:
            return .consumerCancelled
        case channelCloseMethod:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(self.state, frame.channel, channelCloseOkMethod, &ok)
            // One channel per connection: the connection is given up with it.
            self.isBroken = true
            let text = Self.string(close.reply_text)
            throw RabbitMQError(
                RabbitMQError.code(forReply: close.reply_code, connection: false),
                "the broker closed the channel to \(self.address): \(close.reply_code) \(text)"
            )
        case connectionCloseMethod:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            _ = amqp_send_method(self.state, 0, connectionCloseOkMethod, &ok)
            self.isBroken = true
            throw RabbitMQError(
                .connectionLost,
                "the broker closed the connection to \(self.address): \(close.reply_code) \(Self.string(close.reply_text))"
            )
        default:
            return .idle
        }
    }

    /// `basic.ack` of `tag`, or with `multiple` of every unacknowledged tag up to it.
    func ack(_ tag: UInt64, multiple: Bool) throws(RabbitMQError) {
        try self.sent(amqp_basic_ack(self.state, self.channel, tag, multiple ? 1 : 0), "basic.ack \(tag)")
    }

    /// `basic.reject` of `tag`, back to the queue (`requeue`) or to the dead-letter exchange.
    func reject(_ tag: UInt64, requeue: Bool) throws(RabbitMQError) {
        try self.sent(amqp_basic_reject(self.state, self.channel, tag, requeue ? 1 : 0), "basic.reject \(tag)")
    }

    /// `basic.publish` of `body` along `route`; `messageID` (if any) is sent as
    /// `sluice-<messageID>`.
    func publish(_ body: Payload, route: AMQPRoute, mandatory: Bool, persistent: Bool, messageID: UInt64?) throws(RabbitMQError) {
        var properties = amqp_basic_properties_t()
        if persistent {
            properties._flags |= deliveryModeFlag
            properties.delivery_mode = 2
        }
        var id = messageID.map { Array("sluice-\($0)".utf8) } ?? []
        let status = id.withUnsafeMutableBytes { id in
            if messageID != nil {
                properties._flags |= messageIDFlag
                properties.message_id = amqp_bytes_t(len: id.count, bytes: id.baseAddress)
            }
            return body.withUnsafeBytes { bytes in
                amqp_basic_publish(
                    self.state, self.channel, route.exchange, route.routingKey, mandatory ? 1 : 0, 0, &properties,
                    amqp_bytes_t(len: bytes.count, bytes: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
                )
            }
        }
        try self.sent(status, "basic.publish")
    }

    /// `basic.publish` of `body` to the default exchange with `properties` (content type,
    /// headers, message id, timestamp): for tools and tests. The sink publishes through
    /// ``publish(_:route:mandatory:persistent:messageID:)``.
    func publish(_ body: [UInt8], routingKey: String, properties message: AMQPMessageProperties) throws(RabbitMQError) {
        var strings = CStrings()
        defer { strings.release() }
        var properties = amqp_basic_properties_t()
        if let type = message.contentType {
            properties._flags |= contentTypeFlag
            properties.content_type = strings.bytes(type)
        }
        if !message.headers.isEmpty {
            properties._flags |= headersFlag
            properties.headers = strings.table(message.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
        if let id = message.messageID {
            properties._flags |= messageIDFlag
            properties.message_id = strings.bytes(id)
        }
        if let timestamp = message.timestamp {
            properties._flags |= timestampFlag
            properties.timestamp = timestamp
        }
        let status = body.withUnsafeBytes { bytes in
            amqp_basic_publish(
                self.state, self.channel, amqp_empty_bytes, strings.bytes(routingKey), 0, 0, &properties,
                amqp_bytes_t(len: bytes.count, bytes: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
            )
        }
        try self.sent(status, "basic.publish")
    }

    // MARK: Helpers

    private func sent(_ status: Int32, _ what: String) throws(RabbitMQError) {
        guard status != AMQP_STATUS_OK.rawValue else { return }
        self.isBroken = true
        throw RabbitMQError(.connectionLost, "\(what) to \(self.address) failed: \(Self.describe(status))")
    }

    private func check(_ reply: amqp_rpc_reply_t, _ step: String) throws(RabbitMQError) {
        if let error = Self.error(reply, "\(step) on \(self.address)") {
            // Any failed setup step gives up the connection.
            self.isBroken = true
            throw error
        }
    }

    private func lost(_ reply: amqp_rpc_reply_t, _ step: String) -> RabbitMQError {
        self.isBroken = true
        return Self.error(reply, "\(step) on \(self.address)").map { RabbitMQError(.connectionLost, $0.message) }
            ?? RabbitMQError(.connectionLost, "\(step) on \(self.address) failed")
    }

    /// The error an RPC reply carries, if it is not normal.
    private static func error(_ reply: amqp_rpc_reply_t, _ step: String) -> RabbitMQError? {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return nil
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let code: RabbitMQError.Code = reply.library_error == AMQP_STATUS_TIMEOUT.rawValue ? .connectionFailed : .connectionLost
            return RabbitMQError(code, "\(step) failed: \(Self.describe(reply.library_error))")
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            let method = reply.reply
            if method.id == connectionCloseMethod, let decoded = method.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                return RabbitMQError(
                    RabbitMQError.code(forReply: close.reply_code, connection: true),
                    "\(step) failed: the broker closed the connection: \(close.reply_code) \(Self.string(close.reply_text))"
                )
            }
            if method.id == channelCloseMethod, let decoded = method.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                return RabbitMQError(
                    RabbitMQError.code(forReply: close.reply_code, connection: false),
                    "\(step) failed: the broker closed the channel: \(close.reply_code) \(Self.string(close.reply_text))"
                )
            }
            return RabbitMQError(.serverError, "\(step) failed: the broker answered with method 0x\(String(method.id, radix: 16))")
        default:
            return RabbitMQError(.connectionLost, "\(step) failed: no reply")
        }
    }

    private static func describe(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    static func string(_ bytes: amqp_bytes_t) -> String {
        guard let start = bytes.bytes, bytes.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: start, count: bytes.len), as: UTF8.self)
    }

    /// `bytes` as text, reusing `last` when it holds the same text.
    private static func string(_ bytes: amqp_bytes_t, reusing last: inout String) -> String {
        let same = last.utf8.withContiguousStorageIfAvailable { stored in
            guard stored.count == bytes.len else { return false }
            guard let mine = stored.baseAddress, let theirs = bytes.bytes else { return bytes.len == 0 }
            return memcmp(mine, theirs, bytes.len) == 0
        }
        if same != true { last = Self.string(bytes) }
        return last
    }

    private func delivery(_ envelope: amqp_envelope_t) -> AMQPDelivery {
        let properties = envelope.message.properties
        let flags = properties._flags
        let body = envelope.message.body
        return AMQPDelivery(
            deliveryTag: envelope.delivery_tag,
            redelivered: envelope.redelivered != 0,
            exchange: Self.string(envelope.exchange, reusing: &self.lastExchange),
            routingKey: Self.string(envelope.routing_key, reusing: &self.lastRoutingKey),
            headers: flags & headersFlag != 0 ? Self.headers(properties.headers) : [:],
            contentType: flags & contentTypeFlag != 0 ? Self.string(properties.content_type) : nil,
            messageID: flags & messageIDFlag != 0 ? Self.string(properties.message_id) : nil,
            timestamp: flags & timestampFlag != 0 ? properties.timestamp : nil,
            body: body.bytes.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: body.len)) } ?? []
        )
    }

    /// A header table, each value as text.
    private static func headers(_ table: amqp_table_t) -> [String: String] {
        guard table.num_entries > 0, let entries = table.entries else { return [:] }
        var headers: [String: String] = [:]
        for index in 0..<Int(table.num_entries) {
            let entry = entries[index]
            headers[Self.string(entry.key)] = Self.text(entry.value)
        }
        return headers
    }

    private static func text(_ field: amqp_field_value_t) -> String {
        let value = field.value
        switch UInt32(field.kind) {
        case AMQP_FIELD_KIND_BOOLEAN.rawValue: return value.boolean != 0 ? "true" : "false"
        case AMQP_FIELD_KIND_I8.rawValue: return "\(value.i8)"
        case AMQP_FIELD_KIND_U8.rawValue: return "\(value.u8)"
        case AMQP_FIELD_KIND_I16.rawValue: return "\(value.i16)"
        case AMQP_FIELD_KIND_U16.rawValue: return "\(value.u16)"
        case AMQP_FIELD_KIND_I32.rawValue: return "\(value.i32)"
        case AMQP_FIELD_KIND_U32.rawValue: return "\(value.u32)"
        case AMQP_FIELD_KIND_I64.rawValue: return "\(value.i64)"
        case AMQP_FIELD_KIND_U64.rawValue, AMQP_FIELD_KIND_TIMESTAMP.rawValue: return "\(value.u64)"
        case AMQP_FIELD_KIND_F32.rawValue: return "\(value.f32)"
        case AMQP_FIELD_KIND_F64.rawValue: return "\(value.f64)"
        case AMQP_FIELD_KIND_UTF8.rawValue, AMQP_FIELD_KIND_BYTES.rawValue: return Self.string(value.bytes)
        case AMQP_FIELD_KIND_VOID.rawValue: return ""
        default: return "(table or array)"
        }
    }
}

@available(*, unavailable)
extension AMQPConnection: Sendable {}

/// An exchange and routing key to publish along, as librabbitmq wants them (made once).
final class AMQPRoute {
    private var strings = CStrings()
    let exchange: amqp_bytes_t
    let routingKey: amqp_bytes_t

    init(exchange: String, routingKey: String) {
        self.exchange = self.strings.bytes(exchange)
        self.routingKey = self.strings.bytes(routingKey)
    }

    deinit {
        self.strings.release()
    }
}

@available(*, unavailable)
extension AMQPRoute: Sendable {}

/// The optional `basic.properties` ``AMQPConnection/publish(_:routingKey:properties:)`` sets.
struct AMQPMessageProperties {
    var contentType: String?
    var headers: [String: String] = [:]
    var messageID: String?
    var timestamp: UInt64?
}

/// C strings (and tables of them) made for one librabbitmq call, freed together after it.
struct CStrings {
    private var pointers: [UnsafeMutablePointer<CChar>] = []
    private var tables: [UnsafeMutablePointer<amqp_table_entry_t>] = []

    /// `text` as `amqp_bytes_t`, valid until ``release()``.
    mutating func bytes(_ text: String) -> amqp_bytes_t {
        let pointer = strdup(text)!
        self.pointers.append(pointer)
        return amqp_bytes_t(len: strlen(pointer), bytes: UnsafeMutableRawPointer(pointer))
    }

    /// `entries` as a field table of text values, valid until ``release()``.
    mutating func table(_ entries: [(String, String)]) -> amqp_table_t {
        guard !entries.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let table = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: entries.count)
        self.tables.append(table)
        for (index, (key, value)) in entries.enumerated() {
            var field = amqp_field_value_t()
            field.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            field.value.bytes = self.bytes(value)
            table[index] = amqp_table_entry_t(key: self.bytes(key), value: field)
        }
        return amqp_table_t(num_entries: Int32(entries.count), entries: table)
    }

    /// Frees every string and table made.
    func release() {
        for pointer in self.pointers { free(pointer) }
        for table in self.tables { table.deallocate() }
    }
}

extension timeval {
    /// A `timeval` of `duration` (at least 1 µs).
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: max(seconds == 0 ? 1 : 0, Int(attoseconds / 1_000_000_000_000)))
    }
}
