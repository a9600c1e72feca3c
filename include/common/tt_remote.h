/*-------------------------------------------------------------------------
 *
 * tt_remote.h
 *	  The one libpq layer of task_tracker: starting non-blocking
 *	  connections from keyword/value arrays, closing them, and turning
 *	  remote errors into data or into ereports.
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
} TTConnTarget;

/* A remote error kept as data (copied out of a PGresult / PGconn). */
typedef struct TTRemoteError
{
	char		sqlstate[6];	/* five characters and a NUL */
	char	   *message;		/* primary message, never NULL */
	char	   *detail;			/* or NULL */
	char	   *hint;			/* or NULL */
} TTRemoteError;

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

extern int	tt_discard_results(PGconn *conn);

extern void tt_wait_sockets_raw(int n, pgsocket *socks, uint32 *events,
								bool *ready, long timeout_ms,
								uint32 wait_event_info);

#endif							/* TT_REMOTE_H */
