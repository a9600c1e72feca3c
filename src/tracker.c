/*-------------------------------------------------------------------------
 *
 * tracker.c
 *	  The task tracker background worker: runs queued tasks over libpq
 *	  sessions logged in as their owners, never sleeping a fixed time.
 *
 * Design
 *	  One process per server.  Its only wait is one WaitEventSet over its
 *	  latch, postmaster death and the socket of every session it holds;
 *	  the timeout is the nearest real deadline (a connection attempt's
 *	  wall-clock limit, a refused task's time to connect again, an idle
 *	  session's expiry, a job's expiry, or the housekeeping pass while it
 *	  has work).  With no tasks to run and no sessions open, it waits with
 *	  no timeout at all.
 *
 *	  Backends queue tasks (worker_api.c) and set the tracker's latch.  The
 *	  tracker pops tasks, oldest first, while fewer than
 *	  citus.max_running_tasks_per_node run; each runs on a session of its
 *	  owner in its database: an idle one kept from an earlier task of the
 *	  same (user, database), reset with DISCARD ALL after that task, or a
 *	  new one started with PQconnectStartParams.  A query that returns rows
 *	  and can run as COPY (assign_task decided, see worker_api.c) is sent
 *	  as COPY (<query>) TO STDOUT and the COPY data, already in the stored
 *	  format, is appended to the result as it arrives (PQgetCopyData in
 *	  async mode); any other query is sent in single-row mode and the
 *	  values of its rows are escaped the same way (src/result_file.c).  A
 *	  COPY that the server refuses before any data (SQLSTATE 0A000, e.g.
 *	  INSERT ... RETURNING into a table with a DO ALSO rule) is sent again
 *	  as the plain query, in the same attempt.  When the result is complete
 *	  the task becomes succeeded, or failed (queued again) or
 *	  permanently_failed once citus.task_max_attempts attempts failed, and
 *	  the tracker wakes that job's waiters (tt_job_wake_pending).
 *
 *	  Session states:   CONNECTING -> BUSY -> RESETTING -> IDLE -> BUSY ...
 *	  (any failure, a cancel, or a session left inside a transaction block
 *	  closes it).  Task states: see tt_shmem.h and docs/architecture.md.
 *
 *	  A connection refused for a transient reason (no slot left, 53300; not
 *	  accepting connections now, 57P03; a full listen queue, EAGAIN: see
 *	  connect_error) does not end the task's attempt: the task keeps its
 *	  slot without a session and connects again after a back-off, a
 *	  deadline of the one wait, for up to citus.node_connection_timeout
 *	  after the first refusal; a refusal after that fails the attempt.
 *
 *	  cleanup_job() marks running tasks cancel_requested; the tracker then
 *	  cancels the statement (SIGINT to the task's backend, what
 *	  pg_cancel_backend does) and the task ends canceled when its error
 *	  arrives, keeping the session; a backend that has not read the
 *	  statement yet ignores a cancel, so a statement still running
 *	  TT_CANCEL_GRACE_MS later is terminated (SIGTERM, session closed).
 *	  Partial files and, for a job being dropped, the entries and the
 *	  job's directory are removed.
 *
 *	  pg_ctl stop: on SIGTERM the tracker terminates the statements of its
 *	  running tasks and reads, for up to TT_STOP_GRACE_MS, how each ended:
 *	  completed ones are succeeded, stopped ones go back to the queue
 *	  (their attempt stays counted); then it saves the table (persist.c).
 *	  A smart shutdown waits for client sessions, including the tracker's
 *	  own, before SIGTERM comes; the housekeeping pass notices the
 *	  postmaster's "stopping" status in postmaster.pid and does the same,
 *	  so the stop can proceed.
 *
 * Locking
 *	  TTShared->lock is taken briefly to pick tasks, to record progress and
 *	  to finish tasks; never across a libpq call or a result-file write.
 *	  Everything else here is private to the tracker process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "common/pg_prng.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pidfile.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "mb/pg_wchar.h"

#include "task_tracker.h"
#include "tt_persist.h"
#include "tt_copy_text.h"
#include "tt_remote.h"
#include "tt_result_file.h"
#include "tt_shmem.h"
#include "tt_waits.h"

PGDLLEXPORT void tt_tracker_main(Datum main_arg);

/* how long a canceled statement may take to stop before it is terminated */
#define TT_CANCEL_GRACE_MS	50

/* how long a stopping tracker waits for its stopped tasks' outcome */
#define TT_STOP_GRACE_MS	2000

/* reads of a streaming result per wake-up (each up to libpq's buffer) */
#define TT_DRAIN_ROUNDS		64

/*
 * Back-off between connection tries refused for a transient reason (see
 * connect_error): it doubles from the first to the second bound; each wait
 * is between half of it and all of it, at random.
 */
#define TT_RECONNECT_MIN_MS	10
#define TT_RECONNECT_MAX_MS	500

typedef enum SessionState
{
	SESSION_CONNECTING,			/* PQconnectPoll in progress */
	SESSION_BUSY,				/* running a task's query */
	SESSION_RESETTING,			/* DISCARD ALL in flight */
	SESSION_IDLE				/* ready for a task of the same user+db */
} SessionState;

struct RunningTask;

/* One libpq session of the tracker. */
typedef struct Session
{
	dlist_node	node;			/* link in sessions */
	PGconn	   *conn;			/* the connection */
	SessionState state;			/* see above */
	NameData	user;			/* role it is logged in as */
	NameData	database;		/* database it is connected to */
	uint32		events;			/* socket events to wait for */
	bool		ready;			/* an awaited event fired */
	TimestampTz deadline;		/* connect limit, or idle expiry; 0 = none */
	struct RunningTask *task;	/* task it runs (CONNECTING/BUSY) */
} Session;

/* A task this tracker has picked and not finished. */
typedef struct RunningTask
{
	dlist_node	node;			/* link in running */
	TTTaskKey	key;			/* the shared entry's key */
	Oid			owner;			/* owner, for the result file name */
	NameData	user;			/* owner's name, to log in as */
	NameData	database;		/* database to connect to */
	int			encoding;		/* its database's encoding */
	char	   *query;			/* copy of the query until it is sent (as
								 * COPY: until the task ends) */
	int32		copy_len;		/* run query[0..copy_len) as COPY, 0: plain */
	bool		copy_out;		/* the COPY's data has begun */
	bool		copying;		/* ... and not ended yet */
	bool		resend_plain;	/* the COPY was refused: run the plain query */
	uint64		received;		/* COPY rows and results read so far */
	Session    *session;		/* session running it, or NULL */
	TTResultWriter writer;		/* its result file */
	bool		opened;			/* writer has a file */
	bool		failed;			/* an error was recorded for this attempt */
	bool		unusable;		/* the session must be closed afterwards */
	bool		cancel_sent;	/* SIGINT sent; session deadline = escalation */
	int64		rows;			/* rows affected by a row-less statement */
	TimestampTz retry_at;		/* no session: connect again then; 0 = not
								 * waiting */
	TimestampTz refused_until;	/* transient refusals are retried until
								 * then; 0 = none so far in this attempt */
	int			backoff_ms;		/* current back-off, see TT_RECONNECT_* */
	int			refusals;		/* transient refusals in this attempt */
} RunningTask;

