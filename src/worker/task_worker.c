/*-------------------------------------------------------------------------
 *
 * task_worker.c
 *	  Task workers: with citus.task_tracker_use_background_workers on, the
 *	  tracker runs each task attempt in a dynamic background worker that
 *	  attaches to the task's database as the task's owner, by OID
 *	  (BackgroundWorkerInitializeConnectionByOid): no password, pg_hba.conf
 *	  line or .pgpass is involved, but the login rules still apply
 *	  (rolcanlogin, CONNECT privilege, datallowconn), as do the settings
 *	  of the role and database (InitPostgres's process_settings).
 *
 *	  The tracker side (tt_task_worker_start, _next, _signal, _release)
 *	  creates a DSM segment holding a TTWorkerShared header, the statement
 *	  and one shm_mq from the worker to the tracker, registers the worker
 *	  (bgw_notify_pid: the postmaster sets the tracker's latch when it
 *	  starts or stops) and reads what it sends without ever blocking: the
 *	  queue sets the tracker's latch on every message.
 *
 *	  The worker side (tt_task_worker_main) redirects its frontend
 *	  protocol output into the queue (pq_redirect_to_shm_mq, as parallel
 *	  workers do) before it logs in, so every error it raises, from the
 *	  login checks on, reaches the tracker as an ErrorResponse with its
 *	  SQLSTATE, DETAIL and HINT.  It then runs the one statement as
 *	  PostgreSQL's simple-query path runs a top-level statement (parse,
 *	  analyze, plan, a portal run with isTopLevel, commit, then
 *	  CommandComplete), so VACUUM and CREATE INDEX CONCURRENTLY work,
 *	  statement_timeout applies, and SIGINT cancels the statement.  What
 *	  goes into the queue:
 *		'T' int32 ncols		a plain statement's rows begin
 *		'D' line			one of its rows, escaped as COPY text
 *		'H' 'd' 'c'			the COPY TO STDOUT the tracker wrapped a
 *							query in, as the server sends it
 *		'C' tag				CommandComplete, sent after the commit
 *		'E' 'N'				ErrorResponse, NoticeResponse
 *		'Z' int32 encoding	done; client_encoding at the end
 *	  The rows are therefore the same bytes the tracker stores from a
 *	  libpq session: COPY's own lines, or the text output of each value
 *	  escaped by tt_copy_text_append, as tt_result_add does.
 *
 *	  Exactly once: the worker records its pid in the task's shared entry
 *	  before it runs anything, and only when the entry still shows the
 *	  attempt it was started for by the tracker that started it
 *	  (claim_task): a restarted tracker either sees the pid (and waits for
 *	  the worker to exit, recover_orphans) or has already requeued the
 *	  task, and then the worker runs nothing.  After the commit the worker
 *	  holds interrupts until CommandComplete is in the queue.
 *
 * Locking
 *	  TTWorkerShared: every field is written by the tracker before the
 *	  worker is registered and read-only afterwards, except logged_in,
 *	  which only the worker writes (before the messages it sends after
 *	  logging in; the queue's barriers order it for the tracker).  The
 *	  queue has its own locking.  claim_task takes TTShared->lock
 *	  exclusively to record the worker's pid in the task entry.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/printtup.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "libpq/pqformat.h"
#include "libpq/pqmq.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/ps_status.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "common/tt_copy_text.h"
#include "worker/tt_task_worker.h"

/* bytes of the queue from a worker to the tracker */
#define TT_WORKER_QUEUE_SIZE	(256 * 1024)

/* the header of a task worker's DSM segment */
typedef struct TTWorkerShared
{
	TTTaskKey	key;			/* the task */
	Oid			owner;			/* role to run as */
	Oid			dbid;			/* database to attach to */
	int			encoding;		/* its encoding: the client_encoding */
	int32		attempt;		/* attempt the worker was started for */
	TimestampTz started_at;		/* ... picked then (TTTrackedTask.started_at) */
	int			tracker_pid;	/* the tracker that started it */
	bool		copy_wrap;		/* sql is the tracker's COPY (...) TO STDOUT */
	volatile bool logged_in;	/* worker: past the login checks */
	volatile bool abandoned;	/* tracker: it stopped reading */
	Size		queue_offset;	/* where the shm_mq starts */
	char		sql[FLEXIBLE_ARRAY_MEMBER];	/* the statement */
} TTWorkerShared;

