/*-------------------------------------------------------------------------
 *
 * tracker.c
 *	  The task tracker background worker: the one process per server that
 *	  runs queued tasks, each as its owner in its database.
 *
 *	  This file owns:
 *	  - the main loop and its one wait (main_loop, nearest_deadline,
 *		wait_for_events), the recovery block for an ERROR in a pass
 *		(recover_from_error), and what a new tracker finds of the previous
 *		one's running tasks (recover_orphans);
 *	  - the sessions: connecting with back-off after a refusal
 *		(start_task, retry_connects), the identity check (check_identity),
 *		reset and reuse, idle expiry, closing idle sessions for DROP
 *		DATABASE (tt_close_idle_sessions, serve_close_idle);
 *	  - a task's run on a session: scheduling (schedule_tasks), sending
 *		(send_query), reading its result (drain_results) and recording its
 *		outcome (finish_task, store_result, set_task_error);
 *	  - stopping tasks: cancel and terminate, signals only to this
 *		server's backends (handle_cancels, signal_backend,
 *		stop_running_task);
 *	  - the running limit within the descriptor budget (running_limit),
 *		job expiry (expire_jobs) and the stop (begin_stopping,
 *		shutdown_and_exit);
 *	  - handing tasks to task workers and reading what they report
 *		(start_worker_task, process_workers; the workers are
 *		task_worker.c).
 *	  Not here: the shared table (shmem.c), result files (result_file.c),
 *	  save and restore (persist.c), the SQL functions (worker_api.c), the
 *	  libpq calls (src/common/remote.c).
 *
 * Design
 *	  docs/architecture.md: "Processes", "Task state machine", "Tracker
 *	  sessions", "The tracker's one wait", "Exactly once", "Task workers",
 *	  "Flow of one task (worker side)", "Stop, start, crash".
 *
 * Locking
 *	  TTShared->lock is taken briefly to pick tasks, to record progress and
 *	  to finish tasks; never across a libpq call or a result-file write.
 *	  close_idle_request is compared with close_idle_done without it once a
 *	  pass, as a hint (a request missed is seen in the next pass: the
 *	  requester sets the latch after bumping it).
 *	  Everything else here is private to the tracker process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
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
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/pidfile.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "mb/pg_wchar.h"

#include "common/tt_settings.h"
#include "worker/tt_tracker.h"
#include "worker/tt_worker.h"
#include "worker/tt_persist.h"
#include "common/tt_copy_text.h"
#include "common/tt_conn_auth.h"
#include "common/tt_remote.h"
#include "worker/tt_result_file.h"
#include "worker/tt_shmem.h"
#include "worker/tt_task_worker.h"
#include "common/tt_waits.h"

PGDLLEXPORT void tt_tracker_main(Datum main_arg);

/* how long a canceled statement may take to stop before it is terminated */
#define TT_CANCEL_GRACE_MS	50

/* how long a stopping tracker waits for its stopped tasks' outcome */
#define TT_STOP_GRACE_MS	2000

/*
 * How long a restarted tracker waits for the backends of the tasks its
 * predecessor ran to exit (recover_orphans), and how often it looks.
 */
#define TT_ORPHAN_WAIT_MS	30000

/* after a result could not be stored in memory, use files for this long */
#define TT_DSA_BACKOFF_MS	10000
#define TT_ORPHAN_POLL_MS	10

/*
 * File descriptors: each session holds one external FD (fd.c allows a
 * process max_safe_fds / 3 of them) and there are at most two sessions per
 * running task; each running task may hold one result file among the
 * allocated descriptors (also max_safe_fds / 3).  TT_FD_RESERVE are kept
 * for the rest (postmaster.pid, the state file).
 */
#define TT_FD_RESERVE		4

/* reads of a streaming result per wake-up (each up to libpq's buffer) */
#define TT_DRAIN_ROUNDS		64

/*
 * Back-off between connection tries refused for a transient reason (see
 * tt_conn_connect_error): it doubles from the first to the second bound; each wait
 * is between half of it and all of it, at random.
 */
#define TT_RECONNECT_MIN_MS	10
#define TT_RECONNECT_MAX_MS	500

/* events read from one task worker per pass (then the latch is set) */
#define TT_WORKER_EVENTS	4096

typedef enum SessionState
{
	SESSION_CONNECTING,			/* PQconnectPoll in progress */
	SESSION_CHECKING,			/* identity query in flight (check_identity) */
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
	Oid			role;			/* OID of that role, as checked */
	Oid			dbid;			/* OID of that database, as checked */
	bool		local;			/* its backend is one of this server's */
	uint32		events;			/* socket events to wait for */
	bool		ready;			/* an awaited event fired */
	bool		recheck;		/* read it in the next pass even if its
								 * socket is quiet (an ERROR interrupted the
								 * last read; libpq may hold unread input) */
	TimestampTz deadline;		/* connect limit, or idle expiry; 0 = none */
	struct RunningTask *task;	/* task it runs (CONNECTING/BUSY) */
	TTRemoteQuery q;			/* CHECKING: the identity query; RESETTING:
								 * DISCARD ALL (src/common/remote.c) */
} Session;

/* A task this tracker has picked and not finished. */
typedef struct RunningTask
{
	dlist_node	node;			/* link in running */
	TTTaskKey	key;			/* the shared entry's key */
	Oid			owner;			/* owner, for the result file name */
	NameData	user;			/* owner's name, to log in as */
	NameData	database;		/* database to connect to */
	Oid			dbid;			/* that database's OID */
	int			encoding;		/* its database's encoding */
	char	   *query;			/* copy of the query until it is sent (as
								 * COPY: until the task ends) */
	int32		copy_len;		/* run query[0..copy_len) as COPY, 0: plain */
	bool		copy_out;		/* the COPY's data has begun */
	bool		copying;		/* ... and not ended yet */
	bool		resend_plain;	/* the COPY was refused: run the plain query */
	uint64		received;		/* COPY rows and results read so far */
	PGresult   *cur_res;		/* result being handled by drain_input, so
								 * that an ERROR does not leak it */
	Session    *session;		/* session running it, or NULL */
	TTResultWriter writer;		/* its result file */
	bool		opened;			/* writer has a file */
	bool		failed;			/* the statement (or its session) failed:
								 * nothing committed, an error is recorded */
	bool		permanent;		/* ... and retrying cannot help */
	bool		store_failed;	/* the statement ran, but its result could
								 * not be kept (store_error says why) */
	char		store_sqlstate[6];	/* SQLSTATE of that failure */
	char	   *store_error;	/* its message (tracker_cxt) */
	bool		unusable;		/* the session must be closed afterwards */
	bool		cancel_sent;	/* SIGINT sent; session deadline = escalation */
	int64		rows;			/* rows affected by a row-less statement */
	TimestampTz retry_at;		/* no session: connect again then; 0 = not
								 * waiting */
	TimestampTz refused_until;	/* transient refusals are retried until
								 * then; 0 = none so far in this attempt */
	int			backoff_ms;		/* current back-off, see TT_RECONNECT_* */
	int			refusals;		/* transient refusals in this attempt */
	/* background-worker mode (citus.task_tracker_use_background_workers) */
	TTTaskWorker *worker;		/* the worker running it, or NULL */
	bool		command_done;	/* its CommandComplete arrived: committed */
	TimestampTz cancel_deadline;	/* cancel_sent: terminate it then */
	TimestampTz slot_wait_since;	/* waiting for a worker slot since; 0 */
	bool		slot_logged;	/* that wait was logged */
	char	   *refusal;		/* the login was refused for a transient
								 * reason (53300, 57P03): why (tracker_cxt) */
} RunningTask;

static dlist_head sessions = DLIST_STATIC_INIT(sessions);
static dlist_head running = DLIST_STATIC_INIT(running);
static int	nsessions = 0;
static int	nrunning = 0;
static bool stopping = false;	/* stopping (begin_stopping ran) */
static bool stop_pending = false;	/* a session saw the server stop */
#define SERVER_STOPPING()	(stopping || stop_pending)
static TimestampTz next_housekeeping = 0;
static TimestampTz next_expiry_check = 0;
static List *detached_dirs = NIL;	/* job dirs to remove after the lock */
static TimestampTz stop_deadline = 0;	/* while stopping: give up waiting */
static MemoryContext tracker_cxt = NULL;
static TimestampTz dsa_failed_at = 0;	/* last failure to store a result in
										 * the DSA area (store_result) */
static volatile bool recovering = false;	/* in recover_from_error */
static MemoryContext pass_cxt = NULL;
static char *connect_host = NULL;

static void tracker_exit(int code, Datum arg);
static void recover_from_error(void);
static void serve_close_idle(void);
static int	running_limit(void);
static bool signal_backend(Session *s, int sig);
static TTTrackedTask *set_task_error(TTTrackedTask *task, const char *sqlstate,
							  const char *text);