static dlist_head sessions = DLIST_STATIC_INIT(sessions);
static dlist_head running = DLIST_STATIC_INIT(running);
static int	nsessions = 0;
static int	nrunning = 0;
static bool stopping = false;	/* stopping (begin_stopping ran) */
static bool stop_pending = false;	/* a session saw the server stop */
#define SERVER_STOPPING()	(stopping || stop_pending)
static bool completed = false;	/* tasks finished this pass: broadcast */
static TimestampTz next_housekeeping = 0;
static TimestampTz next_expiry_check = 0;
static List *detached_dirs = NIL;	/* job dirs to remove after the lock */
static TimestampTz stop_deadline = 0;	/* while stopping: give up waiting */
static MemoryContext tracker_cxt = NULL;
static MemoryContext pass_cxt = NULL;
static char *connect_host = NULL;

static void tracker_exit(int code, Datum arg);
static void main_loop(void) pg_attribute_noreturn();
static void wait_for_events(long max_timeout);
static void process_sessions(TimestampTz now);
static void schedule_tasks(TimestampTz now);
static void handle_cancels(void);
static void housekeeping(TimestampTz now);
static void shutdown_and_exit(void) pg_attribute_noreturn();
static void begin_stopping(TimestampTz now);
static void terminate_backend(Session *s);
static void recover_orphans(void);
static void requeue_or_cancel(TTTask *task);
static void remove_detached_dirs(void);
static void start_task(RunningTask *rt, TimestampTz now);
static void retry_connects(TimestampTz now);
static void send_query(RunningTask *rt);
static char *connect_error(PGconn *conn, bool *transient);
static void connect_failed(RunningTask *rt, const char *message, bool transient);
static void fail_attempt(RunningTask *rt, const char *sqlstate, const char *message);
static void finish_task(RunningTask *rt);
static void close_session(Session *s);
static void release_session(Session *s, bool usable);
static void requeue_all_running(bool cancel_backends);
static void compute_connect_host(void);
static bool postmaster_is_stopping(void);

/*
 * tt_tracker_main
 *		Entry point of the task tracker background worker.
 */
void
tt_tracker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	tracker_cxt = AllocSetContextCreate(TopMemoryContext, "task tracker",
										ALLOCSET_DEFAULT_SIZES);
	pass_cxt = AllocSetContextCreate(tracker_cxt, "task tracker pass",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(tracker_cxt);
	compute_connect_host();

	before_shmem_exit(tracker_exit, 0);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	tt_shared->tracker_pid = MyProcPid;
	tt_shared->tracker_latch = MyLatch;
	LWLockRelease(tt_shared->lock);

	if (!tt_shared->ready)
		tt_persist_restore();
	else
		recover_orphans();

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	tt_shared->ready = true;
	LWLockRelease(tt_shared->lock);
	tt_ready_wake();

	ereport(LOG, (errmsg("task tracker started")));
	/* the first pass must not wait: restored tasks may be queued */
	SetLatch(MyLatch);
	main_loop();
}

/*
 * tracker_exit
 *		before_shmem_exit callback: forget our latch, close sessions.
 */
static void
tracker_exit(int code, Datum arg)
{
	dlist_mutable_iter iter;

	/* exiting on an error may leave the table lock held: let it go first */
	LWLockReleaseAll();

	dlist_foreach_modify(iter, &sessions)
		close_session(dlist_container(Session, node, iter.cur));

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	tt_shared->tracker_pid = 0;
	tt_shared->tracker_latch = NULL;
	LWLockRelease(tt_shared->lock);
	tt_stats_set_connections(0);
}

/*
 * requeue_or_cancel
 *		An active task that lost its session goes back to the queue (its
 *		attempt stays counted), unless its cancel was requested: then it is
 *		canceled.  Caller holds the lock exclusively.
 */
static void
requeue_or_cancel(TTTask *task)
{
	TTJob	   *job = tt_job_lookup(task->key.job_id, false, InvalidOid);

	if (task->status == TT_CANCEL_REQUESTED)
		tt_task_set_status(job, task, TT_CANCELED);
	else
	{
		tt_task_set_status(job, task, TT_ASSIGNED);
		tt_task_enqueue(task);
	}
}

/*
 * recover_orphans
 *		The tracker restarted on intact shared memory (it exited after an
 *		error, or was terminated): its sessions are gone, so tasks it was
 *		running go back to the queue, cancel requests complete, and a state
 *		file (or the marker of a failed save) left by that exit is stale.
 */
static void
recover_orphans(void)
{
	HASH_SEQ_STATUS seq;
	TTTask	   *task;

	tt_persist_discard();

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, tt_task_hash);
	while ((task = hash_seq_search(&seq)) != NULL)
	{
		if (TT_STATUS_IS_ACTIVE(task->status))
			requeue_or_cancel(task);
	}
	LWLockRelease(tt_shared->lock);
	/* dropping jobs have no active task left: finish them */
	handle_cancels();
}

static void
main_loop(void)
{
	for (;;)
	{
		TimestampTz now;

		MemoryContextReset(pass_cxt);
		MemoryContextSwitchTo(pass_cxt);

		wait_for_events(-1);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			compute_connect_host();
			/* citus.task_tracker_job_expiry may have changed: recompute */
			next_expiry_check = GetCurrentTimestamp();
		}
		if (ShutdownRequestPending)
			shutdown_and_exit();

		now = GetCurrentTimestamp();
		tt_stats_wakeup(now);

		process_sessions(now);
		if (tt_shared->ncancel > 0 || tt_shared->ndropping > 0)
			handle_cancels();
		if (stop_pending)
			begin_stopping(now);
		if (!SERVER_STOPPING())
		{
			retry_connects(now);
			schedule_tasks(now);
		}
		if (now >= next_housekeeping || (next_expiry_check != 0 && now >= next_expiry_check))
			housekeeping(now);

		if (completed)
		{
			completed = false;
			tt_job_wake_pending();
		}
	}
}

/*
 * nearest_deadline
 *		Milliseconds until the nearest deadline, or -1 for none.
 */