/* the tracker's handle on one task worker */
struct TTTaskWorker
{
	dsm_segment *seg;			/* the segment (mapping pinned) */
	TTWorkerShared *shared;		/* its header */
	shm_mq_handle *mqh;			/* receiving end of the queue */
	BackgroundWorkerHandle *handle;	/* the worker */
	bool		gone;			/* the queue was found detached */
};

/* a plain statement's rows, escaped as COPY text ('T' and 'D') */
typedef struct RowReceiver
{
	DestReceiver pub;
	TTWorkerShared *shared;		/* the worker's segment */
	int			natts;			/* columns */
	FmgrInfo   *out;			/* their output functions */
	MemoryContext rowcxt;		/* reset per row */
	StringInfoData line;		/* the row being built */
} RowReceiver;

static int64 command_rows(const char *tag);
static bool claim_task(TTWorkerShared *shared);
static void run_statement(TTWorkerShared *shared);
static DestReceiver *create_row_receiver(TTWorkerShared *shared);


/* ---------------------------------------------------------------------
 * The tracker's side
 * ---------------------------------------------------------------------
 */

/*
 * tt_task_worker_start
 *		Create the segment and queue for one attempt of a task and register
 *		its worker.  Returns NULL with *no_slot set when every background
 *		worker slot (max_worker_processes) is taken, or NULL without it when
 *		no DSM segment could be had (both transient).  May raise an ERROR
 *		(out of memory, dsm_create failing); nothing is left behind then
 *		but memory in the caller's context.
 */
TTTaskWorker *
tt_task_worker_start(const TTTaskWorkerSpec *spec, bool *no_slot)
{
	size_t		sqllen = strlen(spec->sql);
	Size		offset = MAXALIGN(offsetof(TTWorkerShared, sql) + sqllen + 1);
	TTTaskWorker *w;
	TTWorkerShared *shared;
	shm_mq	   *mq;
	BackgroundWorker worker;

	*no_slot = false;
	w = palloc0(sizeof(TTTaskWorker));
	w->seg = dsm_create(offset + TT_WORKER_QUEUE_SIZE, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (w->seg == NULL)
	{
		pfree(w);
		return NULL;
	}
	/* the tracker runs outside any resource owner: keep it until released */
	dsm_pin_mapping(w->seg);

	shared = dsm_segment_address(w->seg);
	memset(shared, 0, offsetof(TTWorkerShared, sql));
	shared->key = spec->key;
	shared->owner = spec->owner;
	shared->dbid = spec->dbid;
	shared->encoding = spec->encoding;
	shared->attempt = spec->attempt;
	shared->started_at = spec->started_at;
	shared->tracker_pid = MyProcPid;
	shared->copy_wrap = spec->copy_wrap;
	shared->queue_offset = offset;
	memcpy(shared->sql, spec->sql, sqllen + 1);
	w->shared = shared;

	mq = shm_mq_create((char *) shared + offset, TT_WORKER_QUEUE_SIZE);
	shm_mq_set_receiver(mq, MyProc);
	w->mqh = shm_mq_attach(mq, w->seg, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "task_tracker");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tt_task_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "task tracker worker for job " INT64_FORMAT " task %d",
			 spec->key.job_id, spec->key.task_id);
	snprintf(worker.bgw_type, BGW_MAXLEN, "task tracker worker");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(w->seg));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &w->handle))
	{
		*no_slot = true;
		dsm_detach(w->seg);
		pfree(w);
		return NULL;
	}
	/* a worker that dies before attaching shows as a detached queue */
	shm_mq_set_handle(w->mqh, w->handle);
	return w;
}

/*
 * command_rows
 *		The row count of a CommandComplete tag, as libpq's PQcmdTuples
 *		reads it (0 when the tag carries none).
 */
static int64
command_rows(const char *tag)
{
	static const char *const counted[] = {"SELECT", "UPDATE", "DELETE", "MERGE",
	"FETCH", "MOVE", "COPY"};
	const char *p = NULL;

	if (strncmp(tag, "INSERT ", 7) == 0)
	{
		p = strchr(tag + 7, ' ');
		if (p != NULL)
			p++;
	}
	else
	{
		for (int i = 0; i < lengthof(counted); i++)
		{
			size_t		n = strlen(counted[i]);

			if (strncmp(tag, counted[i], n) == 0 && tag[n] == ' ')
			{
				p = tag + n + 1;
				break;
			}
		}
	}
	return (p != NULL && *p >= '0' && *p <= '9') ? strtoi64(p, NULL, 10) : 0;
}

