//===----------------------------------------------------------------------===//
//
// This source file is part of the Sluice open source project
//
// Licensed under Apache License v2.0
//
//===----------------------------------------------------------------------===//

// The hiredis C API for Swift (pkg-config `hiredis`; Debian `libhiredis-dev`). Use the
// non-variadic calls (`redisCommandArgv`, `redisAppendCommandArgv` + `redisGetReply`).
#ifndef SLUICE_CREDIS_SHIM_H
#define SLUICE_CREDIS_SHIM_H

#include <hiredis/hiredis.h>

/// The error text of a context (`redisContext.errstr`, a fixed-size array Swift sees as a tuple).
static inline const char *sluice_redis_error_string(const redisContext *context) {
    return context->errstr;
}

#endif // SLUICE_CREDIS_SHIM_H