static long
nearest_deadline(void)
{
	TimestampTz nearest = 0;
	dlist_iter	iter;
	bool		busy = (nrunning > 0 || nsessions > 0);

	/* housekeeping only while there is work or an open session */
	if (busy)
		nearest = next_housekeeping;
	if (next_expiry_check != 0 && (nearest == 0 || next_expiry_check < nearest))
		nearest = next_expiry_check;
	dlist_foreach(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (s->deadline != 0 && (nearest == 0 || s->deadline < nearest))
			nearest = s->deadline;
	}
	/* tasks waiting to connect again after a transient refusal */
	dlist_foreach(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);

		if (rt->retry_at != 0 && (nearest == 0 || rt->retry_at < nearest))
			nearest = rt->retry_at;
	}
	if (nearest == 0)
		return -1;
	return Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), nearest), 0);
}

/*
 * wait_for_events
 *		The tracker's one wait: latch, postmaster death, every session's
 *		socket; marks the sessions whose socket is ready.  Waits at most
 *		max_timeout ms when that is not -1.
 */
static void
wait_for_events(long max_timeout)
{
	Session   **which = palloc(sizeof(Session *) * Max(nsessions, 1));
	pgsocket   *socks = palloc(sizeof(pgsocket) * Max(nsessions, 1));
	uint32	   *events = palloc(sizeof(uint32) * Max(nsessions, 1));
	bool	   *ready = palloc(sizeof(bool) * Max(nsessions, 1));
	dlist_iter	iter;
	int			n = 0;
	long		timeout = nearest_deadline();

	if (max_timeout >= 0 && (timeout < 0 || timeout > max_timeout))
		timeout = max_timeout;

	dlist_foreach(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		s->ready = false;
		if (PQsocket(s->conn) != PGINVALID_SOCKET && s->events != 0)
		{
			which[n] = s;
			socks[n] = PQsocket(s->conn);
			events[n++] = s->events;
		}
	}
	tt_wait_sockets_raw(n, socks, events, ready, timeout, TT_WAIT_TRACKER_MAIN);
	for (int i = 0; i < n; i++)
		which[i]->ready = ready[i];
}

/*
 * compute_connect_host
 *		Where task sessions connect: citus.task_tracker_host, else the first
 *		Unix socket directory, else localhost.
 */
static void
compute_connect_host(void)
{
	char	   *rawstring;
	List	   *dirs = NIL;
	MemoryContext old = MemoryContextSwitchTo(tracker_cxt);

	if (connect_host)
		pfree(connect_host);
	connect_host = NULL;
	if (task_tracker_host && task_tracker_host[0] != '\0')
		connect_host = pstrdup(task_tracker_host);
	else if (Unix_socket_directories && Unix_socket_directories[0] != '\0')
	{
		rawstring = pstrdup(Unix_socket_directories);
		if (SplitDirectoriesString(rawstring, ',', &dirs) && dirs != NIL)
			connect_host = pstrdup((char *) linitial(dirs));
	}
	if (connect_host == NULL)
		connect_host = pstrdup("localhost");
	MemoryContextSwitchTo(old);
}

/*
 * find_idle_session
 *		A session of user in db free for a task: an idle one if there is
 *		one; otherwise one still resetting with no task waiting for it, but
 *		only when the pair already has two sessions (with two, one resets
 *		while the other runs, so back-to-back tasks never wait for a reset).
 */
static Session *
find_idle_session(const char *user, const char *db)
{
	dlist_iter	iter;
	Session    *resetting = NULL;
	int			same = 0;

	dlist_foreach(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (strcmp(NameStr(s->user), user) != 0 ||
			strcmp(NameStr(s->database), db) != 0)
			continue;
		same++;
		if (s->state == SESSION_IDLE)
			return s;
		if (s->state == SESSION_RESETTING && s->task == NULL && resetting == NULL)
			resetting = s;
	}
	return same >= 2 ? resetting : NULL;
}

/*
 * schedule_tasks
 *		Start queued tasks, oldest first, while slots are free.
 */
static void
schedule_tasks(TimestampTz now)
{
	int			slots = max_running_tasks_per_node - nrunning;
	RunningTask **picked;
	int			n = 0;

	if (slots <= 0 || dlist_is_empty(&tt_shared->pending))
		return;

	picked = palloc(sizeof(RunningTask *) * slots);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	while (n < slots && !dlist_is_empty(&tt_shared->pending))
	{
		TTTask	   *task = dlist_container(TTTask, queue_node,
										   dlist_pop_head_node(&tt_shared->pending));
		TTJob	   *job = tt_job_lookup(task->key.job_id, false, InvalidOid);
		RunningTask *rt = MemoryContextAllocZero(tracker_cxt, sizeof(RunningTask));

		task->queued = false;
		tt_task_set_status(job, task, TT_SCHEDULED);
		task->attempts++;
		task->started_at = now;
		task->backend_pid = 0;
		task->result_rows = -1;

		rt->key = task->key;
		rt->owner = task->owner;
		rt->user = task->user_name;
		rt->database = task->database_name;
		rt->encoding = task->encoding;
		rt->query = MemoryContextStrdup(tracker_cxt, tt_text_get(task->query));
		rt->copy_len = task->copy_len;
		picked[n++] = rt;
	}
	LWLockRelease(tt_shared->lock);

	for (int i = 0; i < n; i++)
	{
		dlist_push_tail(&running, &picked[i]->node);
		nrunning++;
		start_task(picked[i], now);
	}
}

/*
 * start_task
 *		Give a picked task a session: an idle one of the same user and
 *		database, or a new connection.  Also used to connect again for a
 *		task whose connection was refused for a transient reason.
 */
