/*-------------------------------------------------------------------------
 *
 * remote.c
 *	  The libpq module, shared by the tracker and the coordinator: every
 *	  exchange with a server goes through here.  Non-blocking connection
 *	  start-up with a deadline and closing, sending and flushing, running
 *	  a query of our own to its end (TTRemoteQuery), the cancel query,
 *	  draining canceled queries and resetting their sessions with a
 *	  deadline, remote errors (postgres_fdw's mapping), and the one wait.
 *	  What is done with the rows (result files, result tuples) belongs to
 *	  the callers; which connection is lent to whom belongs to the
 *	  coordinator's connection cache.
 *
 * Design
 *	  Connections are always started with PQconnectStartParams() from
 *	  keyword/value arrays: user and database names travel as values and
 *	  can never inject connection options, whatever characters they hold.
 *	  Connections to another node also get the options of
 *	  the caller's extra options (citus.node_conninfo, src/common/conn_auth.c), after the product's own.
 *	  Each connection holds one external file descriptor reservation from
 *	  fd.c (AcquireExternalFD) from tt_conn_start() until tt_conn_finish().
 *	  Every connection gets a notice receiver, so libpq never writes to the
 *	  server's stderr; notices are logged at DEBUG1.
 *
 *	  Nothing here blocks: sockets are non-blocking once connected, a
 *	  query is cancelled with pg_cancel_backend() over another connection
 *	  (tt_remote_cancel_sql) because libpq 15's PQcancel() blocks without
 *	  a timeout, and every wait ends at the caller's deadline.  A remote
 *	  error keeps its SQLSTATE and CONTEXT; one without a SQLSTATE is a
 *	  connection failure, 08006 (tt_remote_error_from_result).
 *
 *	  The one wait of the product is here too: tt_wait_sockets_raw(), a
 *	  WaitEventSet over the latch, postmaster death and the caller's
 *	  sockets, kept from one call to the next while the sockets stay the
 *	  same.  Callers drive tt_conn_poll() (PQconnectPoll) from it, using
 *	  tt_poll_wait_events() to know which socket event to wait for.
 *
 * Locking
 *	  None: everything here is process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <sys/socket.h>

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/tt_remote.h"
#include "common/tt_waits.h"

static void tt_notice_receiver(void *arg, const PGresult *res);
static char *copy_error_message(PGconn *conn);
static void take_sqlstate(char *msg, char *sqlstate);

/* bumped whenever a libpq socket may have been opened or closed */
static uint64 socket_generation = 1;

/*
 * tt_conn_start
 *		Start a non-blocking connection to target.
 *
 * Returns the connection, which may already be in CONNECTION_BAD state
 * (the caller learns that from PQconnectPoll / PQstatus and then calls
 * tt_conn_finish()).  Returns NULL, with *error set to a palloc'd message,
 * when no file descriptor or memory could be had; nothing is left open then.
 * Never throws, so the tracker's loop can call it freely.
 */
PGconn *
tt_conn_start(const TTConnTarget *target, char **error)
{
	const char *keywords[40];
	const char *values[40];
	char		portstr[16];
	int			n = 0;
	PGconn	   *conn;

	*error = NULL;
	snprintf(portstr, sizeof(portstr), "%d", target->port);

	keywords[n] = "host";
	values[n++] = target->host;
	if (target->hostaddr)
	{
		/* no name lookup in libpq, which would block (see node_registry.c) */
		keywords[n] = "hostaddr";
		values[n++] = target->hostaddr;
	}
	keywords[n] = "port";
	values[n++] = portstr;
	keywords[n] = "user";
	values[n++] = target->user;
	keywords[n] = "dbname";
	values[n++] = target->dbname;
	keywords[n] = "fallback_application_name";
	values[n++] = target->application_name ? target->application_name : "task_tracker";
	if (target->client_encoding)
	{
		keywords[n] = "client_encoding";
		values[n++] = target->client_encoding;
	}
	for (int i = 0; i < target->noptions && n < lengthof(keywords) - 1; i++)
	{
		keywords[n] = target->option_keywords[i];
		values[n++] = target->option_values[i];
	}
	keywords[n] = NULL;
	values[n] = NULL;

	if (!AcquireExternalFD())
	{
		*error = psprintf("could not connect to %s:%d: out of file descriptors: %m",
						  target->host, target->port);
		return NULL;
	}

	/* expand_dbname = false: dbname is a name, never a connection string */
	socket_generation++;
	conn = PQconnectStartParams(keywords, values, false);
	if (conn == NULL)
	{
		ReleaseExternalFD();
		*error = pstrdup("could not connect: out of memory");
		return NULL;
	}
	PQsetNoticeReceiver(conn, tt_notice_receiver, NULL);
	/* until established, errors carry their SQLSTATE (tt_conn_connect_error) */
	(void) PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
	return conn;
}

