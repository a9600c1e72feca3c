/*-------------------------------------------------------------------------
 *
 * tt_connection_cache.h
 *	  The coordinator's per-backend cache of libpq connections to worker
 *	  nodes, shared by both executors and run_on_workers().
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_CONNECTION_CACHE_H
#define TT_CONNECTION_CACHE_H

#include "libpq-fe.h"
#include "datatype/timestamp.h"

struct TTConnEntry;

/* One connection to a node, owned by the cache, lent to one job at a time. */
typedef struct TTConn
{
	PGconn	   *conn;			/* the libpq connection, from tt_conn_start() */
	struct TTConnEntry *entry;	/* cache entry (host, port, user, database) */
	bool		claimed;		/* lent to a job right now */
	bool		connecting;		/* PQconnectPoll has not finished yet */
	PostgresPollingStatusType poll; /* last PQconnectPoll result */
	TimestampTz connect_deadline;	/* wall-clock limit of the connection attempt */
	bool		reused;			/* was already connected when claimed */
	int			tracker_capacity;	/* the node's max_tracked_tasks_per_node, -1
									 * if not known yet */
} TTConn;

extern TTConn *tt_conncache_claim(const char *host, int port, char **error);
extern int	tt_conncache_connect_poll(TTConn *c);
extern void tt_conncache_release(TTConn *c, bool reusable);
extern void tt_conncache_cancel(TTConn *c);
extern void tt_conncache_abort_cleanup(void);

#endif							/* TT_CONNECTION_CACHE_H */