static void
start_task(RunningTask *rt, TimestampTz now)
{
	const char *user = NameStr(rt->user);
	const char *db = NameStr(rt->database);
	Session    *s = task_tracker_reuse_connections ? find_idle_session(user, db) : NULL;
	TTConnTarget target;
	char	   *error;
	PGconn	   *conn;

	if (s != NULL)
	{
		/* a session still resetting runs the task when DISCARD ALL is done */
		s->task = rt;
		rt->session = s;
		s->deadline = 0;
		if (s->state == SESSION_IDLE)
			send_query(rt);
		return;
	}

	/*
	 * Keep at most two sessions per running slot: first drop an idle one,
	 * else one still resetting for nobody.  (Sessions with a task number at
	 * most max_running_tasks_per_node, so one of those two kinds exists.)
	 */
	if (nsessions >= 2 * max_running_tasks_per_node)
	{
		dlist_iter	iter;
		Session    *victim = NULL;

		dlist_foreach(iter, &sessions)
		{
			Session    *other = dlist_container(Session, node, iter.cur);

			if (other->state == SESSION_IDLE)
			{
				victim = other;
				break;
			}
			if (other->state == SESSION_RESETTING && other->task == NULL && victim == NULL)
				victim = other;
		}
		if (victim != NULL)
			close_session(victim);
	}

	memset(&target, 0, sizeof(target));
	target.host = connect_host;
	target.port = PostPortNumber;
	target.user = user;
	target.dbname = db;
	target.client_encoding = pg_encoding_to_char(rt->encoding);
	target.application_name = "task_tracker";
	conn = tt_conn_start(&target, &error);
	if (conn == NULL)
	{
		fail_attempt(rt, "53000", error);
		finish_task(rt);
		return;
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		bool		transient;
		char	   *msg = connect_error(conn, &transient);

		tt_conn_finish(conn);
		connect_failed(rt, msg, transient);
		return;
	}

	/*
	 * Until the session is established, errors carry their SQLSTATE in
	 * their text (connect_error); nothing has been sent or received yet.
	 */
	(void) PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);

	s = MemoryContextAllocZero(tracker_cxt, sizeof(Session));
	s->conn = conn;
	s->state = SESSION_CONNECTING;
	namestrcpy(&s->user, user);
	namestrcpy(&s->database, db);
	s->events = WL_SOCKET_WRITEABLE;
	s->deadline = TimestampTzPlusMilliseconds(now, node_connection_timeout);
	s->task = rt;
	rt->session = s;
	dlist_push_tail(&sessions, &s->node);
	nsessions++;
	tt_stats_set_connections(nsessions);
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
 * connect_error
 *		The error of a failed connection attempt, as the task keeps it, and
 *		whether it is transient: the server too busy to take a session
 *		(53300: "sorry, too many clients already", the remaining slots
 *		reserved for superusers, a role's or database's connection limit),
 *		not accepting connections now (57P03), or the connection refused
 *		with EAGAIN (a Unix socket's listen queue is full; no local port
 *		free; the postmaster could not fork).
 *
 * libpq keeps the SQLSTATE of an error the server sends during start-up to
 * itself; only the text is there, in PQerrorMessage.  Sessions are
 * therefore started in PQERRORS_VERBOSE mode (start_task), where the text
 * carries it ("FATAL:  53300: sorry, too many clients already") and ends
 * with a "LOCATION:  ..." line; both are removed again here, so the message
 * kept reads exactly as libpq's default one.  An error libpq makes itself
 * has no SQLSTATE; EAGAIN is recognised by its strerror() text, which libpq
 * gets from the same C library in the same process.  Every other failure —
 * authentication, a missing role or database, NOLOGIN, no CONNECT
 * privilege, a connection refused outright — is not transient.
 */
static char *
connect_error(PGconn *conn, bool *transient)
{
	char	   *msg = tt_conn_error_message(conn);
	char		sqlstate[6] = "";
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

	if (sqlstate[0] != '\0')
		*transient = (strcmp(sqlstate, "53300") == 0 || strcmp(sqlstate, "57P03") == 0);
	else
		*transient = (strstr(msg, strerror(EAGAIN)) != NULL);
	return msg;
}

/*
 * defer_connect
 *		The task's connection was refused for a transient reason: close what
 *		is left of its session and connect again after a back-off, without
 *		ending the attempt.  The task stays "scheduled", its error tells why
 *		it waits; the back-off is a deadline of the tracker's one wait.
 */
static void
defer_connect(RunningTask *rt, const char *message, TimestampTz now)
{
	Session    *s = rt->session;
	TTTask	   *task;
	int			wait_ms;

	if (s != NULL)
	{
		s->task = NULL;
		rt->session = NULL;
		close_session(s);
	}
	rt->unusable = false;
	rt->refusals++;
	rt->backoff_ms = (rt->backoff_ms == 0) ? TT_RECONNECT_MIN_MS :
		Min(rt->backoff_ms * 2, TT_RECONNECT_MAX_MS);
	/* tasks refused together should not come back together */
	wait_ms = rt->backoff_ms / 2 +
		(int) pg_prng_uint64_range(&pg_global_prng_state, 0, rt->backoff_ms / 2);
	rt->retry_at = Min(TimestampTzPlusMilliseconds(now, wait_ms), rt->refused_until);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL)
		tt_task_set_error(task, "08001", message);
	LWLockRelease(tt_shared->lock);

	ereport(DEBUG1,
			(errmsg_internal("task tracker: connection as \"%s\" for task (job " INT64_FORMAT ", task %d) refused, trying again in %d ms",
							 NameStr(rt->user), rt->key.job_id, rt->key.task_id, wait_ms),
			 errdetail_internal("%s", message)));
}

/*
 * retry_connects
 *		Connect again for the tasks whose back-off after a transient
 *		refusal is over.
 */
static void
retry_connects(TimestampTz now)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);

		if (rt->session == NULL && rt->retry_at != 0 && now >= rt->retry_at)
		{
			rt->retry_at = 0;
			start_task(rt, now);
		}
	}
}

/*
 * connect_failed
 *		The task's session could not be established.
 *
 * A transient refusal (connect_error) does not end the attempt: the tracker
 * connects again after a back-off, for up to citus.node_connection_timeout
 * after the first refusal of the attempt; a refusal after that fails the
 * attempt with its error, like any other connection failure.  During a
 * shutdown no failure is the task's fault: its attempt is given back and it
 * is requeued.  Otherwise the attempt failed.
 */
static void
connect_failed(RunningTask *rt, const char *message, bool transient)
{
	if (transient && !SERVER_STOPPING() && !postmaster_is_stopping())
	{
		TimestampTz now = GetCurrentTimestamp();

		if (rt->refused_until == 0)
			rt->refused_until = TimestampTzPlusMilliseconds(now, node_connection_timeout);
		if (now < rt->refused_until)
		{
			defer_connect(rt, message, now);
			return;
		}
		ereport(LOG,
				(errmsg("task tracker gave up connecting as \"%s\" for task (job " INT64_FORMAT ", task %d): refused %d times within citus.node_connection_timeout (%d ms)",
						NameStr(rt->user), rt->key.job_id, rt->key.task_id,
						rt->refusals + 1, node_connection_timeout),
				 errdetail_internal("%s", message)));
	}

	fail_attempt(rt, "08001", message);
	if (SERVER_STOPPING())
	{
		TTTask	   *task;

		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		if (task && task->attempts > 0)
			task->attempts--;
		LWLockRelease(tt_shared->lock);
	}
	finish_task(rt);
}