/*
 * tt_conn_finish
 *		Close a connection from tt_conn_start() and release its FD slot.
 */
void
tt_conn_finish(PGconn *conn)
{
	if (conn == NULL)
		return;
	socket_generation++;
	PQfinish(conn);
	ReleaseExternalFD();
}

/*
 * tt_conn_poll
 *		PQconnectPoll(), for every connection being established: libpq may
 *		close its socket and open another while it tries the addresses of a
 *		host, so the cached wait set is not reused after it.  An established
 *		connection is put in non-blocking mode here, not at its start:
 *		PQsetnonblocking() clears libpq's error message, which would lose
 *		the 'connection to server ... failed:' part of a failure to come.
 *		(Establishing never blocks: PQconnectPoll works on a non-blocking
 *		socket in either mode.)
 */
PostgresPollingStatusType
tt_conn_poll(PGconn *conn)
{
	PostgresPollingStatusType st;

	socket_generation++;
	st = PQconnectPoll(conn);
	if (st == PGRES_POLLING_OK)
	{
		(void) PQsetnonblocking(conn, 1);
		/* later errors read as libpq's defaults */
		(void) PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
	}
	return st;
}

/*
 * location_prefix
 *		What libpq puts before the source location of an error in verbose
 *		mode, in the language of its messages.
 */
static const char *
location_prefix(void)
{
#ifdef ENABLE_NLS
	return dgettext("libpq5-" PG_MAJORVERSION, "LOCATION:  ");
#else
	return "LOCATION:  ";
#endif
}

/*
 * take_sqlstate
 *		Remove what PQERRORS_VERBOSE adds to the server's error in msg (the
 *		SQLSTATE after the severity, the LOCATION line), so that it reads as
 *		libpq's default text; the SQLSTATE goes to sqlstate (6 bytes), left
 *		as it is when msg has none.
 */
static void
take_sqlstate(char *msg, char *sqlstate)
{
	char	   *p;

	/* the server's error: "SEVERITY:  XXXXX: message" */
	for (p = strstr(msg, ":  "); p != NULL; p = strstr(p + 1, ":  "))
	{
		char	   *code = p + 3;
		int			i;

		for (i = 0; i < 5; i++)
		{
			if (!((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'Z')))
				break;
		}
		if (i == 5 && code[5] == ':' && code[6] == ' ')
		{
			const char *prefix = location_prefix();
			size_t		plen = strlen(prefix);
			char	   *line = NULL;
			char	   *nl;

			memcpy(sqlstate, code, 5);
			memmove(code, code + 7, strlen(code + 7) + 1);

			/* the last LOCATION line after it (its own text comes first) */
			for (nl = strchr(code, '\n'); nl != NULL; nl = strchr(nl + 1, '\n'))
			{
				if (strncmp(nl + 1, prefix, plen) == 0)
					line = nl;
			}
			if (line != NULL)
			{
				char	   *next = strchr(line + 1, '\n');

				if (next != NULL)
					memmove(line, next, strlen(next) + 1);
				else
					*line = '\0';
			}
			break;
		}
	}
}

