//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The librdkafka C API for Swift (pkg-config `rdkafka`; Debian `librdkafka-dev`). Macros and
// variadic functions that Swift cannot import get a `static inline` wrapper here.
#ifndef SLUICE_CKAFKA_SHIM_H
#define SLUICE_CKAFKA_SHIM_H

#include <librdkafka/rdkafka.h>

/// `RD_KAFKA_PARTITION_UA`: let the configured partitioner pick the partition.
static inline int32_t sluice_rd_kafka_partition_ua(void) {
    return RD_KAFKA_PARTITION_UA;
}

/// `rd_kafka_producev` (variadic) for the common case: a copy of `value` (and of `key`, which
/// may be NULL) goes to `topic` on `partition` (or `sluice_rd_kafka_partition_ua()`).
/// Returns `RD_KAFKA_RESP_ERR__QUEUE_FULL` when the local queue is full.
static inline rd_kafka_resp_err_t sluice_rd_kafka_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                          const void *key, size_t key_length,
                                                          const void *value, size_t value_length,
                                                          void *opaque) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY((void *)key, key_length),
                             RD_KAFKA_V_VALUE((void *)value, value_length),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}

/// `rd_kafka_producev` (variadic) with headers: like `sluice_rd_kafka_produce`, and on success
/// librdkafka takes ownership of `headers` (which may be NULL); on failure the caller keeps it.
static inline rd_kafka_resp_err_t sluice_rd_kafka_produce_headers(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                                  const void *key, size_t key_length,
                                                                  const void *value, size_t value_length,
                                                                  rd_kafka_headers_t *headers, void *opaque) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY((void *)key, key_length),
                             RD_KAFKA_V_VALUE((void *)value, value_length),
                             RD_KAFKA_V_HEADERS(headers),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}

#endif // SLUICE_CKAFKA_SHIM_H
