/*-------------------------------------------------------------------------
 *
 * tt_remote.h
 *	  The one libpq module of task_tracker (src/common/remote.c): connect
 *	  without blocking, send, run a query to its end, cancel and drain
 *	  with a deadline, and turn remote errors into data or ereports.
 *
 * Every libpq connection the extension opens (the tracker's task
 * sessions and the coordinator's executor connections) goes through
 * tt_conn_start() and tt_conn_finish(), so external-FD accounting and the
 * notice receiver are never forgotten.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_REMOTE_H
#define TT_REMOTE_H

#include "libpq-fe.h"
#include "datatype/timestamp.h"

/* Where and as whom to connect. */
typedef struct TTConnTarget
{
	const char *host;			/* host name, address or socket directory */
	const char *hostaddr;		/* its numeric address(es), NULL: libpq
								 * resolves host (src/coordinator/node_registry.c) */
	int			port;			/* port number */
	const char *user;			/* role to log in as (never changed later) */
	const char *dbname;			/* database */
	const char *client_encoding;	/* NULL: server default */
	const char *application_name;	/* fallback_application_name */
	int			noptions;		/* more libpq options, added after these: */
	const char *const *option_keywords;	/* e.g. citus.node_conninfo's for
										 * another node (tt_node_conninfo_options) */
	const char *const *option_values;	/* their values */
} TTConnTarget;

/* A remote error kept as data (copied out of a PGresult / PGconn). */
typedef struct TTRemoteError
{
	char		sqlstate[6];	/* five characters and a NUL */
	char	   *message;		/* primary message, never NULL */
	char	   *detail;			/* or NULL */
	char	   *hint;			/* or NULL */
	char	   *context;		/* the remote CONTEXT, or NULL */
} TTRemoteError;

/*
 * A query run to its end over a connection without waiting
 * (tt_remote_query_start / tt_remote_query_advance).
 */
typedef struct TTRemoteQuery
{
	PGconn	   *conn;			/* the connection */
	const char *sql;			/* the query (owned by the caller) */
	bool		keep_value;		/* fill value below */
	bool		sent;			/* sql handed to libpq */
	bool		flushing;		/* not all of it sent yet */
	bool		failed;			/* an error result arrived */
	bool		broken;			/* the connection failed, or a COPY began:
								 * it cannot be reused */
	bool		copy;			/* ... because a COPY began */
	bool		done;			/* finished, well or not */
	bool		ok;				/* every statement succeeded */
	char	   *value;			/* keep_value: value or command tag of the
								 * last statement, or NULL */
	bool		keep_result;	/* set by the caller after start: keep ... */
	PGresult   *result;			/* ... the last row-returning result here
								 * (the caller PQclear()s it), or NULL */
	TTRemoteError err;			/* when done and not ok: why */
	pgsocket	sock;			/* socket to wait on while not done */
	uint32		events;			/* WL_SOCKET_* to wait for while not done */
} TTRemoteQuery;

/* what tt_remote_drain_until made of a connection */
typedef enum TTDrainOutcome
{
	TT_REMOTE_RUNNING = 0,		/* its query still runs */
	TT_REMOTE_IDLE,				/* query over and session reset: reusable */
	TT_REMOTE_CLOSE				/* query over unreset, or failed: close it */
} TTDrainOutcome;

extern PGconn *tt_conn_start(const TTConnTarget *target, char **error);
extern void tt_conn_finish(PGconn *conn);
extern char *tt_conn_connect_error(PGconn *conn, bool *transient);
extern PostgresPollingStatusType tt_conn_poll(PGconn *conn);
extern uint32 tt_poll_wait_events(PostgresPollingStatusType status);
extern char *tt_conn_error_message(PGconn *conn);
extern void tt_remote_error_from_result(PGconn *conn, PGresult *res,
										TTRemoteError *err);
extern void tt_remote_error_from_conn(PGconn *conn, const char *sqlstate,
									  TTRemoteError *err);
extern char *tt_remote_error_text(const TTRemoteError *err);
extern void tt_raise_remote_error(int elevel, const TTRemoteError *err,
								  const char *context);

extern int	tt_conn_poll_until(PGconn *conn, TimestampTz deadline,
							   PostgresPollingStatusType *poll);
extern bool tt_conn_is_idle(PGconn *conn);
extern bool tt_conn_check_idle(PGconn *conn);
extern bool tt_conn_in_query(PGconn *conn);
extern int	tt_send_query(PGconn *conn, const char *query, bool single_row);
extern int	tt_send_statement(PGconn *conn, const char *sql, bool single_row);
extern int	tt_flush(PGconn *conn);
extern bool tt_conn_has_input(PGconn *conn);
extern int	tt_discard_results(PGconn *conn);

extern void tt_remote_query_start(TTRemoteQuery *q, PGconn *conn,
								  const char *sql, bool keep_value);
extern void tt_remote_query_advance(TTRemoteQuery *q);
extern char *tt_remote_cancel_sql(const int *pids, int n);
extern int	tt_remote_drain_until(PGconn **conns, int n, bool reset,
								  TimestampTz deadline, uint32 wait_event_info,
								  TTDrainOutcome *outcome);

extern void tt_wait_sockets_raw(int n, pgsocket *socks, uint32 *events,
								bool *ready, long timeout_ms,
								uint32 wait_event_info);
extern bool tt_wait_sockets_until(int n, pgsocket *socks, uint32 *events,
								  TimestampTz deadline, uint32 wait_event_info);

#endif							/* TT_REMOTE_H */