static void shorten_idle_deadlines(TimestampTz now);
static void main_loop(void) pg_attribute_noreturn();
static void wait_for_events(long max_timeout);
static void process_sessions(TimestampTz now);
static void schedule_tasks(TimestampTz now);
static void handle_cancels(void);
static void housekeeping(TimestampTz now);
static void shutdown_and_exit(void) pg_attribute_noreturn();
static void begin_stopping(TimestampTz now);
static void terminate_backend(Session *s);
static void recover_orphans(bool restart);
static void requeue_or_cancel(TTTrackedTask *task);
static void remove_detached_dirs(void);
static void start_task(RunningTask *rt, TimestampTz now);
static void retry_connects(TimestampTz now);
static void send_query(RunningTask *rt);
static char *connect_error(PGconn *conn, bool *transient, bool *auth);
static void connect_failed(RunningTask *rt, const char *message, bool transient);
static void fail_attempt(RunningTask *rt, const char *sqlstate, const char *message);
static void finish_task(RunningTask *rt);
static void start_identity_check(Session *s);
static bool check_identity(Session *s);
static void advance_reset(Session *s, TimestampTz now);
static char *catch_error(MemoryContext cxt, char *sqlstate);
static void store_failed(RunningTask *rt, const char *sqlstate, const char *message);
static void close_session(Session *s);
static void release_session(Session *s, bool usable);
static void requeue_all_running(bool cancel_backends);
static void compute_connect_host(void);
static bool postmaster_is_stopping(void);
static void check_result_encoding(RunningTask *rt, int encoding);
static TimestampTz backoff_retry_at(RunningTask *rt, TimestampTz now, int *wait_ms);
static void start_worker_task(RunningTask *rt, TimestampTz now);
static void process_workers(TimestampTz now);

/*
 * tt_tracker_main
 *		Entry point of the task tracker background worker.
 */
void
tt_tracker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);

	/*
	 * No query cancel: a worker with a database connection would get the
	 * backend's SIGINT handler, and pg_cancel_backend() on the tracker
	 * (listed in pg_stat_activity) would raise an ERROR in whatever it was
	 * doing, e.g. failing a healthy task's result.  The tracker runs no
	 * statement and arms no statement or lock timeout, so nothing else sets
	 * QueryCancelPending (recovery conflicts target backends holding a
	 * snapshot, a buffer pin or a database, none of which it has).
	 */
	pqsignal(SIGINT, SIG_IGN);
	BackgroundWorkerUnblockSignals();

	/*
	 * A backend without a database, as the logical replication launcher
	 * is: the tracker appears in pg_stat_activity with its backend_type
	 * and its waits, and is never counted as a user of a database (DROP
	 * DATABASE does not wait for it).
	 */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

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
		recover_orphans(true);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	tt_shared->ready = true;
	LWLockRelease(tt_shared->lock);
	tt_ready_wake();

	ereport(LOG, (errmsg("task tracker started")));
	/* the first pass must not wait: restored tasks may be queued */
	SetLatch(MyLatch);

	/*
	 * An ERROR in a pass comes back here, as in PostgreSQL's own auxiliary
	 * processes (bgwriter, checkpointer, walwriter): report it, release
	 * what the interrupted code held, and go on with the next pass.  The
	 * tracker never exits because of an ERROR, so the statements of its
	 * running tasks are never orphaned and requeued by one; the places
	 * where an ERROR can arise on the way from a statement's completion to
	 * its record are caught where they are (finish_task, set_task_error),
	 * so this is only the backstop.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		EmitErrorReport();

		/*
		 * An ERROR raised while recovering from one: recovering again could
		 * spin on the same fault.  Exit instead (code 1: the postmaster
		 * starts a new tracker, which settles the running tasks as after
		 * any restart, see recover_orphans).
		 */
		if (recovering)
		{
			ereport(LOG,
					(errmsg("task tracker exits: an error occurred while it recovered from an earlier error")));
			proc_exit(1);
		}
		recovering = true;
		recover_from_error();
		recovering = false;
		RESUME_INTERRUPTS();
	}
	PG_exception_stack = &local_sigjmp_buf;

	main_loop();
}

/*
 * recover_from_error
 *		Clean up after an ERROR caught by the main loop's recovery block:
 *		release locks and condition-variable sleeps, end the wait-event
 *		report, forget hash scans in progress, reset the pass context.
 *		Sessions and running tasks stay as they are (every change to those
 *		lists is made without an ERROR-raising call in between); a task
 *		the shared table shows active but this tracker no longer runs is
 *		recovered as after a restart (recover_orphans).  Repeated errors
 *		within a second are spaced by a short wait on the latch, before
 *		anything else that could fail again, so that a persistent fault
 *		cannot spin; an ERROR in here makes the tracker exit (see the
 *		recovery block).
 */
static void
recover_from_error(void)
{
	static TimestampTz last_error = 0;
	TimestampTz now;

	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	AbortCurrentTransaction();
	AtEOXact_HashTables(false);
	MemoryContextSwitchTo(tracker_cxt);
	FlushErrorState();
	MemoryContextReset(pass_cxt);

	now = GetCurrentTimestamp();
	if (last_error != 0 &&
		TimestampDifferenceMilliseconds(last_error, now) < 1000)
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 TT_WAIT_TRACKER_MAIN);
	last_error = now;

	/* tasks the failed pass made final before the ERROR */
	tt_job_wake_pending();

	recover_orphans(false);

	/* libpq may hold input the failed pass did not read */
	{
		dlist_iter	iter;

		dlist_foreach(iter, &sessions)
			dlist_container(Session, node, iter.cur)->recheck = true;
	}

	/* whatever the failed pass did not finish, the next one looks at */
	SetLatch(MyLatch);
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
	/* waiters of tasks made final before the exit; DROP DATABASE waiting */
	tt_job_wake_pending();
	ConditionVariableBroadcast(&tt_shared->close_idle_cv);
}

/*
 * requeue_or_cancel
 *		An active task that lost its session goes back to the queue (its
 *		attempt stays counted), unless its cancel was requested: then it is
 *		canceled.  Caller holds the lock exclusively.
 */
static void
requeue_or_cancel(TTTrackedTask *task)
{
	TTTrackedJob	   *job = tt_job_lookup(task->key.job_id, false, InvalidOid);

	if (task->status == TT_CANCEL_REQUESTED)
		tt_task_set_status(job, task, TT_CANCELED);
	else
	{
		tt_task_set_status(job, task, TT_ASSIGNED);
		tt_task_enqueue(task);
	}
}

/*
 * is_our_backend
 *		True when pid is a backend of this server logged in as role in
 *		database dbid (the role and database guard against a pid reused by
 *		an unrelated backend).
 */
static bool
is_our_backend(int pid, Oid role, Oid dbid)
{
	PGPROC	   *proc;

	if (pid <= 0)
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->roleId == role && proc->databaseId == dbid;
}

/*
 * running_task_of
 *		This tracker's RunningTask for key, or NULL.
 */
static RunningTask *
running_task_of(const TTTaskKey *key)
{
	dlist_iter	iter;

	dlist_foreach(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);

		if (memcmp(&rt->key, key, sizeof(TTTaskKey)) == 0)
			return rt;
	}
	return NULL;
}

typedef struct Orphan
{
	TTTaskKey	key;			/* the task */
	int			pid;			/* its old backend, signaled and still
								 * running the statement; 0 if none */
	bool		ended;			/* its statement was sent and is no longer
								 * running (or its backend is gone): it may
								 * have committed */
} Orphan;

static int	collect_orphans(Orphan **out);
static int	signal_orphans(Orphan *orphans, int norphans, int *nended);
static bool wait_for_orphans(const Orphan *orphans, int norphans, int nsignaled);
static char *orphan_failure(const TTTrackedTask *task, const Orphan *o, bool alive,
							const char **sqlstate);
static void settle_orphan(const Orphan *o, bool leave);

/*
 * statement_running
 *		True when backend pid of this server is still running a statement,
 *		by its entry in the backend status array (what pg_stat_activity
 *		shows as its state).  An idle backend has finished its statement
 *		(committed or not: the tracker did not read the answer); a backend
 *		without an entry, or with track_activities off (state "disabled"),
 *		counts as not running, so its task is not run again.
 */
static bool
statement_running(int pid)
{
	bool		running = false;
	int			n;

	pgstat_clear_backend_activity_snapshot();
	n = pgstat_fetch_stat_numbackends();
	for (int i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *entry = pgstat_fetch_stat_local_beentry(i);

		if (entry != NULL && entry->backendStatus.st_procpid == pid)
		{
			running = (entry->backendStatus.st_state == STATE_RUNNING ||
					   entry->backendStatus.st_state == STATE_FASTPATH);
			break;
		}
	}
	pgstat_clear_backend_activity_snapshot();
	return running;
}

/*
 * recover_orphans
 *		Settle the tasks the shared table shows active but no RunningTask
 *		of this process holds: after a restart on intact shared memory (the
 *		previous tracker exited: terminated, or FATAL), every active task;
 *		after an ERROR caught in the main loop (restart = false), any task
 *		the interrupted pass let go of.  Cancel requests complete.
 *
 *		A task must never run twice at once, nor run again once its
 *		statement committed:
 *		- committed: its outcome is known; its result is lost, so it ends
 *		  permanently_failed with its row count and an error saying so;
 *		- its statement was sent to a backend of this server that is still
 *		  running it (statement_running): that backend is terminated
 *		  (SIGTERM) and the task requeued only once it has exited, watched
 *		  on the latch for up to TT_ORPHAN_WAIT_MS; one still there then
 *		  ends permanently_failed (40003);
 *		- sent, and its backend is idle (the statement ended, its answer
 *		  unread) or gone: the statement may have committed, so it ends
 *		  permanently_failed (40003) rather than run a second time;
 *		- sent to a server the tracker cannot signal (citus.task_tracker_host
 *		  elsewhere): likewise 40003;
 *		- never sent: requeued (its attempt stays counted).
 *		A stop requested during the wait (SIGTERM) ends it at once: the
 *		tasks whose backends were still running stay active, as the stop
 *		path leaves them (the next tracker looks at them again; a server
 *		shutdown saves them queued, their backends being stopped too).
 *		After a restart a state file (or the marker of a failed save) left
 *		by that exit is stale and is discarded.
 *
 *		Steps: collect_orphans, signal_orphans, wait_for_orphans, and
 *		settle_orphan for each.
 */
