//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The librabbitmq (rabbitmq-c) C API for Swift (pkg-config `librabbitmq`; Debian
// `librabbitmq-dev`). Releases up to 0.11 install <amqp.h>; later ones <rabbitmq-c/amqp.h>.
// Macros and variadic functions that Swift cannot import get a `static inline` wrapper here.
#ifndef SLUICE_CRABBIT_SHIM_H
#define SLUICE_CRABBIT_SHIM_H

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif

/// `amqp_login` (variadic) with the PLAIN mechanism: user name and password. The client also
/// announces the `consumer_cancel_notify` capability (librabbitmq merges it into its own), so
/// the broker sends `basic.cancel` when it cancels a consumer (its queue was deleted) instead
/// of dropping the consumer without a word.
static inline amqp_rpc_reply_t sluice_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                       int channel_max, int frame_max, int heartbeat,
                                                       const char *user, const char *password) {
    amqp_table_entry_t capability;
    capability.key = amqp_cstring_bytes("consumer_cancel_notify");
    capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capability.value.value.boolean = 1;
    amqp_table_entry_t property;
    property.key = amqp_cstring_bytes("capabilities");
    property.value.kind = AMQP_FIELD_KIND_TABLE;
    property.value.value.table.num_entries = 1;
    property.value.value.table.entries = &capability;
    amqp_table_t properties;
    properties.num_entries = 1;
    properties.entries = &property;
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, &properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

/// The method id of connection.close (`AMQP_CONNECTION_CLOSE_METHOD`, a cast macro).
static inline amqp_method_number_t sluice_amqp_connection_close_method(void) {
    return AMQP_CONNECTION_CLOSE_METHOD;
}

/// The method id of channel.close (`AMQP_CHANNEL_CLOSE_METHOD`, a cast macro).
static inline amqp_method_number_t sluice_amqp_channel_close_method(void) {
    return AMQP_CHANNEL_CLOSE_METHOD;
}

#endif // SLUICE_CRABBIT_SHIM_H