/*
 * tt_conn_connect_error
 *		The error of a failed connection attempt (palloc'd), and whether it
 *		is transient: the server too busy to take a session
 *		(53300: "sorry, too many clients already", the remaining slots
 *		reserved for superusers, a role's or database's connection limit),
 *		not accepting connections now (57P03), the connection refused
 *		with EAGAIN (a Unix socket's listen queue is full; no local port
 *		free; the postmaster could not fork), or no socket to be had
 *		(EMFILE, ENFILE: this process or the system is out of file
 *		descriptors for now).
 *
 * libpq keeps the SQLSTATE of an error the server sends during start-up to
 * itself; only the text is there, in PQerrorMessage.  Connections are
 * therefore started in PQERRORS_VERBOSE mode (tt_conn_start, until
 * tt_conn_poll sees them established), where the text
 * carries it ("FATAL:  53300: sorry, too many clients already") and ends
 * with a "LOCATION:  ..." line; both are removed again here, so the message
 * kept reads exactly as libpq's default one.  An error libpq makes itself
 * has no SQLSTATE; EAGAIN is recognised by its strerror() text, which libpq
 * gets from the same C library in the same process.  Every other failure —
 * authentication, a missing role or database, NOLOGIN, no CONNECT
 * privilege, a connection refused outright — is not transient.
 */
char *
tt_conn_connect_error(PGconn *conn, bool *transient)
{
	char	   *msg = copy_error_message(conn);
	char		sqlstate[6] = "";

	take_sqlstate(msg, sqlstate);

	if (sqlstate[0] != '\0')
		*transient = (strcmp(sqlstate, "53300") == 0 || strcmp(sqlstate, "57P03") == 0);
	else
		*transient = (strstr(msg, strerror(EAGAIN)) != NULL ||
					  strstr(msg, strerror(EMFILE)) != NULL ||
					  strstr(msg, strerror(ENFILE)) != NULL);
	return msg;
}

/*
 * tt_poll_wait_events
 *		The socket event to wait for after PQconnectPoll() said status.
 */
uint32
tt_poll_wait_events(PostgresPollingStatusType status)
{
	if (status == PGRES_POLLING_WRITING)
		return WL_SOCKET_WRITEABLE;
	return WL_SOCKET_READABLE;
}

/*
 * tt_conn_error_message
 *		PQerrorMessage() copied into the current memory context, without the
 *		trailing newline, never empty; for a connection still being set up
 *		(verbose error mode, see tt_conn_start) without the SQLSTATE and
 *		LOCATION that mode adds.
 */
char *
tt_conn_error_message(PGconn *conn)
{
	char	   *msg = copy_error_message(conn);
	char		sqlstate[6];

	if (conn != NULL)
	{
		PGVerbosity v = PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);

		(void) PQsetErrorVerbosity(conn, v);
		if (v == PQERRORS_VERBOSE)
			take_sqlstate(msg, sqlstate);
	}
	return msg;
}

/* PQerrorMessage() copied, without the trailing newline, never empty */
static char *
copy_error_message(PGconn *conn)
{
	const char *msg = conn ? PQerrorMessage(conn) : NULL;
	char	   *copy;
	int			len;

	if (msg == NULL || msg[0] == '\0')
		return pstrdup("connection failed");
	copy = pstrdup(msg);
	len = strlen(copy);
	while (len > 0 && (copy[len - 1] == '\n' || copy[len - 1] == ' '))
		copy[--len] = '\0';
	return copy;
}

static char *
dup_trimmed(const char *s)
{
	char	   *copy;
	int			len;

	if (s == NULL || s[0] == '\0')
		return NULL;
	copy = pstrdup(s);
	len = strlen(copy);
	while (len > 0 && copy[len - 1] == '\n')
		copy[--len] = '\0';
	return copy;
}

/*
 * tt_remote_error_from_result
 *		Copy the error carried by res (or, lacking one, by conn) into err,
 *		keeping the remote SQLSTATE and CONTEXT.  An error without a
 *		SQLSTATE was made by libpq itself (the connection broke, the server
 *		sent something it could not parse): a connection failure, 08006,
 *		as postgres_fdw reports it.
 */