static void
recover_orphans(bool restart)
{
	Orphan	   *orphans;
	int			norphans;
	int			nsignaled;
	int			nended;
	bool		leave;

	if (restart)
		tt_persist_discard();

	norphans = collect_orphans(&orphans);
	nsignaled = signal_orphans(orphans, norphans, &nended);
	leave = wait_for_orphans(orphans, norphans, nsignaled);
	for (int i = 0; i < norphans; i++)
		settle_orphan(&orphans[i], leave);
	pfree(orphans);
	if (nended > 0)
		ereport(LOG,
				(errmsg("task tracker found %d tasks whose statements had ended without their outcome being read; they fail rather than run again",
						nended)));

	/* dropping jobs have no active task left: finish them */
	handle_cancels();
}

/*
 * collect_orphans
 *		recover_orphans, step 1: the active tasks no RunningTask of this
 *		process holds, under the lock in shared mode.  For a task whose
 *		statement was sent to a backend of this server (not committed), the
 *		backend's pid is kept, and a pid that is no longer that backend
 *		marks the statement as ended.  Returns how many, in *out (palloc'd).
 */
static int
collect_orphans(Orphan **out)
{
	HASH_SEQ_STATUS seq;
	TTTrackedTask	   *task;
	Orphan	   *orphans;
	int			norphans = 0;

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	orphans = palloc0(sizeof(Orphan) * Max(tt_shared->nrunning, 1));
	hash_seq_init(&seq, tt_task_hash);
	while ((task = hash_seq_search(&seq)) != NULL)
	{
		if (!TT_STATUS_IS_ACTIVE(task->status) || running_task_of(&task->key) != NULL)
			continue;
		if (norphans >= Max(tt_shared->nrunning, 1))
		{
			hash_seq_term(&seq);
			break;
		}
		orphans[norphans].key = task->key;
		if (!task->committed && task->backend_local && task->backend_pid != 0)
		{
			/* sent: what is its backend doing? (signal_orphans) */
			orphans[norphans].pid = task->backend_pid;
			if (!is_our_backend(task->backend_pid, task->owner, task->dbid))
				orphans[norphans].ended = true;
		}
		norphans++;
	}
	LWLockRelease(tt_shared->lock);
	*out = orphans;
	return norphans;
}

/*
 * signal_orphans
 *		recover_orphans, step 2: terminate the backends still running the
 *		orphans' statements; one that is idle has finished its statement
 *		(it exits on its own, its client gone, and is told to hurry).  An
 *		orphan whose statement ended forgets its pid.  The backend status
 *		is read without the table lock: nobody but the tracker changes
 *		these tasks' backends.  Returns how many backends still run a
 *		statement; *nended gets how many statements had ended.
 */
static int
signal_orphans(Orphan *orphans, int norphans, int *nended)
{
	int			nsignaled = 0;

	*nended = 0;
	for (int i = 0; i < norphans; i++)
	{
		int			pid = orphans[i].pid;

		if (pid == 0 || orphans[i].ended)
			continue;
		if (!statement_running(pid))
			orphans[i].ended = true;
		(void) kill(pid, SIGTERM);
		if (orphans[i].ended)
			continue;
		nsignaled++;
	}
	for (int i = 0; i < norphans; i++)
	{
		if (orphans[i].ended)
		{
			orphans[i].pid = 0;
			(*nended)++;
		}
	}

	if (nsignaled > 0)
		ereport(LOG,
				(errmsg("task tracker terminated %d backends of tasks it no longer runs, and waits for them to exit before it requeues their tasks",
						nsignaled)));
	return nsignaled;
}

/*
 * wait_for_orphans
 *		recover_orphans, step 3: wait, looking on the latch, until the
 *		signaled backends have exited, for up to TT_ORPHAN_WAIT_MS.  A stop
 *		requested meanwhile ends the wait at once; returns true then (the
 *		tasks whose backends still run are left to the stop).
 */
static bool
wait_for_orphans(const Orphan *orphans, int norphans, int nsignaled)
{
	TimestampTz deadline;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TT_ORPHAN_WAIT_MS);
	while (nsignaled > 0 && !ShutdownRequestPending)
	{
		int			alive = 0;

		for (int i = 0; i < norphans; i++)
		{
			if (orphans[i].pid != 0 && BackendPidGetProc(orphans[i].pid) != NULL)
				alive++;
		}
		if (alive == 0 || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 TT_ORPHAN_POLL_MS, TT_WAIT_ORPHANS);
		ResetLatch(MyLatch);
	}
	return ShutdownRequestPending;
}

/*
 * orphan_failure
 *		Why an orphan must not run again (see recover_orphans), as an error
 *		message with its SQLSTATE in *sqlstate; NULL when it may be
 *		requeued (or is canceled).  alive: its signaled backend has not
 *		exited.  Caller holds the lock.
 */
static char *
orphan_failure(const TTTrackedTask *task, const Orphan *o, bool alive,
			   const char **sqlstate)
{
	if (task->status == TT_CANCEL_REQUESTED)
		return NULL;
	*sqlstate = "40003";
	if (task->committed)
	{
		*sqlstate = "58000";
		return psprintf("the task's statement completed (" INT64_FORMAT " rows), but the task tracker lost its result before it was stored; the statement is not run again",
						task->result_rows);
	}
	if (o->ended)
		return psprintf("the task tracker lost the session that ran the task's statement after the statement ended (backend pid %d); whether it committed is unknown, so it is not run again",
						task->backend_pid);
	if (alive)
		return psprintf("the backend (pid %d) that ran the task's statement did not exit within %d ms; whether the statement completed is unknown, so it is not run again",
						o->pid, TT_ORPHAN_WAIT_MS);
	if (task->backend_pid != 0 && !task->backend_local)
		return psprintf("the task tracker lost the session that ran the task's statement on a server it cannot signal (backend pid %d); whether the statement completed is unknown, so it is not run again",
						task->backend_pid);
	return NULL;
}

/*
 * settle_orphan
 *		recover_orphans, step 4: end an orphan permanently_failed when it
 *		must not run again (orphan_failure), else requeue or cancel it.
 *		Stopping (leave): a task whose backend still runs is left to the
 *		stop.
 */
static void
settle_orphan(const Orphan *o, bool leave)
{
	TTTrackedTask	   *task;
	const char *sqlstate = NULL;
	char	   *msg;
	bool		alive = (o->pid != 0 && BackendPidGetProc(o->pid) != NULL);

	if (leave && alive)
		return;

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &o->key, HASH_FIND, NULL);
	if (task == NULL || !TT_STATUS_IS_ACTIVE(task->status))
	{
		LWLockRelease(tt_shared->lock);
		return;
	}
	msg = orphan_failure(task, o, alive, &sqlstate);
	if (msg != NULL)
	{
		task = set_task_error(task, sqlstate, msg);
		if (task != NULL)
		{
			TTTrackedJob	   *job = tt_job_lookup(task->key.job_id, false, InvalidOid);

			tt_task_set_status(job, task, TT_PERMANENTLY_FAILED);
			tt_shared->failed++;
		}
	}
	else
		requeue_or_cancel(task);
	LWLockRelease(tt_shared->lock);
	tt_job_wake_pending();
}

/*
 * shorten_idle_deadlines
 *		After a reload: no idle session waits longer than the (possibly
 *		lowered) citus.task_tracker_idle_connection_timeout from now.  A
 *		raised timeout is left to the next time a session becomes idle.
 */
static void
shorten_idle_deadlines(TimestampTz now)
{
	TimestampTz limit = TimestampTzPlusMilliseconds(now,
													task_tracker_idle_connection_timeout);
	dlist_iter	iter;

	dlist_foreach(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (s->state == SESSION_IDLE && s->deadline > limit)
			s->deadline = limit;
	}
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
			/* a shorter idle timeout applies to the idle sessions at once */
			shorten_idle_deadlines(next_expiry_check);
		}
		if (ShutdownRequestPending)
			shutdown_and_exit();

		now = GetCurrentTimestamp();
		tt_stats_wakeup(now);

		process_sessions(now);
		process_workers(now);
		if (tt_shared->close_idle_request != tt_shared->close_idle_done)
			serve_close_idle();
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

		/* waiters of every task made final or job removed in this pass */
		tt_job_wake_pending();
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
		/* a canceled task worker is terminated then */
		if (rt->worker != NULL && rt->cancel_sent &&
			(nearest == 0 || rt->cancel_deadline < nearest))
			nearest = rt->cancel_deadline;
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
 *		A session of the task's role in its database free for it: an idle
 *		one if there is one; otherwise one still resetting with no task
 *		waiting for it, but only when the pair already has two sessions
 *		(with two, one resets while the other runs, so back-to-back tasks
 *		never wait for a reset).  Sessions are matched by name and by the
 *		OIDs their identity check found (check_identity), so a session of a
 *		role renamed since is never reused for a new role of the old name.
 */