/*
 * dispatch_query
 *		Send the task's query on its session, without waiting: as COPY
 *		(<query>) TO STDOUT when it runs as COPY, else in single-row mode.
 *		Returns false, with the error recorded and the session marked
 *		unusable, when it could not be sent.
 */
static bool
dispatch_query(RunningTask *rt)
{
	Session    *s = rt->session;
	char	   *copy_sql = NULL;
	int			sent;
	int			flush;

	if (rt->copy_len > 0)
		copy_sql = tt_copy_wrap(rt->query, rt->copy_len);
	sent = PQsendQueryParams(s->conn, copy_sql ? copy_sql : rt->query,
							 0, NULL, NULL, NULL, NULL, 0);
	if (copy_sql)
		pfree(copy_sql);
	if (!sent)
	{
		rt->unusable = true;
		fail_attempt(rt, "08006", tt_conn_error_message(s->conn));
		return false;
	}
	if (rt->copy_len == 0)
	{
		(void) PQsetSingleRowMode(s->conn);
		pfree(rt->query);
		rt->query = NULL;
	}
	flush = PQflush(s->conn);
	if (flush < 0)
	{
		rt->unusable = true;
		fail_attempt(rt, "08006", tt_conn_error_message(s->conn));
		return false;
	}
	s->events = WL_SOCKET_READABLE | (flush > 0 ? WL_SOCKET_WRITEABLE : 0);
	return true;
}

/*
 * send_query
 *		Send the task's query on its (connected, idle) session and mark it
 *		running.
 */
static void
send_query(RunningTask *rt)
{
	Session    *s = rt->session;
	TTTask	   *task;

	s->state = SESSION_BUSY;
	if (!dispatch_query(rt))
	{
		finish_task(rt);
		return;
	}

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL && task->status == TT_SCHEDULED)
	{
		TTJob	   *job = tt_job_lookup(rt->key.job_id, false, InvalidOid);

		tt_task_set_status(job, task, TT_RUNNING);
		task->backend_pid = PQbackendPID(s->conn);
	}
	LWLockRelease(tt_shared->lock);
}

/*
 * fail_attempt
 *		Record the error of this attempt in the shared entry.
 */
static void
fail_attempt(RunningTask *rt, const char *sqlstate, const char *message)
{
	TTTask	   *task;

	if (rt->failed)
		return;					/* keep the first error of the attempt */
	rt->failed = true;

	/*
	 * A session terminated by the administrator or refused during a
	 * shutdown: if the server is stopping, start nothing more (finish_task
	 * then requeues instead of failing; the main loop calls
	 * begin_stopping, which must not run in the middle of process_sessions).
	 */
	if (!SERVER_STOPPING() &&
		(strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "08", 2) == 0) &&
		postmaster_is_stopping())
		stop_pending = true;

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL)
		tt_task_set_error(task, sqlstate, message);
	LWLockRelease(tt_shared->lock);
}

/*
 * write_failed
 *		A write of the result failed: record it (the rest of the result is
 *		read and dropped).
 */
static void
write_failed(RunningTask *rt)
{
	const char *code;
	char	   *msg = tt_result_error(&rt->writer, &code);

	fail_attempt(rt, code, msg);
}

/*
 * start_result
 *		The first rows (or the COPY's start) of the task's result arrived:
 *		begin collecting it.
 */
static void
start_result(RunningTask *rt, int ncols)
{
	if (!rt->opened)
	{
		tt_result_start(&rt->writer, rt->key.job_id, rt->key.task_id, rt->owner);
		rt->opened = true;
	}
	if (!tt_result_begin(&rt->writer, ncols))
		write_failed(rt);
}

/*
 * drain_copy_data
 *		Append the COPY data that has arrived to the result, without
 *		waiting.  Returns false while more is to come, true once the data
 *		has ended (the COPY's own result follows) or the connection failed.
 */
static bool
drain_copy_data(RunningTask *rt)
{
	PGconn	   *conn = rt->session->conn;

	for (;;)
	{
		char	   *buf = NULL;
		int			len = PQgetCopyData(conn, &buf, 1);

		if (len > 0)
		{
			rt->received++;
			if (!rt->failed && !tt_result_add_line(&rt->writer, buf, len))
				write_failed(rt);
			PQfreemem(buf);
			continue;
		}
		if (len == 0)
			return false;
		rt->copying = false;
		if (len == -2)
		{
			rt->unusable = true;
			fail_attempt(rt, "08006", tt_conn_error_message(conn));
		}
		return true;
	}
}

/*
 * drain_input
 *		Consume every result (and COPY row) libpq has already read, without
 *		blocking.  Returns true when the query is complete (PQgetResult gave
 *		NULL) or the connection failed, false when more input is needed.
 */
static bool
drain_input(RunningTask *rt)
{
	PGconn	   *conn = rt->session->conn;

	for (;;)
	{
		PGresult   *res;

		if (rt->copying)
		{
			if (!drain_copy_data(rt))
				return false;
			if (rt->unusable)
				return true;
		}
		if (PQisBusy(conn))
			return false;
		res = PQgetResult(conn);
		if (res == NULL)
		{
			if (!rt->resend_plain)
				return true;

			/* the server would not run it as COPY: run the query itself */
			rt->resend_plain = false;
			rt->copy_len = 0;
			if (!dispatch_query(rt))
				return true;
			return false;
		}

		rt->received++;
		switch (PQresultStatus(res))
		{
			case PGRES_SINGLE_TUPLE:
			case PGRES_TUPLES_OK:
				if (rt->failed)
					break;
				start_result(rt, PQnfields(res));
				if (!rt->failed && !tt_result_add(&rt->writer, res))
					write_failed(rt);
				break;
			case PGRES_COMMAND_OK:
				{
					/* a row-less statement's count; a COPY's count of rows */
					const char *tuples = PQcmdTuples(res);

					rt->rows = (tuples && tuples[0]) ? strtoi64(tuples, NULL, 10) : 0;
				}
				break;
			case PGRES_COPY_OUT:
				if (rt->copy_len > 0 && !rt->copy_out)
				{
					/* our COPY: its data is the result */
					rt->copy_out = true;
					rt->copying = true;
					if (!rt->failed)
						start_result(rt, PQnfields(res));
					break;
				}
				/* FALLTHROUGH */
			case PGRES_COPY_IN:
			case PGRES_COPY_BOTH:
				rt->unusable = true;
				fail_attempt(rt, "0A000", "COPY to or from the client is not supported in a task");
				PQclear(res);
				return true;
			default:
				{
					TTRemoteError err;

					tt_remote_error_from_result(conn, res, &err);
					if (rt->copy_len > 0 && !rt->copy_out && !rt->failed &&
						strcmp(err.sqlstate, "0A000") == 0)
					{
						/*
						 * Refused as COPY before running (a rule COPY does
						 * not support, say): nothing ran, so run the query
						 * itself once this result is over.
						 */
						rt->resend_plain = true;
						break;
					}
					fail_attempt(rt, err.sqlstate, tt_remote_error_text(&err));
				}
				break;
		}
		PQclear(res);
	}
}