void
tt_remote_error_from_result(PGconn *conn, PGresult *res, TTRemoteError *err)
{
	const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	memset(err, 0, sizeof(*err));
	strlcpy(err->sqlstate, sqlstate && strlen(sqlstate) == 5 ? sqlstate : "08006",
			sizeof(err->sqlstate));
	err->message = primary ? dup_trimmed(primary) : NULL;
	if (err->message == NULL)
		err->message = tt_conn_error_message(conn);
	if (res)
	{
		err->detail = dup_trimmed(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
		err->hint = dup_trimmed(PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
		err->context = dup_trimmed(PQresultErrorField(res, PG_DIAG_CONTEXT));
	}
}

/*
 * tt_remote_error_from_conn
 *		An error of the connection itself (connect or I/O failure), reported
 *		with the given SQLSTATE (a class 08 code as a rule).
 */
void
tt_remote_error_from_conn(PGconn *conn, const char *sqlstate, TTRemoteError *err)
{
	memset(err, 0, sizeof(*err));
	strlcpy(err->sqlstate, sqlstate, sizeof(err->sqlstate));
	err->message = tt_conn_error_message(conn);
}

/*
 * tt_remote_error_text
 *		The error as one text: message, then DETAIL and HINT lines (the
 *		tracker's error of a task; the remote CONTEXT is left out).
 */
char *
tt_remote_error_text(const TTRemoteError *err)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, err->message);
	if (err->detail)
		appendStringInfo(&buf, "\nDETAIL:  %s", err->detail);
	if (err->hint)
		appendStringInfo(&buf, "\nHINT:  %s", err->hint);
	return buf.data;
}

/*
 * tt_raise_remote_error
 *		ereport a remote error with its own SQLSTATE, message, detail, hint
 *		and context, adding our own context (e.g. which node and task) when
 *		given: postgres_fdw's pgfdw_report_error.
 */
void
tt_raise_remote_error(int elevel, const TTRemoteError *err, const char *context)
{
	const char *s = err->sqlstate;
	int			code = MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);

	ereport(elevel,
			(errcode(code),
			 errmsg_internal("%s", err->message),
			 err->detail ? errdetail_internal("%s", err->detail) : 0,
			 err->hint ? errhint("%s", err->hint) : 0,
			 err->context ? errcontext("%s", err->context) : 0,
			 context ? errcontext("%s", context) : 0));
}

/*
 * Notices from remote sessions (RAISE NOTICE in a task, say) must never
 * reach stderr; keep them for whoever runs with DEBUG1.
 */
static void
tt_notice_receiver(void *arg, const PGresult *res)
{
	const char *msg = PQresultErrorMessage(res);

	elog(DEBUG1, "task_tracker: remote notice: %s", msg ? msg : "");
}

/*
 * tt_discard_results
 *		Read and throw away what conn's query in flight sends, without
 *		waiting: its results, and COPY data if it is a COPY TO STDOUT (whose
 *		results PQgetResult would otherwise return again and again).
 *
 * Returns 1 when the query is over (the connection is idle again), 0 when
 * more input is needed (wait until the socket is readable), -1 when the
 * connection cannot be used any more (broken, or a COPY FROM STDIN or
 * replication stream we will not feed).  Never throws.
 */
int
tt_discard_results(PGconn *conn)
{
	if (!PQconsumeInput(conn))
		return -1;
	for (;;)
	{
		PGresult   *res;
		ExecStatusType status;

		if (PQisBusy(conn))
			return PQstatus(conn) == CONNECTION_BAD ? -1 : 0;
		res = PQgetResult(conn);
		if (res == NULL)
			return PQstatus(conn) == CONNECTION_BAD ? -1 : 1;
		status = PQresultStatus(res);
		PQclear(res);
		if (status == PGRES_COPY_OUT)
		{
			for (;;)
			{
				char	   *buf = NULL;
				int			len = PQgetCopyData(conn, &buf, 1);

				if (len > 0)
				{
					PQfreemem(buf);
					continue;
				}
				if (len == 0)
					return 0;
				if (len == -2)
					return -1;
				break;			/* the COPY's own result follows */
			}
		}
		else if (status == PGRES_COPY_IN || status == PGRES_COPY_BOTH)
			return -1;
	}
}

/* send sql (one statement, extended protocol, when extended) and flush */
static int
send_and_flush(PGconn *conn, const char *sql, bool extended, bool single_row)
{
	if (extended ? !PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0) :
		!PQsendQuery(conn, sql))
		return -1;
	if (single_row)
		(void) PQsetSingleRowMode(conn);
	return tt_flush(conn);
}

/*
 * tt_send_query
 *		Send query (simple protocol: it may hold several statements)
 *		without blocking, in single-row mode when single_row is true.
 *		Returns 0 when all of it went out, 1 when the rest must be flushed
 *		once the socket is writable (tt_flush), -1 when the connection
 *		failed.
 */
int
tt_send_query(PGconn *conn, const char *query, bool single_row)
{
	return send_and_flush(conn, query, false, single_row);
}

