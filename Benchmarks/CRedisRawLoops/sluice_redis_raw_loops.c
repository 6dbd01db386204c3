//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The raw baselines of `sluice-bench redis`: plain hiredis loops in C, as a user comparing
// against redis-cli or a C client would write them.

#include "sluice_redis_raw_loops.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static redisContext *open_context(const char *host, int port, const char *password, int database, sluice_redis_raw_result *result) {
    redisContext *context = redisConnect(host, port);
    if (context == NULL || context->err) {
        result->failed = 1;
        snprintf(result->message, sizeof result->message, "cannot connect: %s", context ? context->errstr : "no context");
        if (context) redisFree(context);
        return NULL;
    }
    if (password != NULL) {
        redisReply *reply = redisCommand(context, "AUTH %s", password);
        int refused = reply == NULL || reply->type == REDIS_REPLY_ERROR;
        if (reply) freeReplyObject(reply);
        if (refused) {
            result->failed = 1;
            snprintf(result->message, sizeof result->message, "AUTH failed");
            redisFree(context);
            return NULL;
        }
    }
    if (database != 0) {
        redisReply *reply = redisCommand(context, "SELECT %d", database);
        if (reply) freeReplyObject(reply);
    }
    return context;
}

static void fail(sluice_redis_raw_result *result, redisContext *context, const char *what) {
    result->failed = 1;
    snprintf(result->message, sizeof result->message, "%s failed: %s", what, context->err ? context->errstr : "unexpected reply");
}

sluice_redis_raw_result sluice_redis_raw_lpop(const char *host, int port, const char *password, int database, const char *key, int count) {
    sluice_redis_raw_result result = {0};
    redisContext *context = open_context(host, port, password, database, &result);
    if (context == NULL) return result;
    char countText[16];
    snprintf(countText, sizeof countText, "%d", count);
    const char *argv[3] = {"LPOP", key, countText};
    double start = now_seconds();
    while (1) {
        redisReply *reply = redisCommandArgv(context, 3, argv, NULL);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            fail(&result, context, "LPOP");
            if (reply) freeReplyObject(reply);
            break;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
            freeReplyObject(reply);
            break;
        }
        result.items += (long long)reply->elements;
        for (size_t i = 0; i < reply->elements; i++) result.bytes += (long long)reply->element[i]->len;
        freeReplyObject(reply);
    }
    result.seconds = now_seconds() - start;
    redisFree(context);
    return result;
}

sluice_redis_raw_result sluice_redis_raw_xreadgroup(
    const char *host, int port, const char *password, int database, const char *key, const char *group, const char *consumer, int count) {
    sluice_redis_raw_result result = {0};
    redisContext *context = open_context(host, port, password, database, &result);
    if (context == NULL) return result;
    char countText[16];
    snprintf(countText, sizeof countText, "%d", count);
    const char *read[9] = {"XREADGROUP", "GROUP", group, consumer, "COUNT", countText, "STREAMS", key, ">"};
    const char **ack = malloc(sizeof(char *) * (size_t)(count + 3));
    size_t *ackLengths = malloc(sizeof(size_t) * (size_t)(count + 3));
    ack[0] = "XACK";
    ack[1] = key;
    ack[2] = group;
    ackLengths[0] = 4;
    ackLengths[1] = strlen(key);
    ackLengths[2] = strlen(group);
    double start = now_seconds();
    while (1) {
        redisReply *reply = redisCommandArgv(context, 9, read, NULL);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            fail(&result, context, "XREADGROUP");
            if (reply) freeReplyObject(reply);
            break;
        }
        // [[key, [[id, [field, value…]]…]]], or nil when nothing is left.
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
            freeReplyObject(reply);
            break;
        }
        redisReply *entries = reply->element[0]->element[1];
        if (entries->elements == 0) {
            freeReplyObject(reply);
            break;
        }
        for (size_t i = 0; i < entries->elements; i++) {
            redisReply *entry = entries->element[i];
            ack[3 + i] = entry->element[0]->str;
            ackLengths[3 + i] = entry->element[0]->len;
            redisReply *fields = entry->element[1];
            if (fields->elements >= 2) result.bytes += (long long)fields->element[1]->len;
        }
        result.items += (long long)entries->elements;
        redisReply *acked = redisCommandArgv(context, (int)(3 + entries->elements), ack, ackLengths);
        freeReplyObject(reply);
        if (acked == NULL || acked->type == REDIS_REPLY_ERROR) {
            fail(&result, context, "XACK");
            if (acked) freeReplyObject(acked);
            break;
        }
        freeReplyObject(acked);
    }
    result.seconds = now_seconds() - start;
    free(ack);
    free(ackLengths);
    redisFree(context);
    return result;
}