static Session *
find_idle_session(RunningTask *rt)
{
	dlist_iter	iter;
	Session    *resetting = NULL;
	int			same = 0;

	dlist_foreach(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (s->state == SESSION_CONNECTING || s->state == SESSION_CHECKING ||
			s->role != rt->owner || s->dbid != rt->dbid ||
			strcmp(NameStr(s->user), NameStr(rt->user)) != 0 ||
			strcmp(NameStr(s->database), NameStr(rt->database)) != 0)
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
	int			slots = running_limit() - nrunning;
	RunningTask **picked;
	int			n = 0;

	if (slots <= 0 || dlist_is_empty(&tt_shared->pending))
		return;

	picked = palloc(sizeof(RunningTask *) * slots);

	/*
	 * Nothing in the locked section may raise an ERROR once a task left the
	 * queue: its memory is allocated without failing (a task that cannot
	 * get it stays queued for a later pass).
	 */
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	while (n < slots && !dlist_is_empty(&tt_shared->pending))
	{
		TTTrackedTask	   *task = dlist_container(TTTrackedTask, queue_node,
										   dlist_head_node(&tt_shared->pending));
		TTTrackedJob	   *job = tt_job_lookup(task->key.job_id, false, InvalidOid);
		const char *query = tt_text_get(task->query);
		size_t		qlen = strlen(query);
		RunningTask *rt;

		rt = MemoryContextAllocExtended(tracker_cxt, sizeof(RunningTask),
										MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO);
		if (rt == NULL)
			break;
		rt->query = MemoryContextAllocExtended(tracker_cxt, qlen + 1, MCXT_ALLOC_NO_OOM);
		if (rt->query == NULL)
		{
			pfree(rt);
			break;
		}
		memcpy(rt->query, query, qlen + 1);

		tt_task_dequeue(task);
		tt_task_set_status(job, task, TT_SCHEDULED);
		task->attempts++;
		task->started_at = now;
		task->backend_pid = 0;
		task->backend_local = false;
		task->committed = false;
		task->result_rows = -1;

		rt->key = task->key;
		rt->owner = task->owner;
		rt->user = task->user_name;
		rt->database = task->database_name;
		rt->dbid = task->dbid;
		rt->encoding = task->encoding;
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
 *
 *		A task here is in the running list, so it must never be left
 *		without a way forward: until it has a session, retry_at is set, so
 *		that an ERROR (out of memory, say) leaves it to retry_connects()
 *		rather than stranded; the Session is allocated before the
 *		connection is opened and without raising (a PGconn and its
 *		descriptor cannot leak), and a failure to get it is a transient
 *		refusal.
 */
static void
start_task(RunningTask *rt, TimestampTz now)
{
	const char *user = NameStr(rt->user);
	const char *db = NameStr(rt->database);
	Session    *s;
	TTConnTarget target;
	char	   *error;
	PGconn	   *conn;

	if (task_tracker_use_background_workers)
	{
		start_worker_task(rt, now);
		return;
	}

	rt->retry_at = TimestampTzPlusMilliseconds(now, TT_RECONNECT_MAX_MS);
	s = task_tracker_reuse_connections ? find_idle_session(rt) : NULL;
	if (s != NULL)
	{
		rt->retry_at = 0;
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
	if (nsessions >= 2 * running_limit())
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

	s = MemoryContextAllocExtended(tracker_cxt, sizeof(Session),
								   MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO);
	if (s == NULL)
	{
		connect_failed(rt, "out of memory", true);
		return;
	}

	memset(&target, 0, sizeof(target));
	target.host = connect_host;
	target.port = PostPortNumber;
	target.user = user;
	target.dbname = db;
	target.client_encoding = pg_encoding_to_char(rt->encoding);
	target.application_name = "task_tracker";
	PG_TRY();
	{
		conn = tt_conn_start(&target, &error);
	}
	PG_CATCH();
	{
		pfree(s);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (conn == NULL)
	{
		/* out of file descriptors or memory for now: transient */
		pfree(s);
		connect_failed(rt, error, true);
		return;
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		bool		transient;
		bool		auth;
		char	   *msg = connect_error(conn, &transient, &auth);

		pfree(s);
		tt_conn_finish(conn);
		rt->permanent = rt->permanent || auth;
		connect_failed(rt, msg, transient);
		return;
	}

	/* from here on nothing raises: the session is linked, the task too */
	s->conn = conn;
	s->state = SESSION_CONNECTING;
	namestrcpy(&s->user, user);
	namestrcpy(&s->database, db);
	s->events = WL_SOCKET_WRITEABLE;
	s->deadline = TimestampTzPlusMilliseconds(now, node_connection_timeout);
	s->task = rt;
	rt->session = s;
	rt->retry_at = 0;
	dlist_push_tail(&sessions, &s->node);
	nsessions++;
	tt_stats_set_connections(nsessions);
}

/*
 * connect_error
 *		The error of a failed session start-up as the task keeps it, and
 *		whether it is transient (tt_conn_connect_error: 53300, 57P03,
 *		EAGAIN, EMFILE, ENFILE).  An authentication failure
 *		(tt_is_auth_failure) sets *auth: its text names the role, the server
 *		and the mechanism tried, with the HINT of tt_auth_error, and the
 *		task is not tried again (see connect_failed).
 */
static char *
connect_error(PGconn *conn, bool *transient, bool *auth)
{
	char	   *msg = tt_conn_connect_error(conn, transient);

	*auth = false;
	if (tt_is_auth_failure(NULL, msg))
	{
		TTRemoteError err;
		char	   *target = psprintf("the local server (%s, port %s)",
									  PQhost(conn), PQport(conn));

		tt_auth_error(&err, msg, TT_AUTH_TRACKER, PQuser(conn), target, PQdb(conn));
		*transient = false;
		*auth = true;
		return tt_remote_error_text(&err);
	}
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
	TTTrackedTask	   *task;
	int			wait_ms;

	if (s != NULL)
	{
		s->task = NULL;
		rt->session = NULL;
		close_session(s);
	}
	rt->unusable = false;
	rt->refusals++;
	rt->retry_at = Min(backoff_retry_at(rt, now, &wait_ms), rt->refused_until);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL)
		(void) set_task_error(task, "08001", message);
	LWLockRelease(tt_shared->lock);

	ereport(DEBUG1,
			(errmsg_internal("task tracker: connection as \"%s\" for task (job " INT64_FORMAT ", task %d) refused, trying again in %d ms",
							 NameStr(rt->user), rt->key.job_id, rt->key.task_id, wait_ms),
			 errdetail_internal("%s", message)));
}

/*
 * backoff_retry_at
 *		The next back-off step of a task refused for a transient reason
 *		(a connection, a worker slot): from TT_RECONNECT_MIN_MS doubling to
 *		TT_RECONNECT_MAX_MS; each wait between half of it and all of it, at
 *		random, so that tasks refused together do not come back together.
 *		Returns when to try again; *wait_ms gets the wait.
 */
static TimestampTz
backoff_retry_at(RunningTask *rt, TimestampTz now, int *wait_ms)
{
	rt->backoff_ms = (rt->backoff_ms == 0) ? TT_RECONNECT_MIN_MS :
		Min(rt->backoff_ms * 2, TT_RECONNECT_MAX_MS);
	*wait_ms = rt->backoff_ms / 2 +
		(int) pg_prng_uint64_range(&pg_global_prng_state, 0, rt->backoff_ms / 2);
	return TimestampTzPlusMilliseconds(now, *wait_ms);
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
			start_task(rt, now);
	}
}

/*
 * connect_failed
 *		The task's session could not be established.
 *
 * A transient refusal (tt_conn_connect_error) does not end the attempt: the tracker
 * connects again after a back-off, for up to citus.node_connection_timeout
 * after the first refusal of the attempt; a refusal after that fails the
 * attempt with its error, like any other connection failure.  During a
 * shutdown no failure is the task's fault: its attempt is given back and it
 * is requeued.  Otherwise the attempt failed; an authentication failure
 * (the caller set rt->permanent) fails the task with no more attempts.
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
		TTTrackedTask	   *task;

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
	int			flush;

	if (rt->copy_len > 0)
		copy_sql = tt_copy_wrap(rt->query, rt->copy_len);
	flush = tt_send_statement(s->conn, copy_sql ? copy_sql : rt->query,
							  rt->copy_len == 0);
	if (copy_sql)
		pfree(copy_sql);
	if (flush < 0)
	{
		rt->unusable = true;
		fail_attempt(rt, "08006", tt_conn_error_message(s->conn));
		return false;
	}
	if (rt->copy_len == 0)
	{
		pfree(rt->query);
		rt->query = NULL;
	}
	s->events = WL_SOCKET_READABLE | (flush > 0 ? WL_SOCKET_WRITEABLE : 0);
	return true;
}

/*
 * send_query
 *		Send the task's query on its (connected, idle) session and mark it
 *		running.  A task whose cancel was requested while it waited for its
 *		session ends canceled here, its statement never sent.  An ERROR
 *		while the statement is prepared for sending (memory) fails the
 *		attempt and closes the session: a session left busy with nothing
 *		sent would wait forever.
 */
static void
send_query(RunningTask *rt)
{
	Session    *s = rt->session;
	TTTrackedTask	   *task;
	bool		cancel;
	int			pid;
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool sent = false;
	char		sqlstate[6];

	/*
	 * The backend is recorded before the statement is sent: a tracker that
	 * restarts must know whose exit to wait for (recover_orphans).
	 */
	pid = PQbackendPID(s->conn);
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	cancel = (task == NULL || task->status == TT_CANCEL_REQUESTED);
	if (task != NULL && task->status == TT_SCHEDULED)
	{
		TTTrackedJob	   *job = tt_job_lookup(rt->key.job_id, false, InvalidOid);

		tt_task_set_status(job, task, TT_RUNNING);
	}
	if (task != NULL && !cancel)
	{
		task->backend_pid = pid;
		task->backend_local = s->local;
	}
	LWLockRelease(tt_shared->lock);

	if (cancel)
	{
		/*
		 * Nothing was sent: the session stays idle (nothing to reset), and
		 * handle_cancels, in this pass or the next, ends the task.
		 */
		s->task = NULL;
		rt->session = NULL;
		rt->retry_at = 0;
		if (!task_tracker_reuse_connections)
			close_session(s);
		else
		{
			s->state = SESSION_IDLE;
			s->events = WL_SOCKET_READABLE;
			s->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  task_tracker_idle_connection_timeout);
		}
		SetLatch(MyLatch);
		return;
	}

	s->state = SESSION_BUSY;
	PG_TRY();
	{
		sent = dispatch_query(rt);
	}
	PG_CATCH();
	{
		char	   *msg = catch_error(cxt, sqlstate);

		rt->unusable = true;
		fail_attempt(rt, sqlstate, msg);
		pfree(msg);
		sent = false;
	}
	PG_END_TRY();
	if (!sent)
		finish_task(rt);
}

/*
 * fail_attempt
 *		Record the error of this attempt in the shared entry.
 */
static void
fail_attempt(RunningTask *rt, const char *sqlstate, const char *message)
{
	TTTrackedTask	   *task;

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
		(void) set_task_error(task, sqlstate, message);
	LWLockRelease(tt_shared->lock);
}

/*
 * set_task_error
 *		tt_task_set_error() that never raises an ERROR.  Caller holds the
 *		lock exclusively, and uses the returned entry (NULL: removed), not
 *		the one it passed.
 *
 * The text goes into the DSA area, which grows by creating a DSM segment;
 * dsm_create() raises an ERROR when that fails (no space in /dev/shm or
 * pg_dynshmem) even for an allocation that may fail softly.  Then the error
 * is logged, every LWLock is released (the area's, which the failed call
 * held, and the table's), the table's lock is taken again and the task
 * keeps the SQLSTATE without a text.
 */
static TTTrackedTask *
set_task_error(TTTrackedTask *task, const char *sqlstate, const char *text)
{
	TTTaskKey	key = task->key;
	volatile bool done = false;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		tt_task_set_error(task, sqlstate, text);
		done = true;
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		LWLockReleaseAll();
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	if (done)
		return task;

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &key, HASH_FIND, NULL);
	if (task != NULL)
	{
		/* tt_task_set_error freed the old text before it failed */
		Assert(!DsaPointerIsValid(task->error));
		strlcpy(task->sqlstate, sqlstate ? sqlstate : "XX000", sizeof(task->sqlstate));
	}
	return task;
}

/*
 * store_failed
 *		The task's result could not be kept (a write of its file, or memory
 *		for it, failed): remember the first such failure.  Its statement is
 *		not affected: the rest of the result is read and dropped, and the
 *		task does not run again (finish_task).
 */
static void
store_failed(RunningTask *rt, const char *sqlstate, const char *message)
{
	if (rt->store_failed)
		return;
	rt->store_failed = true;
	strlcpy(rt->store_sqlstate, sqlstate, sizeof(rt->store_sqlstate));
	rt->store_error = MemoryContextStrdup(tracker_cxt, message);
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

	store_failed(rt, code, msg);
}

/* the result is still being kept: neither the statement nor a write failed */
#define COLLECTING(rt)	(!(rt)->failed && !(rt)->store_failed)

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
 * check_encoding
 *		The rows of a task must arrive in its database's encoding, the
 *		client_encoding its session was started with: a task that set
 *		another one gets bytes the result cannot hold.  Its statement is
 *		not affected; its result is not kept (store_failed).
 */
static void
check_encoding(RunningTask *rt, PGconn *conn)
{
	check_result_encoding(rt, PQclientEncoding(conn));
}

/*
 * check_result_encoding
 *		check_encoding() for a client_encoding known as a number (a task
 *		worker reports the one it ended with).
 */
static void
check_result_encoding(RunningTask *rt, int encoding)
{
	if (encoding != rt->encoding && !rt->store_failed)
	{
		char	   *msg = psprintf("the task changed client_encoding to %s; its rows must arrive in its database's encoding, %s",
								   pg_encoding_to_char(encoding),
								   pg_encoding_to_char(rt->encoding));

		store_failed(rt, "22021", msg);
		pfree(msg);
	}
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
			if (COLLECTING(rt) && !tt_result_add_line(&rt->writer, buf, len))
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
		rt->cur_res = res;
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
				check_encoding(rt, conn);
				if (!COLLECTING(rt))
					break;
				start_result(rt, PQnfields(res));
				if (COLLECTING(rt) && !tt_result_add(&rt->writer, res))
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
					if (COLLECTING(rt))
						start_result(rt, PQnfields(res));
					break;
				}
				/* FALLTHROUGH */
			case PGRES_COPY_IN:
			case PGRES_COPY_BOTH:
				rt->unusable = true;
				fail_attempt(rt, "0A000", "COPY to or from the client is not supported in a task");
				rt->cur_res = NULL;
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
		rt->cur_res = NULL;
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
 * drain_results_safe
 *		drain_results() for process_sessions: an ERROR while reading or
 *		keeping the result (a result file that cannot be opened past the
 *		descriptor budget, memory) is the task's result failing, not the
 *		statement nor the tracker: the rest is read and dropped, and the
 *		session is read again in the next pass whatever its socket says.
 */
static bool
drain_results_safe(Session *s)
{
	RunningTask *rt = s->task;
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool done = false;
	char		sqlstate[6];

	s->recheck = false;
	PG_TRY();
	{
		done = drain_results(rt);
	}
	PG_CATCH();
	{
		char	   *msg = catch_error(cxt, sqlstate);

		if (rt->cur_res != NULL)
		{
			PQclear(rt->cur_res);
			rt->cur_res = NULL;
		}
		store_failed(rt, sqlstate, msg);
		pfree(msg);
		s->recheck = true;
		SetLatch(MyLatch);
		done = false;
	}
	PG_END_TRY();
	return done;
}

/*
 * free_running_task
 *		Give up a running task's slot and its private memory.  The struct
 *		is overwritten before it is freed, so that a use after the free
 *		(a caller reading rt->key afterwards, say) shows in every build, not
 *		only in one that clobbers freed memory.
 */
static void
free_running_task(RunningTask *rt)
{
	dlist_delete(&rt->node);
	nrunning--;
	if (rt->worker)
		tt_task_worker_release(rt->worker);
	if (rt->refusal)
		pfree(rt->refusal);
	if (rt->query)
		pfree(rt->query);
	if (rt->store_error)
		pfree(rt->store_error);
	memset(rt, 0x7F, sizeof(RunningTask));
	pfree(rt);
}

/*
 * catch_error
 *		In a PG_CATCH block of the tracker's own: take the error as data (in
 *		cxt), clear it, release every LWLock the failed code held, and log
 *		it.  Returns the error's message; *sqlstate gets its SQLSTATE.
 */
static char *
catch_error(MemoryContext cxt, char *sqlstate)
{
	ErrorData  *edata;
	char	   *msg;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	LWLockReleaseAll();
	RESUME_INTERRUPTS();
	strlcpy(sqlstate, unpack_sql_state(edata->sqlerrcode), 6);
	msg = pstrdup(edata->message ? edata->message : "unknown error");
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("task tracker could not keep a task's result: %s", msg)));
	FreeErrorData(edata);
	return msg;
}