/*
 * tt_send_statement
 *		tt_send_query() for exactly one statement, sent with the extended
 *		protocol (PQsendQueryParams without parameters), where the server
 *		refuses a text of several statements: the tracker's task queries.
 */
int
tt_send_statement(PGconn *conn, const char *sql, bool single_row)
{
	return send_and_flush(conn, sql, true, single_row);
}

int
tt_flush(PGconn *conn)
{
	int			r = PQflush(conn);

	return r < 0 ? -1 : r;
}

/*
 * tt_conn_has_input
 *		Has the server sent anything on conn that libpq has not read yet
 *		(data, EOF or a socket error)?  Peeks at the socket without reading
 *		or waiting.  The executors call it before they read, to tell a node
 *		that is silent from one that answers (see the liveness checks of
 *		the two executors).  Never throws.
 */
bool
tt_conn_has_input(PGconn *conn)
{
	pgsocket	sock;
	char		c;
	ssize_t		r;

	if (conn == NULL)
		return false;
	sock = PQsocket(conn);
	if (sock == PGINVALID_SOCKET)
		return false;
	r = recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r >= 0)
		return true;			/* data, or EOF */
	return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/*
 * tt_conn_poll_until
 *		Advance a connection being established (tt_conn_poll) and give up on
 *		it at deadline.  *poll gets the last PQconnectPoll() result.
 *
 * Returns 0 once connected, -1 when the attempt failed or ran out of time
 * (the connection is then of no use: close it), else the WL_SOCKET_* event
 * to wait for before the next call.  Never throws.
 */
int
tt_conn_poll_until(PGconn *conn, TimestampTz deadline,
				   PostgresPollingStatusType *poll)
{
	if (PQstatus(conn) == CONNECTION_BAD)
		return -1;
	*poll = tt_conn_poll(conn);
	switch (*poll)
	{
		case PGRES_POLLING_OK:
			return 0;
		case PGRES_POLLING_FAILED:
			return -1;
		default:
			if (GetCurrentTimestamp() >= deadline)
				return -1;
			return tt_poll_wait_events(*poll);
	}
}

/*
 * tt_conn_is_idle
 *		Is conn connected, outside any transaction and running nothing (a
 *		state in which it can be lent again)?  Reads nothing.
 */
bool
tt_conn_is_idle(PGconn *conn)
{
	return PQstatus(conn) == CONNECTION_OK &&
		PQtransactionStatus(conn) == PQTRANS_IDLE && !PQisBusy(conn);
}

/*
 * tt_conn_check_idle
 *		tt_conn_is_idle() for a connection that sat unused: first reads what
 *		the server may have sent meanwhile, to notice one that went away
 *		(its terminate message or EOF).  Never throws.
 */
bool
tt_conn_check_idle(PGconn *conn)
{
	if (PQstatus(conn) != CONNECTION_OK)
		return false;
	if (!PQconsumeInput(conn))
		return false;
	return tt_conn_is_idle(conn);
}

/*
 * tt_conn_in_query
 *		Is conn running a query whose backend we can name (to cancel it)?
 */
bool
tt_conn_in_query(PGconn *conn)
{
	return conn != NULL && PQstatus(conn) == CONNECTION_OK &&
		PQtransactionStatus(conn) == PQTRANS_ACTIVE && PQbackendPID(conn) > 0;
}

/* the connection of q failed: it is over, and err says why */
static void
query_broken(TTRemoteQuery *q)
{
	q->done = true;
	q->ok = false;
	q->broken = true;
	tt_remote_error_from_conn(q->conn, "08006", &q->err);
}

/*
 * tt_remote_query_start
 *		Prepare q to run sql (simple protocol, may hold several statements)
 *		on conn, an established connection running nothing, or one still
 *		being established by the caller (who then calls
 *		tt_remote_query_advance only once it is connected).  sql must live
 *		until q is done.  When keep_value is true, q->value gets the value
 *		of a one-row, one-column result, or else the command tag, of the
 *		last statement.
 */
void
tt_remote_query_start(TTRemoteQuery *q, PGconn *conn, const char *sql,
					  bool keep_value)
{
	memset(q, 0, sizeof(*q));
	q->conn = conn;
	q->sql = sql;
	q->keep_value = keep_value;
	q->sock = PGINVALID_SOCKET;
}