/*
 * tt_task_worker_next
 *		The next thing the worker reported, without waiting (TT_WEV_NONE:
 *		nothing for now; the queue sets the tracker's latch when more
 *		comes).  Notices and messages of no interest are skipped.  Once
 *		the queue is detached every call returns TT_WEV_GONE.  Texts in
 *		*ev are valid until the next call.
 */
void
tt_task_worker_next(TTTaskWorker *w, TTWorkerEvent *ev)
{
	memset(ev, 0, sizeof(TTWorkerEvent));
	for (;;)
	{
		Size		nbytes;
		void	   *data;
		shm_mq_result res;
		StringInfoData msg;
		char		type;

		if (w->gone)
		{
			ev->kind = TT_WEV_GONE;
			return;
		}
		res = shm_mq_receive(w->mqh, &nbytes, &data, true);
		if (res == SHM_MQ_WOULD_BLOCK)
		{
			ev->kind = TT_WEV_NONE;
			return;
		}
		if (res != SHM_MQ_SUCCESS || nbytes < 1)
		{
			w->gone = true;
			continue;
		}
		type = ((char *) data)[0];
		msg.data = (char *) data + 1;
		msg.len = nbytes - 1;
		msg.maxlen = msg.len;
		msg.cursor = 0;

		switch (type)
		{
			case 'T':
				ev->kind = TT_WEV_ROWS;
				ev->ncols = pq_getmsgint(&msg, 4);
				return;
			case 'D':
			case 'd':
				ev->kind = TT_WEV_LINE;
				ev->data = msg.data;
				ev->len = msg.len;
				return;
			case 'H':
				ev->kind = TT_WEV_COPY;
				(void) pq_getmsgbyte(&msg);
				ev->ncols = pq_getmsgint(&msg, 2);
				return;
			case 'c':
				ev->kind = TT_WEV_COPY_DONE;
				return;
			case 'C':
				ev->kind = TT_WEV_COMMAND;
				ev->rows = command_rows(pq_getmsgstring(&msg));
				return;
			case 'Z':
				ev->kind = TT_WEV_DONE;
				ev->encoding = pq_getmsgint(&msg, 4);
				return;
			case 'E':
				{
					ErrorData	edata;

					pq_parse_errornotice(&msg, &edata);
					ev->kind = TT_WEV_ERROR;
					strlcpy(ev->error.sqlstate, unpack_sql_state(edata.sqlerrcode),
							sizeof(ev->error.sqlstate));
					ev->error.message = edata.message ? edata.message : pstrdup("unknown error");
					ev->error.detail = edata.detail;
					ev->error.hint = edata.hint;
					pg_read_barrier();
					ev->startup = !w->shared->logged_in;
					return;
				}
			default:
				/* 'N' notices and anything else: nothing to keep */
				break;
		}
	}
}

/*
 * tt_task_worker_signal
 *		SIGINT: cancel the worker's statement (kill, once it has started;
 *		false when it has not).  SIGTERM: end it, started or not (through
 *		the postmaster, TerminateBackgroundWorker).  Returns whether the
 *		signal is on its way.
 */
bool
tt_task_worker_signal(TTTaskWorker *w, int sig)
{
	pid_t		pid;

	if (sig == SIGTERM)
	{
		TerminateBackgroundWorker(w->handle);
		return true;
	}
	if (GetBackgroundWorkerPid(w->handle, &pid) != BGWH_STARTED)
		return false;
	return kill(pid, sig) == 0;
}

/*
 * tt_task_worker_release
 *		Detach from the worker's segment and free the handle.  A worker
 *		still running then finds its queue detached: what it sends is
 *		dropped, and the next row of a plain statement fails it.
 */
void
tt_task_worker_release(TTTaskWorker *w)
{
	w->shared->abandoned = true;
	pg_memory_barrier();
	dsm_detach(w->seg);
	pfree(w->handle);
	pfree(w);
}


/* ---------------------------------------------------------------------
 * The worker's side
 * ---------------------------------------------------------------------
 */

/*
 * tt_task_worker_main
 *		Entry point of a task worker: attach the segment, send all protocol
 *		output into its queue, log in as the owner, claim the attempt, run
 *		the statement, report done.  Any ERROR or FATAL reaches the tracker
 *		through the queue (the background worker's error path emits it,
 *		then exits, which aborts the transaction and detaches the queue).
 */
