/*
 * proto/limits.c - the default bounds of proto_limits.h.  The daemon starts
 * from these and lets its configuration lower or raise them; libburst uses
 * them until the hello reply tells it the daemon's own.
 */
#include "proto_limits.h"

void
proto_limits_default(struct proto_limits *lim)
{
    *lim = (struct proto_limits)PROTO_LIMITS_DEFAULT;
}