/*
 * tt_remote_query_advance
 *		Move q forward without waiting: send, flush, read the results.
 *		When q is not done afterwards, q->sock and q->events tell what to
 *		wait for.  Once done, q->ok tells whether every statement
 *		succeeded; else q->err holds why: the first error result, or the
 *		connection's error (08006, q->broken set) when the connection
 *		failed before the query ended.  With q->keep_result set, q->result
 *		holds the last row-returning result (the caller clears it).  A COPY
 *		is refused (q->copy, and the connection is broken for our
 *		purposes).  Never throws but on out-of-memory.
 */
void
tt_remote_query_advance(TTRemoteQuery *q)
{
	PGconn	   *conn = q->conn;

	if (q->done)
		return;
	q->sock = PQsocket(conn);
	if (!q->sent)
	{
		q->sent = true;
		if (!PQsendQuery(conn, q->sql))
		{
			query_broken(q);
			return;
		}
		q->flushing = true;
	}
	if (q->flushing)
	{
		int			r = tt_flush(conn);

		if (r < 0)
		{
			query_broken(q);
			return;
		}
		q->flushing = (r == 1);
	}
	if (!PQconsumeInput(conn))
	{
		query_broken(q);
		return;
	}
	while (!PQisBusy(conn))
	{
		PGresult   *res = PQgetResult(conn);

		if (res == NULL)
		{
			if (PQstatus(conn) != CONNECTION_OK && !q->failed)
				query_broken(q);
			q->done = true;
			q->broken = (PQstatus(conn) != CONNECTION_OK);
			q->ok = !q->failed && !q->broken;
			return;
		}
		switch (PQresultStatus(res))
		{
			case PGRES_TUPLES_OK:
				if (q->failed)
					break;
				if (q->keep_value && PQntuples(res) == 1 && PQnfields(res) == 1)
					q->value = PQgetisnull(res, 0, 0) ? NULL : pstrdup(PQgetvalue(res, 0, 0));
				else if (q->keep_value)
					q->value = pstrdup(PQcmdStatus(res));
				if (q->keep_result)
				{
					if (q->result)
						PQclear(q->result);
					q->result = res;
					res = NULL;	/* kept */
				}
				break;
			case PGRES_COMMAND_OK:
			case PGRES_EMPTY_QUERY:
				if (!q->failed && q->keep_value)
					q->value = pstrdup(PQcmdStatus(res));
				break;
			case PGRES_COPY_IN:
			case PGRES_COPY_OUT:
			case PGRES_COPY_BOTH:
				PQclear(res);
				q->copy = true;
				q->done = true;
				q->ok = false;
				q->broken = true;
				return;
			default:
				if (!q->failed)
				{
					elog(DEBUG1, "task_tracker: query on %s:%s failed: %s",
						 PQhost(conn), PQport(conn), PQresultErrorMessage(res));
					tt_remote_error_from_result(conn, res, &q->err);
				}
				q->failed = true;
				break;
		}
		PQclear(res);
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		query_broken(q);
		return;
	}
	q->events = WL_SOCKET_READABLE | (q->flushing ? WL_SOCKET_WRITEABLE : 0);
}

/*
 * tt_remote_cancel_sql
 *		The query that cancels what the n backends pids[] of one node run,
 *		sent over another connection to that node as the same role (a role
 *		may cancel its own backends): libpq 15's PQcancel() blocks with no
 *		timeout, so it is never used.  palloc'd.
 */
char *
tt_remote_cancel_sql(const int *pids, int n)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_catalog.unnest('{");
	for (int i = 0; i < n; i++)
		appendStringInfo(&sql, "%s%d", i > 0 ? "," : "", pids[i]);
	appendStringInfoString(&sql, "}'::pg_catalog.int4[]) AS pid");
	return sql.data;
}

/*
 * tt_remote_drain_until
 *		Read what the n connections conns[] send until their (canceled)
 *		query has ended, all of them at once, until deadline.  When reset is
 *		true, a connection whose query ended and that is idle outside a
 *		transaction (the cancel's error was read: its state is known) gets
 *		DISCARD ALL, since the canceled query may have left session state
 *		behind, and counts as reusable once that is done.
 *
 * outcome[i] says what became of conns[i]: TT_REMOTE_IDLE (reset, can be
 * kept), TT_REMOTE_CLOSE (query over without a reset, or the connection
 * failed: close it), TT_REMOTE_RUNNING (its query still runs).  Returns how
 * many are still running.  Never throws but on out-of-memory; never blocks,
 * and the wait is safe with interrupts held.
 */