/*
 * drain_results
 *		Read what has arrived on a busy session and consume it, without
 *		blocking.  While rows keep coming (a large result streaming in), it
 *		reads again at once rather than going back to the wait, up to
 *		TT_DRAIN_ROUNDS reads, so that a big result costs one wait per
 *		TT_DRAIN_ROUNDS reads instead of one per read; a socket with nothing
 *		more to read ends it.  Returns true when the query is complete.
 */
static bool
drain_results(RunningTask *rt)
{
	Session    *s = rt->session;
	PGconn	   *conn = s->conn;

	if (s->events & WL_SOCKET_WRITEABLE)
	{
		int			flush = PQflush(conn);

		if (flush < 0)
		{
			rt->unusable = true;
			fail_attempt(rt, "08006", tt_conn_error_message(conn));
			return true;
		}
		s->events = WL_SOCKET_READABLE | (flush > 0 ? WL_SOCKET_WRITEABLE : 0);
	}
	for (int round = 0; round < TT_DRAIN_ROUNDS; round++)
	{
		uint64		before = rt->received;

		if (!PQconsumeInput(conn))
		{
			rt->unusable = true;
			fail_attempt(rt, "08006", tt_conn_error_message(conn));
			return true;
		}
		if (drain_input(rt))
			return true;
		if (rt->received == before || (s->events & WL_SOCKET_WRITEABLE))
			break;				/* nothing new: wait for the socket */
	}
	return false;
}

/*
 * free_running_task
 *		Give up a running task's slot and its private memory.
 */
static void
free_running_task(RunningTask *rt)
{
	dlist_delete(&rt->node);
	nrunning--;
	if (rt->query)
		pfree(rt->query);
	pfree(rt);
}

/*
 * finish_task
 *		The attempt is over (rt->failed says how): record the outcome, free
 *		the slot, and give the session back (or close it).
 */
static void
finish_task(RunningTask *rt)
{
	Session    *s = rt->session;
	TTTask	   *task;
	bool		ok = !rt->failed;
	dsa_pointer blob = InvalidDsaPointer;
	uint32		blob_size = 0;
	bool		file = false;

	if (rt->opened && ok)
	{
		TTResultWriter *w = &rt->writer;

		/* a small result stays in shared memory; a larger one is a file */
		if (tt_result_in_memory(w) && w->used <= task_result_inline_size &&
			tt_shared->result_bytes + w->used <= (int64) task_result_memory * 1024)
		{
			blob = tt_blob_store(w->buf, w->used);
			if (DsaPointerIsValid(blob))
			{
				blob_size = w->used;
				tt_result_discard(w);
			}
		}
		if (!DsaPointerIsValid(blob))
		{
			if (tt_result_finish(w))
				file = true;
			else
			{
				const char *code;
				char	   *msg = tt_result_error(w, &code);

				fail_attempt(rt, code, msg);
				ok = false;
			}
		}
	}
	if (rt->opened && !ok)
		tt_result_discard(&rt->writer);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task == NULL || task->status == TT_CANCEL_REQUESTED)
	{
		/* finished before we could stop it: the result is not wanted */
		if (file)
			tt_result_discard(&rt->writer);
		tt_blob_free(blob);
	}
	if (task != NULL)
	{
		TTJob	   *job = tt_job_lookup(rt->key.job_id, false, InvalidOid);

		task->backend_pid = 0;
		if (task->status == TT_CANCEL_REQUESTED)
		{
			/*
			 * Canceled while it completed: it ends canceled whatever its
			 * outcome, so a job being dropped sees its last active task go
			 * and handle_cancels() can finish the job.
			 */
			task->has_file = false;
			tt_task_set_status(job, task, TT_CANCELED);
		}
		else if (ok)
		{
			task->has_file = file;
			if (DsaPointerIsValid(blob))
				tt_task_set_result(task, blob, blob_size);
			/* a COPY's rows are counted by the server (COPY n) */
			Assert(!rt->copy_out || rt->rows == rt->writer.rows);
			task->result_rows = (rt->opened && !rt->copy_out) ? rt->writer.rows : rt->rows;
			tt_task_set_error(task, NULL, NULL);
			tt_task_set_status(job, task, TT_SUCCEEDED);
			tt_shared->succeeded++;
		}
		else if (task->attempts < task_max_attempts && !SERVER_STOPPING())
		{
			tt_task_set_status(job, task, TT_FAILED);
			tt_task_enqueue(task);
		}
		else if (SERVER_STOPPING())
		{
			tt_task_set_status(job, task, TT_ASSIGNED);
			tt_task_enqueue(task);
		}
		else
		{
			tt_task_set_status(job, task, TT_PERMANENTLY_FAILED);
			tt_shared->failed++;
		}
	}
	LWLockRelease(tt_shared->lock);
	completed = true;

	if (s != NULL)
	{
		s->task = NULL;
		release_session(s, !rt->unusable);
	}
	free_running_task(rt);
}

/*
 * release_session
 *		A task is done with s: reset it for reuse (DISCARD ALL) if it is
 *		healthy, idle and reuse is on; close it otherwise.
 */
static void
release_session(Session *s, bool usable)
{
	if (!usable || SERVER_STOPPING() || !task_tracker_reuse_connections ||
		PQstatus(s->conn) != CONNECTION_OK ||
		PQtransactionStatus(s->conn) != PQTRANS_IDLE ||
		!PQsendQueryParams(s->conn, "DISCARD ALL", 0, NULL, NULL, NULL, NULL, 0))
	{
		close_session(s);
		return;
	}
	s->state = SESSION_RESETTING;
	s->events = WL_SOCKET_READABLE | (PQflush(s->conn) > 0 ? WL_SOCKET_WRITEABLE : 0);
	s->deadline = 0;
}

static void
close_session(Session *s)
{
	dlist_delete(&s->node);
	nsessions--;
	tt_conn_finish(s->conn);
	pfree(s);
	if (tt_shared)
		tt_stats_set_connections(nsessions);
}

/*
 * progress_connecting
 *		Drive PQconnectPoll for a session being established.
 */