/*
 * store_result
 *		Keep the complete result of a task whose statement completed: in
 *		shared memory when it is small and there is room, else as its file.
 *		Never raises an ERROR (the statement has committed: an ERROR here
 *		must not lose that record): growing the DSA area can fail with one
 *		(a DSM segment that cannot be created), and so can opening a file
 *		past the descriptor budget; such a failure, or a failed write, is
 *		a store_failed() of the task.  Returns the blob or sets *file.
 */
static dsa_pointer
store_result(RunningTask *rt, uint32 *blob_size, bool *file)
{
	TTResultWriter *w = &rt->writer;
	MemoryContext cxt = CurrentMemoryContext;
	volatile dsa_pointer blob = InvalidDsaPointer;
	volatile bool finished = false;
	char		sqlstate[6];

	if (tt_result_in_memory(w) && w->used <= task_result_inline_size &&
		tt_shared->result_bytes + w->used <= (int64) task_result_memory * 1024 &&
		(dsa_failed_at == 0 ||
		 TimestampDifferenceExceeds(dsa_failed_at, GetCurrentTimestamp(),
									TT_DSA_BACKOFF_MS)))
	{
		PG_TRY();
		{
			blob = tt_blob_store(w->buf, w->used);
		}
		PG_CATCH();
		{
			/*
			 * The area could not grow (a DSM segment that cannot be made:
			 * /dev/shm full, say): try the file instead, and keep results
			 * out of memory for a while rather than fail (and log) again
			 * for every task; a failed attempt may also leave memory
			 * behind in the area's bookkeeping.
			 */
			pfree(catch_error(cxt, sqlstate));
			blob = InvalidDsaPointer;
			dsa_failed_at = GetCurrentTimestamp();
		}
		PG_END_TRY();
		if (DsaPointerIsValid(blob))
		{
			*blob_size = w->used;
			tt_result_discard(w);
			return blob;
		}
	}

	PG_TRY();
	{
		finished = tt_result_finish(w);
		if (!finished)
			write_failed(rt);
	}
	PG_CATCH();
	{
		char	   *msg = catch_error(cxt, sqlstate);

		store_failed(rt, sqlstate, msg);
		pfree(msg);
		finished = false;
	}
	PG_END_TRY();
	*file = finished;
	return InvalidDsaPointer;
}

/*
 * finish_task
 *		The attempt is over: record the outcome, free the slot, and give the
 *		session back (or close it).
 *
 * A statement that ended without an error has committed (it ran in
 * autocommit, and the server sends its completion after the commit).
 * Before anything that can fail, that is recorded under the lock with
 * plain stores (TTTrackedTask.committed, its row count); then the result is kept
 * (store_result, which never raises); then the final state is set.  A
 * committed task never runs again: if its result could not be kept it
 * ends permanently_failed, with its row count and an error that says why
 * the result is missing.  A failed statement (rt->failed) is retried while
 * attempts remain, unless its failure is permanent (rt->permanent).
 */
