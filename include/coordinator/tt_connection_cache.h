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

#include "common/tt_remote.h"

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
	bool		unanswered;		/* a cancel of its query could not be
								 * delivered in time: close it, do not wait */
	bool		throttled;		/* holds a connect turn of the node budget
								 * (tt_budget_connect_begin) */
	uint64		conninfo_generation;	/* tt_node_conninfo_generation when
										 * it was started */
	bool		learning;		/* connected, asking the node for its budget
								 * (tt_budget_learn_query) ... */
	TTRemoteQuery learn;		/* ... with this query */
	bool		control;		/* the control connection of its key: never
								 * lent to a job's tasks, kept for side
								 * queries (tt_conncache_control_open) */
	bool		parked;			/* a control connection whose set-up waits
								 * for the next job (control_park) */
} TTConn;

/*
 * A query run over a spare connection of a node (same user and database)
 * while the job's own connection to it is busy: see tt_side_query_start().
 */
typedef struct TTSideQuery
{
	TTConn	   *c;				/* the spare connection, or NULL */
	char	   *sql;			/* the query (in the cache's context) */
	TTRemoteQuery q;			/* its run (src/common/remote.c) */
} TTSideQuery;

extern TTConn *tt_conncache_claim(const char *host, int port, char **error);
extern TTConn *tt_conncache_claim_cached(const char *host, int port);
extern TTConn *tt_conncache_claim_extra(const char *host, int port, char **error);
extern void tt_conncache_names(TTConn *c, const char **user_name,
							   const char **dbname);
extern void tt_conncache_drop_idle(int node);
extern void tt_conncache_close_all(void);
extern int	tt_conncache_connect_poll(TTConn *c);
extern void tt_conncache_release(TTConn *c, bool reusable);
extern void tt_conncache_abort_cleanup(void);
extern void tt_conncache_cancel_many(TTConn **conns, int n);
extern void tt_conncache_cancel_release(TTConn **conns, int n, bool keep);
extern void tt_side_query_start(TTSideQuery *q, TTConn *like, const char *sql);
extern void tt_side_query_advance(TTSideQuery *q);
extern void tt_side_query_finish(TTSideQuery *q);
extern void tt_conncache_control_open(TTConn *like, uint64 asker);
extern int	tt_conncache_control_pending(void);
extern int	tt_conncache_control_sockets(pgsocket *socks, uint32 *events,
										 int max, long *timeout_ms);
extern void tt_conncache_control_advance(void);
extern void tt_conncache_control_park(void);

#endif							/* TT_CONNECTION_CACHE_H */
