//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

#ifndef SLUICE_REDIS_RAW_LOOPS_H
#define SLUICE_REDIS_RAW_LOOPS_H

/// What a raw loop consumed, and how long it took (from its first command to its last reply).
typedef struct {
    long long items;
    long long bytes;
    double seconds;
    /// 0, or 1 with `message` set.
    int failed;
    char message[200];
} sluice_redis_raw_result;

/// `LPOP key count` on one hiredis connection until the list is empty. Payloads are only
/// counted (their lengths summed), never copied: a C client's best case.
sluice_redis_raw_result sluice_redis_raw_lpop(const char *host, int port, const char *password, int database, const char *key, int count);

/// `XREADGROUP GROUP group consumer COUNT count STREAMS key >` and then `XACK key group ids…`
/// on one hiredis connection until no entry is left.
sluice_redis_raw_result sluice_redis_raw_xreadgroup(
    const char *host, int port, const char *password, int database, const char *key, const char *group, const char *consumer, int count);

#endif