static void
finish_task(RunningTask *rt)
{
	Session    *s = rt->session;
	TTTrackedTask	   *task;
	bool		ran = !rt->failed;
	int64		rows = -1;
	dsa_pointer blob = InvalidDsaPointer;
	uint32		blob_size = 0;
	bool		file = false;

	if (ran)
	{
		/* a COPY's rows are counted by the server (COPY n) */
		Assert(!rt->copy_out || rt->store_failed || rt->rows == rt->writer.rows);
		rows = (rt->opened && !rt->copy_out) ? rt->writer.rows : rt->rows;

		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		if (task != NULL)
		{
			task->committed = true;
			task->result_rows = rows;
		}
		LWLockRelease(tt_shared->lock);

		/*
		 * A changed client_encoding is reported after the statement's last
		 * result (ParameterStatus comes with ReadyForQuery), so this is the
		 * first place that sees one set by the statement itself.
		 */
		if (s != NULL && rt->opened)
			check_encoding(rt, s->conn);
		if (rt->opened && !rt->store_failed)
			blob = store_result(rt, &blob_size, &file);
	}
	if (rt->opened && !file && !DsaPointerIsValid(blob))
		tt_result_discard(&rt->writer);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL && ran && rt->store_failed &&
		task->status != TT_CANCEL_REQUESTED)
	{
		char	   *msg = psprintf("the task's statement completed (" INT64_FORMAT " rows), but its result could not be kept: %s; the statement is not run again",
								   rows, rt->store_error);

		task = set_task_error(task, rt->store_sqlstate, msg);
		pfree(msg);
	}
	if (task == NULL || task->status == TT_CANCEL_REQUESTED)
	{
		/* finished before we could stop it: the result is not wanted */
		if (file)
			tt_result_discard(&rt->writer);
		tt_blob_free(blob);
	}
	if (task != NULL)
	{
		TTTrackedJob	   *job = tt_job_lookup(rt->key.job_id, false, InvalidOid);

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
		else if (ran && !rt->store_failed)
		{
			task->has_file = file;
			if (DsaPointerIsValid(blob))
				tt_task_set_result(task, blob, blob_size);
			task->result_rows = rows;
			tt_task_set_error(task, NULL, NULL);
			tt_task_set_status(job, task, TT_SUCCEEDED);
			tt_shared->succeeded++;
		}
		else if (ran)
		{
			/* committed, result lost: the error says why (see above) */
			task->has_file = false;
			tt_task_set_status(job, task, TT_PERMANENTLY_FAILED);
			tt_shared->failed++;
		}
		else if (!rt->permanent && task->attempts < task_max_attempts &&
				 !SERVER_STOPPING())
		{
			tt_task_set_status(job, task, TT_FAILED);
			tt_task_enqueue(task);
		}
		else if (!rt->permanent && SERVER_STOPPING())
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
	tt_job_wake_pending();

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
		!tt_conn_is_idle(s->conn))
	{
		close_session(s);
		return;
	}
	s->state = SESSION_RESETTING;
	s->deadline = 0;
	tt_remote_query_start(&s->q, s->conn, "DISCARD ALL", false);
	advance_reset(s, GetCurrentTimestamp());
}

/*
 * close_session
 *		Close a session and free it (overwritten first, as a RunningTask is
 *		in free_running_task).
 */
static void
close_session(Session *s)
{
	dlist_delete(&s->node);
	nsessions--;
	if (s->q.result)
		PQclear(s->q.result);
	tt_conn_finish(s->conn);
	memset(s, 0x7F, sizeof(Session));
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
			start_identity_check(s);
			break;
		case PGRES_POLLING_FAILED:
			{
				bool		transient;
				bool		auth;
				char	   *msg = connect_error(s->conn, &transient, &auth);

				rt->unusable = true;
				rt->permanent = rt->permanent || auth;
				connect_failed(rt, msg, transient);
			}
			break;
		default:
			s->events = tt_poll_wait_events(st);
			break;
	}
}

/*
 * The one query a new session runs before its first task: who and where
 * it is (role and database OIDs, by the names it logged in with), its
 * backend's pid, and when its postmaster started (microseconds since the
 * Unix epoch), which with the pid tells whether the backend is one of this
 * server's.
 */
#define IDENTITY_QUERY \
	"SELECT r.oid, d.oid, pg_catalog.pg_backend_pid(), " \
	"(pg_catalog.extract('epoch', pg_catalog.pg_postmaster_start_time()) * 1000000)::pg_catalog.int8 " \
	"FROM pg_catalog.pg_roles r, pg_catalog.pg_database d " \
	"WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.\"session_user\"() " \
	"AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()"

/*
 * start_identity_check
 *		A new session is established: send the identity query (see
 *		check_identity) without waiting.  The session keeps its connect
 *		deadline until the answer is in.
 */
static void
start_identity_check(Session *s)
{
	s->state = SESSION_CHECKING;
	tt_remote_query_start(&s->q, s->conn, IDENTITY_QUERY, false);
	s->q.keep_result = true;
	(void) check_identity(s);
}

/*
 * check_identity
 *		Read the identity query's answer and compare it with the task: the
 *		session must be logged in as the role that assigned it, by OID, in
 *		the database it was assigned in, by OID.  A role or database renamed
 *		and another created under the old name while the task was queued
 *		would otherwise run it as someone else, or somewhere else: such a
 *		task fails permanently (28000 for the role, 3D000 for the database).
 *		The backend is "local" (the tracker may signal it) when its pid is a
 *		backend of this server with that role and database and its
 *		postmaster started when ours did.  Returns false while the answer is
 *		incomplete.
 */
static bool
check_identity(Session *s)
{
	RunningTask *rt = s->task;
	PGresult   *res;

	tt_remote_query_advance(&s->q);
	if (!s->q.done)
	{
		s->events = s->q.events;
		return false;
	}
	res = s->q.result;
	s->q.result = NULL;
	if (!s->q.ok)
	{
		/* the query failed, or the connection (08006) */
		fail_attempt(rt, s->q.err.sqlstate, tt_remote_error_text(&s->q.err));
	}
	else if (res != NULL && PQntuples(res) == 1 && PQnfields(res) == 4)
	{
		int			pid = atoi(PQgetvalue(res, 0, 2));
		int64		started = strtoi64(PQgetvalue(res, 0, 3), NULL, 10);
		int64		our_start = PgStartTime +
			(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

		s->role = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
		s->dbid = (Oid) strtoul(PQgetvalue(res, 0, 1), NULL, 10);
		s->local = (started == our_start && pid == PQbackendPID(s->conn) &&
					is_our_backend(pid, s->role, s->dbid));
	}
	else
	{
		/* no row: the role or database was dropped since */
		rt->permanent = true;
		fail_attempt(rt, "28000",
					 psprintf("could not identify the session of role \"%s\" in database \"%s\": the role or the database no longer exists under that name",
							  NameStr(rt->user), NameStr(rt->database)));
	}
	if (res != NULL)
		PQclear(res);

	if (!rt->failed && s->role != rt->owner)
	{
		rt->permanent = true;
		fail_attempt(rt, "28000",
					 psprintf("role \"%s\" is not the role that assigned the task (OID %u, now %u): it was renamed or dropped, and another role took its name",
							  NameStr(rt->user), rt->owner, s->role));
	}
	else if (!rt->failed && s->dbid != rt->dbid)
	{
		rt->permanent = true;
		fail_attempt(rt, "3D000",
					 psprintf("database \"%s\" is not the database the task was assigned in (OID %u, now %u): it was renamed or dropped, and another database took its name",
							  NameStr(rt->database), rt->dbid, s->dbid));
	}
	if (rt->failed)
	{
		rt->unusable = true;
		finish_task(rt);
		return true;
	}
	s->deadline = 0;
	send_query(rt);
	return true;
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
	if (s->ready)
		advance_reset(s, now);
}

/*
 * advance_reset
 *		Move DISCARD ALL on: the session becomes idle (or runs the task
 *		waiting for it) once it is done, or is closed when it failed.
 */
static void
advance_reset(Session *s, TimestampTz now)
{
	tt_remote_query_advance(&s->q);
	if (!s->q.done)
	{
		s->events = s->q.events;
		return;
	}
	if (!s->q.ok)
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
			case SESSION_CHECKING:
				if (s->ready)
					(void) check_identity(s);
				else if (now >= s->deadline)
				{
					RunningTask *rt = s->task;

					rt->unusable = true;
					fail_attempt(rt, "08001",
								 psprintf("could not connect to the local server as \"%s\" within %d ms",
										  NameStr(s->user), node_connection_timeout));
					finish_task(rt);
				}
				break;
			case SESSION_BUSY:
				if ((s->ready || s->recheck) && drain_results_safe(s))
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
 * signal_backend
 *		Send sig (SIGINT: cancel the statement; SIGTERM: end the session) to
 *		a session's backend, but only when it is a backend of this server
 *		(Session.local, checked again now: a pid that came over the wire may
 *		belong to any process, a postmaster even, when
 *		citus.task_tracker_host points at a pooler or another cluster).
 *		Any other backend gets nothing, not even a cancel request: libpq of
 *		PostgreSQL 15 can only send one blocking (PQcancel, with no
 *		timeout), and a frozen pooler would hang the tracker outside every
 *		wait.  The caller closes such a session instead; the server stops
 *		the statement once it notices its client is gone (at once when it
 *		writes to it, else within client_connection_check_interval, which
 *		the tracker's sessions should have set on such a server).  Returns
 *		true when the signal was sent, false when it could not be.
 */
static bool
signal_backend(Session *s, int sig)
{
	int			pid = PQbackendPID(s->conn);

	if (pid <= 0)
		return false;
	if (s->local && is_our_backend(pid, s->role, s->dbid))
	{
		(void) kill(pid, sig);
		return true;
	}
	return false;
}

/*
 * terminate_backend
 *		Stop the statement a busy session runs: SIGTERM to its backend, as
 *		pg_terminate_backend does, when it is one of this server's; nothing
 *		otherwise, the caller closes the session (signal_backend).  (A query cancel, SIGINT, is
 *		ignored by a backend that has not yet read the statement, so it
 *		could be lost; the session is not reused afterwards anyway.)
 */
static void
terminate_backend(Session *s)
{
	if (s->state == SESSION_BUSY)
		(void) signal_backend(s, SIGTERM);
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
	/* a task worker is ended (started or not), then left (free_running_task) */
	if (rt->worker != NULL && cancel_backend)
		(void) tt_task_worker_signal(rt->worker, SIGTERM);
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
finish_dropped_job(TTTrackedJob *job)
{
	dlist_mutable_iter iter;
	char	   *detached;

	dlist_foreach_modify(iter, &job->tasks)
		tt_task_remove(job, dlist_container(TTTrackedTask, job_node, iter.cur));
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
	TTTrackedJob	   *job;

	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);
		TTTrackedTask	   *task;
		TTTaskKey	key;
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

			if (!rt->cancel_sent && signal_backend(s, SIGINT))
			{
				rt->cancel_sent = true;
				s->deadline = TimestampTzPlusMilliseconds(now, TT_CANCEL_GRACE_MS);
				continue;
			}
			/* not a backend of ours: its session is closed at once */
			if (rt->cancel_sent && now < s->deadline)
				continue;
		}
		if (rt->worker != NULL && !SERVER_STOPPING())
		{
			TimestampTz now = GetCurrentTimestamp();

			/* the same for a task worker; one not started yet is ended */
			if (!rt->cancel_sent && tt_task_worker_signal(rt->worker, SIGINT))
			{
				rt->cancel_sent = true;
				rt->cancel_deadline = TimestampTzPlusMilliseconds(now, TT_CANCEL_GRACE_MS);
				continue;
			}
			if (rt->cancel_sent && now < rt->cancel_deadline)
				continue;
		}

		/* stop_running_task frees rt: keep its key */
		key = rt->key;
		stop_running_task(rt, true);
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &key, HASH_FIND, NULL);
		if (task != NULL)
		{
			job = tt_job_lookup(task->key.job_id, false, InvalidOid);
			task->has_file = false;
			tt_task_set_status(job, task, TT_CANCELED);
		}
		LWLockRelease(tt_shared->lock);
		tt_job_wake_pending();
	}

	/* tasks whose cancel was requested while not in our hands */
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	if (tt_shared->ndropping > 0)
	{
		hash_seq_init(&seq, tt_job_hash);
		while ((job = hash_seq_search(&seq)) != NULL)
		{
			if (job->dropping && job->nactive == 0)
				finish_dropped_job(job);
		}
	}
	LWLockRelease(tt_shared->lock);
	tt_job_wake_pending();
	remove_detached_dirs();
}