int
tt_remote_drain_until(PGconn **conns, int n, bool reset, TimestampTz deadline,
					  uint32 wait_event_info, TTDrainOutcome *outcome)
{
	pgsocket   *socks;
	uint32	   *events;
	bool	   *resetting;
	int			left = 0;
	int			i;

	socks = palloc(sizeof(pgsocket) * Max(n, 1));
	events = palloc(sizeof(uint32) * Max(n, 1));
	resetting = palloc0(sizeof(bool) * Max(n, 1));
	for (i = 0; i < n; i++)
		outcome[i] = TT_REMOTE_RUNNING;
	for (;;)
	{
		int			nsocks = 0;

		for (i = 0; i < n; i++)
		{
			PGconn	   *conn = conns[i];
			bool		ended = false;
			bool		failed = false;

			if (outcome[i] != TT_REMOTE_RUNNING)
				continue;
			if (PQstatus(conn) != CONNECTION_OK)
			{
				outcome[i] = TT_REMOTE_CLOSE;
				continue;
			}
			if (resetting[i])
			{
				/* DISCARD ALL in flight */
				if (!PQconsumeInput(conn))
					failed = true;
				while (!failed && !PQisBusy(conn))
				{
					PGresult   *res = PQgetResult(conn);

					if (res == NULL)
					{
						ended = true;
						break;
					}
					if (PQresultStatus(res) != PGRES_COMMAND_OK)
						failed = true;
					PQclear(res);
				}
			}
			else
			{
				int			r = tt_discard_results(conn);

				ended = (r == 1);
				failed = (r < 0);
			}
			if (ended && reset && !resetting[i] && !failed &&
				PQstatus(conn) == CONNECTION_OK &&
				PQtransactionStatus(conn) == PQTRANS_IDLE)
			{
				/* the canceled query is over: reset the session */
				resetting[i] = true;
				if (PQsendQuery(conn, "DISCARD ALL") && PQflush(conn) == 0)
				{
					socks[nsocks] = PQsocket(conn);
					events[nsocks++] = WL_SOCKET_READABLE;
					continue;
				}
				failed = true;
			}
			if (ended || failed || PQstatus(conn) != CONNECTION_OK)
			{
				outcome[i] = (ended && reset && resetting[i] && !failed) ?
					TT_REMOTE_IDLE : TT_REMOTE_CLOSE;
				continue;
			}
			socks[nsocks] = PQsocket(conn);
			events[nsocks++] = WL_SOCKET_READABLE;
		}
		if (!tt_wait_sockets_until(nsocks, socks, events, deadline, wait_event_info))
			break;
	}
	for (i = 0; i < n; i++)
	{
		if (outcome[i] != TT_REMOTE_RUNNING)
			continue;
		if (resetting[i])
			outcome[i] = TT_REMOTE_CLOSE;	/* query over, but not the reset */
		else
			left++;
	}
	pfree(socks);
	pfree(events);
	pfree(resetting);
	return left;
}

/*
 * The wait set of the last tt_wait_sockets_raw call, kept for the next one.
 *
 * Building a WaitEventSet costs an epoll instance and one epoll_ctl per
 * socket, more than the wait itself when the remote answers at once.  The
 * set is reused while the caller passes the same sockets in the same order
 * (changed events are applied with ModifyWaitEvent).  Socket numbers alone
 * cannot tell that a socket is still the one registered: a closed socket
 * leaves the epoll set by itself, and a new one may get its number.  So
 * every step that can open or close a libpq socket (tt_conn_start,
 * tt_conn_poll, tt_conn_finish) bumps socket_generation, and a set built
 * under an older generation is not reused.  (libpq also closes a socket by
 * itself when the server goes away; PQsocket() then answers -1, which
 * callers leave out, so the list differs and the set is rebuilt.)
 */