static void
progress_connecting(Session *s, TimestampTz now)
{
	RunningTask *rt = s->task;
	PostgresPollingStatusType st;

	if (!s->ready && now < s->deadline)
		return;
	if (!s->ready)
	{
		char	   *msg = psprintf("could not connect to the local server as \"%s\" within %d ms",
								   NameStr(s->user), node_connection_timeout);

		rt->unusable = true;
		fail_attempt(rt, "08001", msg);
		finish_task(rt);
		return;
	}

	st = tt_conn_poll(s->conn);
	switch (st)
	{
		case PGRES_POLLING_OK:
			s->deadline = 0;
			/* later errors read as libpq's defaults (see connect_error) */
			(void) PQsetErrorVerbosity(s->conn, PQERRORS_DEFAULT);
			send_query(rt);
			break;
		case PGRES_POLLING_FAILED:
			{
				bool		transient;
				char	   *msg = connect_error(s->conn, &transient);

				rt->unusable = true;
				connect_failed(rt, msg, transient);
			}
			break;
		default:
			s->events = tt_poll_wait_events(st);
			break;
	}
}

/*
 * reset_failed
 *		DISCARD ALL failed or the session broke while resetting: close it,
 *		and fail the attempt of a task that was waiting for it.
 */
static void
reset_failed(Session *s)
{
	RunningTask *rt = s->task;

	s->task = NULL;
	close_session(s);
	if (rt != NULL)
	{
		rt->session = NULL;
		fail_attempt(rt, "08006", "could not reset the task's session");
		finish_task(rt);
	}
}

/*
 * progress_resetting
 *		Read DISCARD ALL's outcome; the session becomes idle or is closed.
 */
static void
progress_resetting(Session *s, TimestampTz now)
{
	bool		ok = true;

	if (!s->ready)
		return;
	if ((s->events & WL_SOCKET_WRITEABLE) && PQflush(s->conn) < 0)
	{
		reset_failed(s);
		return;
	}
	if (!PQconsumeInput(s->conn))
	{
		reset_failed(s);
		return;
	}
	while (!PQisBusy(s->conn))
	{
		PGresult   *res = PQgetResult(s->conn);

		if (res == NULL)
		{
			if (!ok)
			{
				reset_failed(s);
				return;
			}
			if (s->task != NULL)
			{
				send_query(s->task);
				return;
			}
			s->state = SESSION_IDLE;
			s->events = WL_SOCKET_READABLE;
			s->deadline = TimestampTzPlusMilliseconds(now, task_tracker_idle_connection_timeout);
			return;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			ok = false;
		PQclear(res);
	}
	s->events = WL_SOCKET_READABLE;
}

/*
 * process_sessions
 *		Advance every session whose socket is ready or whose deadline has
 *		passed.
 */
static void
process_sessions(TimestampTz now)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		switch (s->state)
		{
			case SESSION_CONNECTING:
				progress_connecting(s, now);
				break;
			case SESSION_BUSY:
				if (s->ready && drain_results(s->task))
					finish_task(s->task);
				break;
			case SESSION_RESETTING:
				progress_resetting(s, now);
				break;
			case SESSION_IDLE:
				/* readable while idle: the server closed it, or a notice */
				if (s->ready &&
					(!PQconsumeInput(s->conn) || PQstatus(s->conn) != CONNECTION_OK))
					close_session(s);
				else if (s->deadline != 0 && now >= s->deadline)
					close_session(s);
				break;
		}
	}
}

/*
 * terminate_backend
 *		Stop the statement a busy session runs: SIGTERM to its backend, as
 *		pg_terminate_backend does.  (A query cancel, SIGINT, is ignored by a
 *		backend that has not yet read the statement, so it could be lost; the
 *		session is not reused afterwards anyway.)
 */
static void
terminate_backend(Session *s)
{
	int			pid = PQbackendPID(s->conn);

	if (s->state == SESSION_BUSY && pid > 0)
		(void) kill(pid, SIGTERM);
}

/*
 * stop_running_task
 *		Stop a running task at once: terminate its remote statement
 *		(terminate_backend), close the session and drop any partial result
 *		file.  The caller updates the shared entry.
 */
static void
stop_running_task(RunningTask *rt, bool cancel_backend)
{
	Session    *s = rt->session;

	if (s != NULL)
	{
		if (cancel_backend)
			terminate_backend(s);
		s->task = NULL;
		close_session(s);
	}
	if (rt->opened)
		tt_result_discard(&rt->writer);
	free_running_task(rt);
}

/*
 * finish_dropped_job
 *		Remove a dropping job whose tasks have all stopped.  Caller holds
 *		the lock, and calls remove_detached_dirs() once it released it.
 */
static void
finish_dropped_job(TTJob *job)
{
	dlist_mutable_iter iter;
	char	   *detached;

	dlist_foreach_modify(iter, &job->tasks)
		tt_task_remove(job, dlist_container(TTTask, job_node, iter.cur));
	detached = tt_result_detach_job(job->job_id);
	if (detached)
		detached_dirs = lappend(detached_dirs, detached);
	tt_job_remove(job);
}

/*
 * remove_detached_dirs
 *		Remove the directories of jobs dropped under the lock; called after
 *		releasing it.
 */
static void
remove_detached_dirs(void)
{
	ListCell   *lc;

	foreach(lc, detached_dirs)
		tt_result_remove_detached(lfirst(lc));
	list_free(detached_dirs);
	detached_dirs = NIL;
}

/*
 * handle_cancels
 *		Stop every running task whose cancel was requested; complete the
 *		removal of jobs being dropped.
 */
static void
handle_cancels(void)
{
	dlist_mutable_iter iter;
	HASH_SEQ_STATUS seq;
	TTJob	   *job;

	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);
		TTTask	   *task;
		bool		cancel;

		Session    *s = rt->session;

		LWLockAcquire(tt_shared->lock, LW_SHARED);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		cancel = (task == NULL || task->status == TT_CANCEL_REQUESTED);
		LWLockRelease(tt_shared->lock);
		if (!cancel)
			continue;

		/*
		 * A running statement is first asked to stop (SIGINT, what
		 * pg_cancel_backend does): its error then ends the task through
		 * finish_task and the session stays usable.  A backend that has
		 * not read the statement yet ignores a cancel, so if the statement
		 * still runs after TT_CANCEL_GRACE_MS, it is terminated.
		 */
		if (s != NULL && s->state == SESSION_BUSY && !SERVER_STOPPING())
		{
			TimestampTz now = GetCurrentTimestamp();

			if (!rt->cancel_sent)
			{
				int			pid = PQbackendPID(s->conn);

				if (pid > 0)
					(void) kill(pid, SIGINT);
				rt->cancel_sent = true;
				s->deadline = TimestampTzPlusMilliseconds(now, TT_CANCEL_GRACE_MS);
				continue;
			}
			if (now < s->deadline)
				continue;
		}

		stop_running_task(rt, true);
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		if (task != NULL)
		{
			job = tt_job_lookup(task->key.job_id, false, InvalidOid);
			task->has_file = false;
			tt_task_set_status(job, task, TT_CANCELED);
		}
		LWLockRelease(tt_shared->lock);
		completed = true;
	}

	/* tasks whose cancel was requested while not in our hands */
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	if (tt_shared->ndropping > 0)
	{
		hash_seq_init(&seq, tt_job_hash);
		while ((job = hash_seq_search(&seq)) != NULL)
		{
			if (job->dropping && job->nactive == 0)
			{
				finish_dropped_job(job);
				completed = true;
			}
		}
	}
	LWLockRelease(tt_shared->lock);
	remove_detached_dirs();
}