/* how long a backend waits for the tracker to close its idle sessions */
#define TT_CLOSE_IDLE_WAIT_MS	5000

/*
 * tt_close_idle_sessions
 *		In a backend, before a command that needs a database nobody is
 *		connected to (the ProcessUtility hook, task_tracker.c): ask the
 *		tracker to close its idle sessions (serve_close_idle) and wait on
 *		TTShared->close_idle_cv until it has, at most TT_CLOSE_IDLE_WAIT_MS.
 *		Closing every idle session, not only those of one database, keeps
 *		concurrent requests simple; idle sessions are only a cache.  Does
 *		nothing when the tracker holds no session or does not run; after
 *		the wait the command runs whatever happened (and fails on its own
 *		if the database is still in use, e.g. by a running task).
 */
void
tt_close_idle_sessions(void)
{
	uint64		request;
	TimestampTz deadline;

	if (tt_shared == NULL || pg_atomic_read_u32(&tt_shared->nconnections) == 0)
		return;

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	if (tt_shared->tracker_pid == 0 || tt_shared->tracker_latch == NULL)
	{
		LWLockRelease(tt_shared->lock);
		return;
	}
	request = ++tt_shared->close_idle_request;
	SetLatch(tt_shared->tracker_latch);
	LWLockRelease(tt_shared->lock);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), TT_CLOSE_IDLE_WAIT_MS);
	ConditionVariablePrepareToSleep(&tt_shared->close_idle_cv);
	for (;;)
	{
		bool		done;
		long		left;

		LWLockAcquire(tt_shared->lock, LW_SHARED);
		done = (tt_shared->close_idle_done >= request || tt_shared->tracker_pid == 0);
		LWLockRelease(tt_shared->lock);
		if (done)
			break;
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		(void) ConditionVariableTimedSleep(&tt_shared->close_idle_cv, left,
										  TT_WAIT_CLOSE_IDLE);
	}
	ConditionVariableCancelSleep();
}

/*
 * serve_close_idle
 *		A backend asked for every idle session to be closed
 *		(tt_close_idle_sessions: DROP DATABASE and the other commands that
 *		need a database nobody is connected to): close them, including
 *		those resetting for no task, and tell it.  The backends behind them
 *		exit on their own; DROP DATABASE waits for that.
 */
static void
serve_close_idle(void)
{
	dlist_mutable_iter iter;
	uint64		request;

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	request = tt_shared->close_idle_request;
	LWLockRelease(tt_shared->lock);

	dlist_foreach_modify(iter, &sessions)
	{
		Session    *s = dlist_container(Session, node, iter.cur);

		if (s->state == SESSION_IDLE ||
			(s->state == SESSION_RESETTING && s->task == NULL))
			close_session(s);
	}

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	tt_shared->close_idle_done = request;
	LWLockRelease(tt_shared->lock);
	ConditionVariableBroadcast(&tt_shared->close_idle_cv);
}

/*
 * tt_running_limit_budget
 *		The most tasks the tracker's file descriptors allow at once (the
 *		same in every process: max_safe_fds comes from the postmaster).
 *		The task_tracker.tracker view shows the smaller of this and the
 *		setting, the limit actually in force.
 */
int
tt_running_limit_budget(void)
{
	return Max((max_safe_fds / 3 - TT_FD_RESERVE) / 2, 1);
}

/*
 * running_limit
 *		How many tasks run at once: citus.max_running_tasks_per_node, but
 *		never more than the tracker's file descriptors allow (see
 *		TT_FD_RESERVE: two sessions and one result file per task), so that
 *		a busy tracker does not run out of them and fail attempts for it.
 *		A clamp is logged once per value of the setting.
 */
static int
running_limit(void)
{
	static int	logged_for = -1;
	int			budget = tt_running_limit_budget();

	if (max_running_tasks_per_node <= budget)
		return max_running_tasks_per_node;
	if (logged_for != max_running_tasks_per_node)
	{
		logged_for = max_running_tasks_per_node;
		ereport(LOG,
				(errmsg("task tracker runs at most %d tasks at once, not %d (citus.max_running_tasks_per_node): its file descriptors allow no more",
						budget, max_running_tasks_per_node),
				 errdetail("Each running task takes up to two connections and one result file; this process may open %d of each kind.",
						   max_safe_fds / 3),
				 errhint("Raise max_files_per_process (and the operating system's limit on open files) to run more.")));
	}
	return budget;
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
	TTTrackedJob	   *job;
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
	tt_job_wake_pending();
	remove_detached_dirs();

	if (dropped > 0)
	{
		ereport(LOG,
				(errmsg("task tracker removed %d jobs nobody asked about for %d s",
						dropped, task_tracker_job_expiry)));
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
	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);

		if (rt->worker != NULL)
			(void) tt_task_worker_signal(rt->worker, SIGTERM);
	}

	/*
	 * A task waiting to connect again after a transient refusal never
	 * started: back to the queue, its attempt given back.
	 */
	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);
		TTTrackedTask	   *task;

		if (rt->session != NULL || rt->worker != NULL || rt->retry_at == 0)
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
		tt_job_wake_pending();
		free_running_task(rt);
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
		TTTrackedTask	   *task;

		stop_running_task(rt, cancel_backends);
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &key, HASH_FIND, NULL);
		if (task != NULL)
			requeue_or_cancel(task);
		LWLockRelease(tt_shared->lock);
	}
	tt_job_wake_pending();
}

/*
 * leave_running_for_restart
 *		The tracker alone is stopping (pg_terminate_backend; the server
 *		keeps running) and some statements did not end within the grace:
 *		close their sessions but leave their tasks active, with the pid of
 *		their backend, so that the tracker that starts next terminates
 *		those backends and waits for them to exit before it requeues the
 *		tasks (recover_orphans).  Requeueing them now could run a statement
 *		a second time while its first run still goes on.
 */
static void
leave_running_for_restart(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
		stop_running_task(dlist_container(RunningTask, node, iter.cur), false);
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
		process_workers(now);
	}
	if (nrunning > 0 && !postmaster_is_stopping())
		leave_running_for_restart();
	else
		requeue_all_running(false);
	dlist_foreach_modify(iter, &sessions)
		close_session(dlist_container(Session, node, iter.cur));
	handle_cancels();
	tt_job_wake_pending();
	tt_persist_save();
	proc_exit(1);
}


/* ---------------------------------------------------------------------
 * Tasks in background workers (citus.task_tracker_use_background_workers;
 * the workers themselves: src/worker/task_worker.c).  A RunningTask then
 * has a TTTaskWorker instead of a Session; everything after the statement
 * (the result, finish_task, cancel, stop) is shared with libpq sessions.
 * ---------------------------------------------------------------------
 */