typedef struct CachedWaitSet
{
	WaitEventSet *set;			/* the set, or NULL */
	uint64		generation;		/* socket_generation when it was built */
	int			n;				/* sockets in it (positions 2 .. n+1) */
	int			size;			/* allocated length of socks/events */
	pgsocket   *socks;			/* its sockets */
	uint32	   *events;			/* their current events */
	WaitEvent  *occurred;		/* output array, size + 2 long */
} CachedWaitSet;

static CachedWaitSet wait_cache;

/*
 * wait_set_for
 *		The wait set for these sockets and events: the cached one when it
 *		still fits, else a new one (which replaces it).
 */
static WaitEventSet *
wait_set_for(int n, pgsocket *socks, uint32 *events)
{
	CachedWaitSet *c = &wait_cache;

	if (c->set != NULL && c->generation == socket_generation && c->n == n &&
		memcmp(c->socks, socks, sizeof(pgsocket) * n) == 0)
	{
		for (int i = 0; i < n; i++)
		{
			if (c->events[i] != events[i])
			{
				ModifyWaitEvent(c->set, i + 2, events[i], NULL);
				c->events[i] = events[i];
			}
		}
		return c->set;
	}

	if (c->set != NULL)
	{
		FreeWaitEventSet(c->set);
		c->set = NULL;
	}
	if (c->size == 0 || n > c->size)
	{
		int			size = Max(n, 8);

		if (c->size > 0)
		{
			pfree(c->socks);
			pfree(c->events);
			pfree(c->occurred);
		}
		c->socks = MemoryContextAlloc(TopMemoryContext, sizeof(pgsocket) * size);
		c->events = MemoryContextAlloc(TopMemoryContext, sizeof(uint32) * size);
		c->occurred = MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * (size + 2));
		c->size = size;
	}

	c->set = CreateWaitEventSet(TopMemoryContext, n + 2);
	c->n = n;
	c->generation = socket_generation;
	PG_TRY();
	{
		AddWaitEventToSet(c->set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(c->set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (int i = 0; i < n; i++)
		{
			AddWaitEventToSet(c->set, events[i], socks[i], NULL, NULL);
			c->socks[i] = socks[i];
			c->events[i] = events[i];
		}
	}
	PG_CATCH();
	{
		FreeWaitEventSet(c->set);
		c->set = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	return c->set;
}

/*
 * tt_wait_sockets_raw
 *		The one wait of task_tracker, used by the tracker and the
 *		coordinator alike: a WaitEventSet over the latch, postmaster death
 *		and the n sockets (for events[i]), for at most timeout_ms (-1: no
 *		limit); the latch is reset afterwards.  When ready is not NULL,
 *		ready[i] tells whether socks[i] fired.  Does not process interrupts:
 *		callers that may be interrupted follow it with CHECK_FOR_INTERRUPTS
 *		(tt_wait_sockets), cleanup paths hold them.  The set is kept for the
 *		next call with the same sockets (see CachedWaitSet); a wait that
 *		throws drops it.
 */
void
tt_wait_sockets_raw(int n, pgsocket *socks, uint32 *events, bool *ready,
					long timeout_ms, uint32 wait_event_info)
{
	WaitEventSet *set;
	int			nfired;

	if (ready)
		memset(ready, 0, sizeof(bool) * n);
	set = wait_set_for(n, socks, events);
	PG_TRY();
	{
		nfired = WaitEventSetWait(set, timeout_ms, wait_cache.occurred, n + 2,
								  wait_event_info);
	}
	PG_CATCH();
	{
		FreeWaitEventSet(wait_cache.set);
		wait_cache.set = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	for (int i = 0; ready && i < nfired; i++)
	{
		int			pos = wait_cache.occurred[i].pos;

		if (pos >= 2)
			ready[pos - 2] = true;
	}
	ResetLatch(MyLatch);
}

/*
 * tt_wait_sockets_until
 *		tt_wait_sockets_raw() on n sockets for at most until deadline, for
 *		the loops that drive several connections to a deadline.  Returns
 *		false, without waiting, when there is nothing to wait for (n is 0)
 *		or the deadline has passed.
 */
bool
tt_wait_sockets_until(int n, pgsocket *socks, uint32 *events,
					  TimestampTz deadline, uint32 wait_event_info)
{
	long		timeout;

	if (n == 0)
		return false;
	timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
	if (timeout <= 0)
		return false;
	tt_wait_sockets_raw(n, socks, events, NULL, timeout, wait_event_info);
	return true;
}