/*
 * postmaster_is_stopping
 *		True once the postmaster has recorded "stopping" in postmaster.pid
 *		(any shutdown mode, including smart, which sends us nothing).
 */
static bool
postmaster_is_stopping(void)
{
	FILE	   *f;
	char		line[256];
	int			lineno = 0;
	bool		result = false;

	f = AllocateFile("postmaster.pid", "r");
	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		if (++lineno == LOCK_FILE_LINE_PM_STATUS)
		{
			result = (strncmp(line, PM_STATUS_STOPPING, strlen("stopping")) == 0);
			break;
		}
	}
	FreeFile(f);
	return result;
}

/*
 * expire_jobs
 *		Drop jobs nobody asked about for citus.task_tracker_job_expiry, and
 *		compute when the next one may expire.
 */
static void
expire_jobs(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	TTJob	   *job;
	TimestampTz oldest = 0;
	int			dropped = 0;

	if (task_tracker_job_expiry <= 0)
	{
		next_expiry_check = 0;
		return;
	}

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, tt_job_hash);
	while ((job = hash_seq_search(&seq)) != NULL)
	{
		TimestampTz expires = TimestampTzPlusMilliseconds(tt_job_last_access(job),
														  (int64) task_tracker_job_expiry * 1000);

		if (job->dropping)
			continue;
		if (expires <= now)
		{
			char	   *detached;

			if (tt_job_drop(job, &detached) && detached)
				detached_dirs = lappend(detached_dirs, detached);
			dropped++;
			continue;
		}
		if (oldest == 0 || expires < oldest)
			oldest = expires;
	}
	LWLockRelease(tt_shared->lock);
	remove_detached_dirs();

	if (dropped > 0)
	{
		ereport(LOG,
				(errmsg("task tracker removed %d jobs nobody asked about for %d s",
						dropped, task_tracker_job_expiry)));
		completed = true;
		handle_cancels();
	}
	next_expiry_check = oldest;
}

/*
 * begin_stopping
 *		The server is stopping: start nothing more, close idle sessions and
 *		terminate the statements of running tasks, but keep their sessions
 *		for up to TT_STOP_GRACE_MS so that each task's real outcome is read:
 *		a statement that completed before it was stopped is succeeded, one
 *		that was stopped goes back to the queue.  Only what is still
 *		unknown at the deadline is requeued blind (requeue_all_running).
 */
static void
begin_stopping(TimestampTz now)
{
	dlist_mutable_iter iter;

	if (stopping)
		return;
	stopping = true;
	stop_deadline = TimestampTzPlusMilliseconds(now, TT_STOP_GRACE_MS);
	dlist_foreach_modify(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (s->task == NULL)
			close_session(s);
		else
			terminate_backend(s);
	}

	/*
	 * A task waiting to connect again after a transient refusal never
	 * started: back to the queue, its attempt given back.
	 */
	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);
		TTTask	   *task;

		if (rt->session != NULL || rt->retry_at == 0)
			continue;
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		if (task != NULL)
		{
			if (task->attempts > 0)
				task->attempts--;
			requeue_or_cancel(task);
		}
		LWLockRelease(tt_shared->lock);
		free_running_task(rt);
		completed = true;
	}
}

/*
 * housekeeping
 *		Periodic work while there is work: notice a smart shutdown, finish
 *		stopping, expire jobs, and schedule the next pass.
 */
static void
housekeeping(TimestampTz now)
{
	if (!SERVER_STOPPING() && (nrunning > 0 || nsessions > 0) && postmaster_is_stopping())
	{
		ereport(LOG,
				(errmsg("task tracker: server is shutting down; stopping %d running tasks",
						nrunning)));
		begin_stopping(now);
	}
	if (stopping && nrunning > 0 && now >= stop_deadline)
		requeue_all_running(false);

	if (next_expiry_check == 0 || now >= next_expiry_check)
		expire_jobs(now);
	if (next_expiry_check == 0 && tt_shared->njobs > 0 && task_tracker_job_expiry > 0)
		next_expiry_check = TimestampTzPlusMilliseconds(now, (int64) task_tracker_job_expiry * 1000);

	next_housekeeping = TimestampTzPlusMilliseconds(now, task_tracker_delay);
	if (stopping && nrunning > 0 && stop_deadline < next_housekeeping)
		next_housekeeping = stop_deadline;
}

/*
 * requeue_all_running
 *		Stop every running task and put it back in the queue (its attempt
 *		stays counted); tasks whose cancel was requested become canceled.
 */
static void
requeue_all_running(bool cancel_backends)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);
		TTTaskKey	key = rt->key;
		TTTask	   *task;

		stop_running_task(rt, cancel_backends);
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &key, HASH_FIND, NULL);
		if (task != NULL)
			requeue_or_cancel(task);
		LWLockRelease(tt_shared->lock);
	}
	completed = true;
}

/*
 * shutdown_and_exit
 *		SIGTERM: stop running tasks (reading their outcome for a short
 *		while, see begin_stopping), save the table, exit.  Exit code 1 so
 *		that the postmaster restarts us if this was not a server shutdown
 *		(pg_terminate_backend); at shutdown it restarts nothing.
 */
static void
shutdown_and_exit(void)
{
	dlist_mutable_iter iter;
	TimestampTz now = GetCurrentTimestamp();

	begin_stopping(now);
	while (nrunning > 0 && now < stop_deadline)
	{
		wait_for_events(TimestampDifferenceMilliseconds(now, stop_deadline));
		now = GetCurrentTimestamp();
		process_sessions(now);
	}
	requeue_all_running(false);
	dlist_foreach_modify(iter, &sessions)
		close_session(dlist_container(Session, node, iter.cur));
	handle_cancels();
	tt_job_wake_pending();
	tt_persist_save();
	proc_exit(1);
}