/*
 * wait_for_worker_slot
 *		No background worker slot was free (max_worker_processes): a
 *		transient condition the task waits out, however long, as
 *		"scheduled" with no worker; it tries again after a back-off (and
 *		at once when one of the tracker's own workers ends), a deadline of
 *		the tracker's one wait.  The task's error says why it waits, and a
 *		wait longer than citus.node_connection_timeout is logged once.
 */
static void
wait_for_worker_slot(RunningTask *rt, TimestampTz now)
{
	int			wait_ms;
	bool		first = (rt->slot_wait_since == 0);

	rt->retry_at = backoff_retry_at(rt, now, &wait_ms);
	if (first)
		rt->slot_wait_since = now;
	else if (!rt->slot_logged &&
			 TimestampDifferenceExceeds(rt->slot_wait_since, now, node_connection_timeout))
	{
		rt->slot_logged = true;
		ereport(LOG,
				(errmsg("task tracker waits for a background worker slot for task (job " INT64_FORMAT ", task %d): all max_worker_processes (%d) are in use",
						rt->key.job_id, rt->key.task_id, max_worker_processes),
				 errhint("The task tracker needs one background worker per running task (citus.max_running_tasks_per_node) besides the server's other background and parallel workers; raise max_worker_processes.")));
	}
	if (first)
	{
		TTTrackedTask *task;
		char	   *msg = psprintf("waiting for a background worker slot: all max_worker_processes (%d) are in use",
								   max_worker_processes);

		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
		if (task != NULL)
			(void) set_task_error(task, "53000", msg);
		LWLockRelease(tt_shared->lock);
		pfree(msg);
	}
}

/*
 * start_worker_task
 *		start_task() in background-worker mode: start a task worker for the
 *		task's statement (as COPY when it runs as COPY) and mark the task
 *		running, as send_query does.  A task whose cancel was requested is
 *		left to handle_cancels, nothing started.  No worker slot: the task
 *		waits for one (wait_for_worker_slot).  No DSM segment, or an ERROR
 *		while starting (memory, /dev/shm full): a transient refusal, as a
 *		connection refused for lack of descriptors is (connect_failed).
 *		Until a worker is registered retry_at is set, so that an ERROR
 *		leaves the task to retry_connects rather than stranded.
 */
static void
start_worker_task(RunningTask *rt, TimestampTz now)
{
	TTTaskWorkerSpec spec;
	TTTrackedTask *task;
	TTTaskWorker *volatile w = NULL;
	volatile bool no_slot = false;
	char	   *volatile error = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	bool		cancel;

	rt->retry_at = TimestampTzPlusMilliseconds(now, TT_RECONNECT_MAX_MS);
	memset(&spec, 0, sizeof(spec));
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	cancel = (task == NULL || task->status == TT_CANCEL_REQUESTED);
	if (!cancel)
	{
		spec.attempt = task->attempts;
		spec.started_at = task->started_at;
		/* a worker before this one in the attempt (a COPY refused) is gone */
		task->backend_pid = 0;
		task->backend_local = false;
	}
	LWLockRelease(tt_shared->lock);
	if (cancel)
	{
		rt->retry_at = 0;
		SetLatch(MyLatch);
		return;
	}

	spec.key = rt->key;
	spec.owner = rt->owner;
	spec.dbid = rt->dbid;
	spec.encoding = rt->encoding;
	spec.copy_wrap = (rt->copy_len > 0);
	PG_TRY();
	{
		bool		full = false;
		char	   *sql;

		MemoryContextSwitchTo(tracker_cxt);
		sql = spec.copy_wrap ? tt_copy_wrap(rt->query, rt->copy_len) : rt->query;
		spec.sql = sql;
		w = tt_task_worker_start(&spec, &full);
		no_slot = full;
		if (spec.copy_wrap)
			pfree(sql);
		MemoryContextSwitchTo(cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		LWLockReleaseAll();
		RESUME_INTERRUPTS();
		error = pstrdup(edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();

	if (w == NULL)
	{
		if (no_slot && error == NULL)
			wait_for_worker_slot(rt, now);
		else
			connect_failed(rt, error ? error : "could not create a dynamic shared memory segment for the task's background worker", true);
		return;
	}

	rt->worker = w;
	rt->retry_at = 0;
	rt->slot_wait_since = 0;
	rt->backoff_ms = 0;
	rt->command_done = false;
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &rt->key, HASH_FIND, NULL);
	if (task != NULL && task->status == TT_SCHEDULED)
		tt_task_set_status(tt_job_lookup(rt->key.job_id, false, InvalidOid),
						   task, TT_RUNNING);
	LWLockRelease(tt_shared->lock);
}

/*
 * drain_worker
 *		Apply what the task's worker reported to the task, without waiting,
 *		as drain_input does for a session: rows into the result, the
 *		command's row count, the first error.  Returns true when the
 *		worker's run is over (done, or gone); after TT_WORKER_EVENTS events
 *		it sets the latch and returns false, so that a large result does
 *		not hold up the other tasks.  An error after the statement
 *		committed cannot undo it and is only logged.
 */
static bool
drain_worker(RunningTask *rt)
{
	TTWorkerEvent ev;

	for (int i = 0; i < TT_WORKER_EVENTS; i++)
	{
		tt_task_worker_next(rt->worker, &ev);
		switch (ev.kind)
		{
			case TT_WEV_NONE:
				return false;
			case TT_WEV_ROWS:
				if (COLLECTING(rt))
					start_result(rt, ev.ncols);
				break;
			case TT_WEV_COPY:
				rt->copy_out = true;
				rt->copying = true;
				if (COLLECTING(rt))
					start_result(rt, ev.ncols);
				break;
			case TT_WEV_LINE:
				rt->received++;
				if (COLLECTING(rt) && !tt_result_add_line(&rt->writer, ev.data, ev.len))
					write_failed(rt);
				break;
			case TT_WEV_COPY_DONE:
				rt->copying = false;
				break;
			case TT_WEV_COMMAND:
				rt->rows = ev.rows;
				rt->command_done = true;
				break;
			case TT_WEV_ERROR:
				if (rt->command_done)
					ereport(LOG,
							(errmsg("task tracker: the worker of task (job " INT64_FORMAT ", task %d) failed after its statement committed: %s",
									rt->key.job_id, rt->key.task_id, ev.error.message)));
				else if (ev.startup && rt->refusal == NULL &&
						 (strcmp(ev.error.sqlstate, "53300") == 0 ||
						  strcmp(ev.error.sqlstate, "57P03") == 0))
					rt->refusal = MemoryContextStrdup(tracker_cxt,
													  tt_remote_error_text(&ev.error));
				else if (rt->copy_len > 0 && !rt->copy_out && !rt->failed &&
						 strcmp(ev.error.sqlstate, "0A000") == 0)
					rt->resend_plain = true;	/* see drain_input */
				else
					fail_attempt(rt, ev.error.sqlstate, tt_remote_error_text(&ev.error));
				break;
			case TT_WEV_DONE:
				check_result_encoding(rt, ev.encoding);
				return true;
			case TT_WEV_GONE:
				if (!rt->failed && !rt->command_done && !rt->resend_plain &&
					rt->refusal == NULL)
					fail_attempt(rt, "08006", "the task's background worker exited before it reported the statement's outcome");
				return true;
		}
	}
	SetLatch(MyLatch);
	return false;
}

/*
 * drain_worker_safe
 *		drain_worker() for process_workers: an ERROR while keeping the
 *		result (a file past the descriptor budget, memory) is the result
 *		failing, not the statement, as in drain_results_safe.
 */
static bool
drain_worker_safe(RunningTask *rt)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool done = false;
	char		sqlstate[6];

	PG_TRY();
	{
		done = drain_worker(rt);
	}
	PG_CATCH();
	{
		char	   *msg = catch_error(cxt, sqlstate);

		store_failed(rt, sqlstate, msg);
		pfree(msg);
		SetLatch(MyLatch);
		done = false;
	}
	PG_END_TRY();
	return done;
}

/*
 * end_worker_run
 *		The task's worker is done or gone: let it go, then finish the task;
 *		or, in the same attempt, start a worker for the plain query when
 *		the server refused it as COPY (drain_input's resend; not while the
 *		server stops: the task is requeued), or try again later when the
 *		login was refused for a transient reason (connect_failed).  Tasks
 *		waiting for a worker slot try at once.
 */
static void
end_worker_run(RunningTask *rt, TimestampTz now)
{
	dlist_iter	iter;

	tt_task_worker_release(rt->worker);
	rt->worker = NULL;
	dlist_foreach(iter, &running)
	{
		RunningTask *other = dlist_container(RunningTask, node, iter.cur);

		if (other->worker == NULL && other->slot_wait_since != 0)
			other->retry_at = now;
	}

	if (rt->resend_plain && !rt->failed && SERVER_STOPPING())
	{
		/* nothing ran; no new worker now: back to the queue (finish_task) */
		fail_attempt(rt, "57P01", "the server is stopping");
		finish_task(rt);
	}
	else if (rt->resend_plain && !rt->failed)
	{
		rt->resend_plain = false;
		rt->copy_len = 0;
		start_worker_task(rt, now);
	}
	else if (rt->refusal != NULL && !rt->failed)
	{
		char	   *msg = rt->refusal;

		rt->refusal = NULL;
		connect_failed(rt, msg, true);
		pfree(msg);
	}
	else
		finish_task(rt);
}

/*
 * process_workers
 *		Read every task worker's reports (the queues set the tracker's
 *		latch; a worker that exits is reported by the postmaster, which
 *		sets it too) and end the runs that are over.
 */
static void
process_workers(TimestampTz now)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
	{
		RunningTask *rt = dlist_container(RunningTask, node, iter.cur);

		if (rt->worker != NULL && drain_worker_safe(rt))
			end_worker_run(rt, now);
	}
}