void
tt_task_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	TTWorkerShared *shared;
	shm_mq	   *mq;
	StringInfoData buf;

	/* SIGTERM ends the worker as it ends a backend; SIGINT cancels */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not map the task tracker's dynamic shared memory segment")));
	shared = dsm_segment_address(seg);
	mq = (shm_mq *) ((char *) shared + shared->queue_offset);
	shm_mq_set_sender(mq, MyProc);
	pq_redirect_to_shm_mq(seg, shm_mq_attach(mq, seg, NULL));

	/* the login rules of a session apply: rolcanlogin, CONNECT, datallowconn */
	BackgroundWorkerInitializeConnectionByOid(shared->dbid, shared->owner, 0);
	pg_write_barrier();
	shared->logged_in = true;

	/* as a session started by the tracker over libpq would be */
	SetConfigOption("application_name", "task_tracker", PGC_BACKEND, PGC_S_CLIENT);
	SetConfigOption("client_encoding", pg_encoding_to_char(shared->encoding),
					PGC_BACKEND, PGC_S_CLIENT);

	/* running from here on, as pg_stat_activity shows (see claim_task) */
	pgstat_report_activity(STATE_RUNNING, shared->sql);
	if (!claim_task(shared))
		proc_exit(0);

	run_statement(shared);

	pq_beginmessage(&buf, 'Z');
	pq_sendint32(&buf, pg_get_client_encoding());
	pq_endmessage(&buf);
	RESUME_INTERRUPTS();		/* held since the commit, run_statement */
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/*
 * claim_task
 *		Record this worker's pid in the task's entry, if the entry still
 *		shows the attempt it was started for by the tracker that started
 *		it, and its cancel was not requested.  Returns false (run nothing)
 *		otherwise: that tracker is gone and its successor has requeued the
 *		task (recover_orphans), or the task is being canceled.  The worker
 *		reports itself running before it claims, so a tracker that finds
 *		the pid and the backend idle may rightly conclude the statement
 *		ended.
 */
static bool
claim_task(TTWorkerShared *shared)
{
	TTTrackedTask *task;
	bool		ok;

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	task = hash_search(tt_task_hash, &shared->key, HASH_FIND, NULL);
	ok = (task != NULL && tt_shared->tracker_pid == shared->tracker_pid &&
		  (task->status == TT_SCHEDULED || task->status == TT_RUNNING) &&
		  task->attempts == shared->attempt &&
		  task->started_at == shared->started_at &&
		  task->backend_pid == 0);
	if (ok)
	{
		task->backend_pid = MyProcPid;
		task->backend_local = true;
	}
	LWLockRelease(tt_shared->lock);
	return ok;
}

/*
 * run_statement
 *		Run the task's statement as a client backend runs a simple query's
 *		statement at top level: in its own transaction, statement_timeout
 *		armed, parsed, analyzed, planned and run through an unnamed portal
 *		with isTopLevel (so VACUUM, CREATE INDEX CONCURRENTLY and the
 *		other statements that refuse a transaction block run), committed,
 *		and only then reported with CommandComplete.  A COPY to or from
 *		the client (other than the tracker's own wrap) is refused, as over
 *		libpq.  Returns with interrupts held (after the commit, nothing
 *		may stop CommandComplete); errors propagate to the worker's exit.
 */
static void
run_statement(TTWorkerShared *shared)
{
	const char *sql = shared->sql;
	MemoryContext stmtcxt;
	List	   *parsetrees;
	ListCell   *lc;

	stmtcxt = AllocSetContextCreate(TopMemoryContext, "task statement",
									ALLOCSET_DEFAULT_SIZES);
	debug_query_string = sql;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (StatementTimeout > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, StatementTimeout);
	MemoryContextSwitchTo(stmtcxt);

	parsetrees = pg_parse_query(sql);
	foreach(lc, parsetrees)
	{
		RawStmt    *raw = lfirst_node(RawStmt, lc);
		CommandTag	tag = CreateCommandTag(raw->stmt);
		bool		snapshot_set = false;
		List	   *querytrees;
		List	   *plantrees;
		Portal		portal;
		DestReceiver *receiver;
		int16		format = 0;
		QueryCompletion qc;

		if (IsA(raw->stmt, CopyStmt) && ((CopyStmt *) raw->stmt)->filename == NULL &&
			!shared->copy_wrap)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("COPY to or from the client is not supported in a task")));

		/* log_statement, as for a client's statement */
		if (log_statement == LOGSTMT_ALL ||
			(log_statement != LOGSTMT_NONE &&
			 GetCommandLogLevel(raw->stmt) <= log_statement))
			ereport(LOG,
					(errmsg("statement: %s", sql),
					 errhidestmt(true)));
		set_ps_display(GetCommandTagName(tag));
		if (analyze_requires_snapshot(raw))
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			snapshot_set = true;
		}
		querytrees = pg_analyze_and_rewrite_fixedparams(raw, sql, NULL, 0, NULL);
		plantrees = pg_plan_queries(querytrees, sql, CURSOR_OPT_PARALLEL_OK, NULL);
		if (snapshot_set)
			PopActiveSnapshot();
		CHECK_FOR_INTERRUPTS();

		portal = CreatePortal("", true, true);
		portal->visible = false;
		PortalDefineQuery(portal, NULL, sql, tag, plantrees, NULL);
		PortalStart(portal, NULL, 0, InvalidSnapshot);
		PortalSetResultFormat(portal, 1, &format);
		receiver = create_row_receiver(shared);
		(void) PortalRun(portal, FETCH_ALL, true, true, receiver, receiver, &qc);
		receiver->rDestroy(receiver);
		PortalDrop(portal, false);

		if (lnext(parsetrees, lc) == NULL)
		{
			/* the last statement: commit, then tell (finish_xact_command) */
			if (get_timeout_active(STATEMENT_TIMEOUT))
				disable_timeout(STATEMENT_TIMEOUT, false);
			CommitTransactionCommand();
			HOLD_INTERRUPTS();
		}
		else
			CommandCounterIncrement();
		EndCommand(&qc, DestRemote, false);
	}
	if (parsetrees == NIL)
	{
		CommitTransactionCommand();
		HOLD_INTERRUPTS();
	}
	debug_query_string = NULL;
}

/* RowReceiver: a row-returning statement's rows begin */
static void
rows_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	RowReceiver *r = (RowReceiver *) self;
	StringInfoData buf;

	r->natts = typeinfo->natts;
	r->out = palloc0(sizeof(FmgrInfo) * Max(r->natts, 1));
	for (int i = 0; i < r->natts; i++)
	{
		Oid			func;
		bool		varlena;

		getTypeOutputInfo(TupleDescAttr(typeinfo, i)->atttypid, &func, &varlena);
		fmgr_info(func, &r->out[i]);
	}
	pq_beginmessage(&buf, 'T');
	pq_sendint32(&buf, r->natts);
	pq_endmessage(&buf);
}

/*
 * rows_receive
 *		One row: each value's text output escaped as COPY text, tab
 *		separated, newline ended (what the tracker's tt_result_add makes
 *		of a row that came over libpq in the database's encoding).  A queue
 *		the tracker has left ends the statement.
 */
static bool
rows_receive(TupleTableSlot *slot, DestReceiver *self)
{
	RowReceiver *r = (RowReceiver *) self;
	MemoryContext old = MemoryContextSwitchTo(r->rowcxt);

	slot_getallattrs(slot);
	pq_beginmessage_reuse(&r->line, 'D');
	for (int i = 0; i < r->natts; i++)
	{
		if (i > 0)
			appendStringInfoChar(&r->line, '\t');
		if (slot->tts_isnull[i])
			tt_copy_text_append(&r->line, NULL, 0);
		else
		{
			char	   *value = OutputFunctionCall(&r->out[i], slot->tts_values[i]);

			tt_copy_text_append(&r->line, value, strlen(value));
		}
	}
	appendStringInfoChar(&r->line, '\n');
	MemoryContextSwitchTo(old);
	if (r->shared->abandoned)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the task tracker stopped reading the task's rows")));
	pq_endmessage_reuse(&r->line);
	MemoryContextReset(r->rowcxt);
	return true;
}

static void
rows_shutdown(DestReceiver *self)
{
}

static void
rows_destroy(DestReceiver *self)
{
	RowReceiver *r = (RowReceiver *) self;

	MemoryContextDelete(r->rowcxt);
	pfree(r->line.data);
	pfree(r);
}

/*
 * create_row_receiver
 *		The DestReceiver of a task's statement (see rows_receive).
 */
static DestReceiver *
create_row_receiver(TTWorkerShared *shared)
{
	RowReceiver *r = palloc0(sizeof(RowReceiver));

	r->shared = shared;
	r->pub.receiveSlot = rows_receive;
	r->pub.rStartup = rows_startup;
	r->pub.rShutdown = rows_shutdown;
	r->pub.rDestroy = rows_destroy;
	r->pub.mydest = DestRemote;
	r->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "task row",
									  ALLOCSET_SMALL_SIZES);
	initStringInfo(&r->line);
	return (DestReceiver *) r;
}
