/*-------------------------------------------------------------------------
 *
 * worker_api.c
 *	  The worker protocol's SQL functions (assign_task, assign_tasks,
 *	  task_status, wait_for_tasks, wait_for_task_results, task_result,
 *	  task_result_copy, cleanup_job) and the functions behind the tasks
 *	  and tracker views.
 *
 * Design
 *	  docs/architecture.md, "Processes", "Task state machine" and
 *	  "Flow of one task" (steps 1, 6 and 7).
 *
 * Locking
 *	  Each function takes TTShared->lock once (a wait once per wake-up),
 *	  in shared mode unless it changes the table, does its work on the
 *	  shared table, copies out what the caller may see, and releases it
 *	  before any catalog access, file access, encoding conversion,
 *	  tuplestore work or waiting.  Errors raised while holding the lock
 *	  are fine: error recovery releases LWLocks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "common/tt_copy_text.h"
#include "common/tt_settings.h"
#include "common/tt_waits.h"
#include "worker/tt_result_file.h"
#include "worker/tt_shmem.h"
#include "worker/tt_tracker.h"
#include "worker/tt_worker.h"

PG_FUNCTION_INFO_V1(task_tracker_assign_task);
PG_FUNCTION_INFO_V1(task_tracker_assign_tasks);
PG_FUNCTION_INFO_V1(task_tracker_task_status);
PG_FUNCTION_INFO_V1(task_tracker_wait_for_tasks);
PG_FUNCTION_INFO_V1(task_tracker_wait_for_task_results);
PG_FUNCTION_INFO_V1(task_tracker_task_result);
PG_FUNCTION_INFO_V1(task_tracker_task_result_copy);
PG_FUNCTION_INFO_V1(task_tracker_cleanup_job);
PG_FUNCTION_INFO_V1(task_tracker_task_list);
PG_FUNCTION_INFO_V1(task_tracker_tracker_info);

/*
 * This session's stamp: drawn from TTShared->next_seq (under the lock) when
 * it first assigns, and recorded in every task it assigns.  0 until then.
 */
static uint64 session_stamp = 0;

/* One task of a batch being assigned. */
typedef struct NewTask
{
	int32		task_id;
	char	   *query;
	int			query_len;
	int32		copy_len;		/* see TTTrackedTask->copy_len */
	dsa_pointer text;
} NewTask;

/*
 * require_args
 *		Every SQL function's first step: the first n arguments, named in
 *		order, must not be NULL (a NULL is an error, never a silent no-op),
 *		and the library must be preloaded.
 */
static void
require_args(FunctionCallInfo fcinfo, int n,...)
{
	va_list		names;

	va_start(names, n);
	for (int i = 0; i < n; i++)
	{
		const char *name = va_arg(names, const char *);

		if (PG_ARGISNULL(i))
		{
			va_end(names);
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be NULL", name)));
		}
	}
	va_end(names);
	tt_shmem_check();
}

static void
check_job_id(int64 job_id)
{
	if (job_id <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("job id " INT64_FORMAT " is out of range", job_id),
				 errdetail("Job ids are positive.")));
}

static void
check_task_id(int32 task_id)
{
	if (task_id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("task id %d is out of range", task_id),
				 errdetail("Task ids are zero or positive.")));
}

/*
 * task_parse_error_callback
 *		Report a syntax error's position inside the task's text (as an
 *		internal query), not inside the statement that called us.
 */
static void
task_parse_error_callback(void *arg)
{
	const char *query = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(query);
	}
}

/*
 * check_query
 *		A task is exactly one statement that parses and does not control
 *		the transaction; its text is within citus.max_task_query_size.
 *		Returns how much of it runs as COPY (tt_copy_statement_length).
 */
static int32
check_query(const char *query, int len)
{
	List	   *stmts;
	RawStmt    *raw;
	ErrorContextCallback errcallback;

	if (len > max_task_query_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("task query is %d bytes, more than citus.max_task_query_size (%d bytes)",
						len, max_task_query_size),
				 errhint("Increase citus.max_task_query_size.")));

	errcallback.callback = task_parse_error_callback;
	errcallback.arg = (void *) query;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	stmts = raw_parser(query, RAW_PARSE_DEFAULT);
	error_context_stack = errcallback.previous;
	if (stmts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("task query must not be empty")));
	if (list_length(stmts) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a task must be a single statement"),
				 errhint("Assign one task per statement.")));
	raw = linitial_node(RawStmt, stmts);
	if (IsA(raw->stmt, TransactionStmt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("transaction control statements cannot be run as tasks"),
				 errdetail("Each task runs in a transaction of its own.")));
	return tt_copy_statement_length(raw, len);
}

/*
 * wait_until_ready
 *		Wait for the tracker to have restored its table after a (re)start,
 *		at most citus.node_connection_timeout.
 */
static void
wait_until_ready(void)
{
	TimestampTz deadline;

	tt_shmem_check();
	if (tt_shared->ready)
		return;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), node_connection_timeout);
	ConditionVariablePrepareToSleep(&tt_shared->ready_cv);
	while (!tt_shared->ready)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (left <= 0)
		{
			ConditionVariableCancelSleep();
			ereport(ERROR,
					(errcode(ERRCODE_CANNOT_CONNECT_NOW),
					 errmsg("task tracker is not ready"),
					 errhint("The task tracker background worker has not started; see the server log.")));
		}
		ConditionVariableTimedSleep(&tt_shared->ready_cv, left, TT_WAIT_READY);
	}
	ConditionVariableCancelSleep();
}

static int
new_task_cmp(const void *a, const void *b)
{
	int32		x = ((const NewTask *) a)->task_id;
	int32		y = ((const NewTask *) b)->task_id;

	return (x > y) - (x < y);
}

static bool
may_act_for(Oid owner)
{
	return owner == GetUserId() || superuser();
}

/*
 * store_query_texts
 *		Keep the query text of each of the n tasks in the area, or none:
 *		when one does not fit, those stored before it are given back and
 *		the caller's ERROR follows.  Caller holds the lock exclusively.
 *
 * The area grows by creating a DSM segment, and dsm_create() raises an
 * ERROR when that fails (pg_dynshmem or /dev/shm full) even for an
 * allocation that may fail softly; that ERROR leaves the area's own lock
 * held, and freeing needs it: every LWLock is released, the table's lock
 * taken again to give the texts back, and the ERROR goes on.
 */
static void
store_query_texts(NewTask *tasks, int n)
{
	volatile int stored = 0;

	PG_TRY();
	{
		for (; stored < n; stored++)
		{
			tasks[stored].text = tt_text_store(tasks[stored].query,
											   tasks[stored].query_len, true);
			if (!DsaPointerIsValid(tasks[stored].text))
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of shared memory for task query texts")));
		}
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		LWLockReleaseAll();
		LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < stored; i++)
			tt_text_free(&tasks[i].text);
		LWLockRelease(tt_shared->lock);
		RESUME_INTERRUPTS();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * check_new_tasks
 *		queue_new_tasks, step 1 (without the lock): each task's id and
 *		query text are valid (copy_len decided), and no id appears twice;
 *		tasks are left sorted by id.
 */
static void
check_new_tasks(NewTask *tasks, int n)
{
	for (int i = 0; i < n; i++)
	{
		check_task_id(tasks[i].task_id);
		tasks[i].copy_len = check_query(tasks[i].query, tasks[i].query_len);
	}
	qsort(tasks, n, sizeof(NewTask), new_task_cmp);
	for (int i = 1; i < n; i++)
		if (tasks[i].task_id == tasks[i - 1].task_id)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("task id %d appears more than once in the batch",
							tasks[i].task_id)));
}

/*
 * count_new_tasks
 *		queue_new_tasks, step 2 (lock held exclusively): the job, if it
 *		exists, is the caller's (or the caller is a superuser) and is not
 *		being cleaned up, and each task that exists already is the caller's
 *		and may be assigned again (failed or canceled).  Returns how many of
 *		the n tasks are new.
 */
static int
count_new_tasks(TTTrackedJob *job, int64 job_id, NewTask *tasks, int n,
				Oid owner, bool is_super)
{
	int			nnew = 0;

	if (job != NULL && job->owner != owner && !is_super)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("job " INT64_FORMAT " belongs to another user", job_id)));
	if (job != NULL && job->dropping)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("job " INT64_FORMAT " is being cleaned up", job_id)));

	for (int i = 0; i < n; i++)
	{
		TTTrackedTask	   *task = tt_task_lookup(job_id, tasks[i].task_id);

		if (task == NULL)
		{
			nnew++;
			continue;
		}
		if (task->owner != owner)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("task (job " INT64_FORMAT ", task %d) belongs to another user",
							job_id, tasks[i].task_id)));
		if (task->status != TT_FAILED && task->status != TT_PERMANENTLY_FAILED &&
			task->status != TT_CANCELED)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("task (job " INT64_FORMAT ", task %d) is already assigned",
							job_id, tasks[i].task_id),
					 errdetail("Its status is %s; only failed or canceled tasks can be assigned again.",
							   tt_status_name(task->status))));
	}
	return nnew;
}

/*
 * check_table_room
 *		queue_new_tasks, step 3 (lock held exclusively): nnew more tasks fit
 *		in the table and, for a user who is not a superuser, in the user's
 *		share of it.
 */
static void
check_table_room(int nnew, Oid owner, bool is_super, const NameData *user_name)
{
	if (tt_shared->ntasks + nnew > max_tracked_tasks_per_node)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("task table is full"),
				 errdetail("%d tasks are tracked; %d more do not fit in citus.max_tracked_tasks_per_node = %d.",
						   tt_shared->ntasks, nnew, max_tracked_tasks_per_node),
				 errhint("Increase citus.max_tracked_tasks_per_node, or clean up finished jobs.")));
	if (!is_super && nnew > 0)
	{
		int			mine = tt_user_task_count(owner);
		int			limit = tt_user_task_limit();

		if (mine + nnew > limit)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("user's share of the task table is full"),
					 errdetail("Role \"%s\" has %d tasks tracked; %d more do not fit in its share of %d (citus.max_tracked_tasks_per_user).",
							   NameStr(*user_name), mine, nnew, limit),
					 errhint("Clean up finished jobs, or increase citus.max_tracked_tasks_per_user.")));
	}
}

/*
 * enter_new_tasks
 *		queue_new_tasks, step 5 (lock held exclusively; nothing here can
 *		fail): create the job if needed, insert the new tasks and reset the
 *		ones assigned again, each with its stored text, and queue them all.
 *		The ids of tasks whose old result file must go are put in
 *		unlink_ids; returns how many.
 */
static int
enter_new_tasks(TTTrackedJob *job, int64 job_id, NewTask *tasks, int n,
				Oid owner, const NameData *user_name,
				const NameData *database_name, int32 *unlink_ids)
{
	TimestampTz now = GetCurrentTimestamp();
	int			nunlink = 0;

	if (session_stamp == 0)
		session_stamp = tt_shared->next_seq++;
	if (job == NULL)
		job = tt_job_lookup(job_id, true, owner);
	for (int i = 0; i < n; i++)
	{
		TTTrackedTask	   *task = tt_task_lookup(job_id, tasks[i].task_id);

		if (task == NULL)
			task = tt_task_insert(job, job_id, tasks[i].task_id, owner);
		else
		{
			if (task->has_file)
			{
				/* removed once the lock is released; nobody reads it now */
				unlink_ids[nunlink++] = task->key.task_id;
				task->has_file = false;
			}
			tt_task_free_result(task);
			tt_task_set_status(job, task, TT_ASSIGNED);
			tt_text_free(&task->query);
			tt_task_set_error(task, NULL, NULL);
		}
		task->owner = owner;
		task->dbid = MyDatabaseId;
		task->encoding = GetDatabaseEncoding();
		task->user_name = *user_name;
		task->database_name = *database_name;
		task->query = tasks[i].text;
		task->copy_len = tasks[i].copy_len;
		task->attempts = 0;
		task->backend_pid = 0;
		task->result_rows = -1;
		task->seq = tt_shared->next_seq++;
		task->assigner = session_stamp;
		task->assigned_at = now;
		task->started_at = 0;
		tt_task_enqueue(task);
	}
	tt_job_touch(job, now);
	return nunlink;
}

/*
 * remove_old_result_files
 *		queue_new_tasks, step 6 (lock released): remove the result files of
 *		tasks assigned again.
 */
static void
remove_old_result_files(int64 job_id, Oid owner, const int32 *ids, int n)
{
	for (int i = 0; i < n; i++)
	{
		char		path[MAXPGPATH];

		tt_task_file_path(path, sizeof(path), job_id, ids[i], owner);
		if (unlink(path) != 0 && errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not remove file \"%s\": %m", path)));
	}
}

/*
 * queue_new_tasks
 *		Queue n tasks of one job for the current user, all or nothing: the
 *		steps above, the ones that may fail before any change.
 */
static void
queue_new_tasks(int64 job_id, NewTask *tasks, int n)
{
	Oid			owner = GetUserId();
	bool		is_super = superuser();
	NameData	user_name;
	NameData	database_name;
	char	   *dbname;
	TTTrackedJob	   *job;
	int			nnew;
	int32	   *unlink_ids;		/* tasks whose old result file goes */
	int			nunlink;

	check_job_id(job_id);
	check_new_tasks(tasks, n);

	namestrcpy(&user_name, GetUserNameFromId(owner, false));
	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL)
		elog(ERROR, "current database has no name");
	namestrcpy(&database_name, dbname);

	wait_until_ready();
	unlink_ids = palloc(sizeof(int32) * n);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	job = tt_job_lookup(job_id, false, InvalidOid);
	nnew = count_new_tasks(job, job_id, tasks, n, owner, is_super);
	check_table_room(nnew, owner, is_super, &user_name);
	/* step 4: every text first, so running out of memory changes nothing */
	store_query_texts(tasks, n);
	nunlink = enter_new_tasks(job, job_id, tasks, n, owner, &user_name,
							  &database_name, unlink_ids);
	tt_wake_tracker();
	LWLockRelease(tt_shared->lock);

	remove_old_result_files(job_id, owner, unlink_ids, nunlink);
}

Datum
task_tracker_assign_task(PG_FUNCTION_ARGS)
{
	NewTask		task;
	text	   *query;

	require_args(fcinfo, 3, "job_id", "task_id", "query");

	query = PG_GETARG_TEXT_PP(2);
	task.task_id = PG_GETARG_INT32(1);
	task.query = text_to_cstring(query);
	task.query_len = strlen(task.query);
	queue_new_tasks(PG_GETARG_INT64(0), &task, 1);
	PG_RETURN_VOID();
}

Datum
task_tracker_assign_tasks(PG_FUNCTION_ARGS)
{
	ArrayType  *ids;
	ArrayType  *queries;
	Datum	   *id_datums;
	Datum	   *query_datums;
	bool	   *id_nulls;
	bool	   *query_nulls;
	int			nids;
	int			nqueries;
	NewTask    *tasks;

	require_args(fcinfo, 3, "job_id", "task_ids", "queries");

	ids = PG_GETARG_ARRAYTYPE_P(1);
	queries = PG_GETARG_ARRAYTYPE_P(2);
	if (ARR_NDIM(ids) > 1 || ARR_NDIM(queries) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids and queries must be one-dimensional arrays")));
	deconstruct_array(ids, INT4OID, 4, true, TYPALIGN_INT, &id_datums, &id_nulls, &nids);
	deconstruct_array(queries, TEXTOID, -1, false, TYPALIGN_INT,
					  &query_datums, &query_nulls, &nqueries);
	if (nids != nqueries)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids has %d elements but queries has %d", nids, nqueries)));
	if (nids == 0)
		PG_RETURN_VOID();

	tasks = palloc(sizeof(NewTask) * nids);
	for (int i = 0; i < nids; i++)
	{
		if (id_nulls[i] || query_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("task_ids and queries must not contain NULLs")));
		tasks[i].task_id = DatumGetInt32(id_datums[i]);
		tasks[i].query = TextDatumGetCString(query_datums[i]);
		tasks[i].query_len = strlen(tasks[i].query);
	}
	queue_new_tasks(PG_GETARG_INT64(0), tasks, nids);
	PG_RETURN_VOID();
}

static void
task_not_found(int64 job_id, int32 task_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("task (job " INT64_FORMAT ", task %d) not found", job_id, task_id)));
}

/*
 * lookup_own_task
 *		The task, if it exists and the current user may see it; otherwise
 *		"not found" (another user's task is not revealed).  Caller holds the
 *		lock, in either mode.  Touches the job's last access time.
 */
static TTTrackedTask *
lookup_own_task(int64 job_id, int32 task_id, TTTrackedJob **jobp)
{
	TTTrackedTask	   *task = tt_task_lookup(job_id, task_id);
	TTTrackedJob	   *job;

	if (task == NULL || !may_act_for(task->owner))
		task_not_found(job_id, task_id);
	job = tt_job_lookup(job_id, false, InvalidOid);
	if (job)
		tt_job_touch(job, GetCurrentTimestamp());
	if (jobp)
		*jobp = job;
	return task;
}

Datum
task_tracker_task_status(PG_FUNCTION_ARGS)
{
	int64		job_id;
	int32		task_id;
	TTTrackedTask	   *task;
	const char *status;

	require_args(fcinfo, 2, "job_id", "task_id");
	job_id = PG_GETARG_INT64(0);
	task_id = PG_GETARG_INT32(1);
	check_job_id(job_id);
	check_task_id(task_id);
	wait_until_ready();

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	task = lookup_own_task(job_id, task_id, NULL);
	status = tt_status_name(task->status);
	LWLockRelease(tt_shared->lock);
	PG_RETURN_TEXT_P(cstring_to_text(status));
}

/* A final task reported by wait_for_tasks or wait_for_task_results. */
typedef struct Reported
{
	int32		task_id;
	TTTaskStatus status;
	char	   *error;			/* in the task's encoding until converted */
	int			encoding;		/* the task's database encoding */
	char		sqlstate[6];
	int64		result_rows;
	text	   *result;			/* its rows as COPY text, or NULL: not given */
	bool		dropped;		/* removed from the table with its rows */
} Reported;

/*
 * What wait_for_task_results asks of take_reports(): the rows of the
 * succeeded tasks it reports, when kept in shared memory, within a budget.
 */
typedef struct ResultRequest
{
	int64		budget;			/* bytes of rows still to hand out */
	int32		columns;		/* columns a result must have; -1: any */
	bool		inline_ok;		/* rows reach the client unconverted */
	char	   *detached;		/* out: directory of a job that went away */
	bool		job_gone;		/* out: the last task was dropped, and the job */
} ResultRequest;

/*
 * What this backend has been told about each job: the job's incarnation
 * (a job id may be reused after cleanup) and the last final_seq reported.
 * Entries of jobs that are gone (cleaned up by another session, expired)
 * are pruned whenever the table has doubled since the last pruning
 * (prune_seen_jobs), so a long-lived pooled session keeps no more entries
 * than about twice the jobs it still follows.
 */
typedef struct SeenJob
{
	int64		job_id;			/* hash key */
	uint64		incarnation;	/* TTTrackedJob->incarnation when last seen */
	uint64		last_seq;		/* final tasks up to this one were reported */
} SeenJob;

#define SEEN_JOBS_MIN_PRUNE		64

static HTAB *seen_jobs = NULL;
static long seen_prune_at = SEEN_JOBS_MIN_PRUNE;

/* take_reports(): the report needs the lock in exclusive mode */
#define TAKE_NEEDS_EXCLUSIVE	(-2)

/*
 * prune_seen_jobs
 *		Forget the jobs this backend was told about that no longer exist in
 *		the incarnation it saw, except keep_id.  Caller holds the lock (in
 *		either mode).
 */
static void
prune_seen_jobs(int64 keep_id)
{
	HASH_SEQ_STATUS hseq;
	SeenJob    *seen;

	hash_seq_init(&hseq, seen_jobs);
	while ((seen = hash_seq_search(&hseq)) != NULL)
	{
		TTTrackedJob	   *job;

		if (seen->job_id == keep_id)
			continue;
		job = tt_job_lookup(seen->job_id, false, InvalidOid);
		if (job == NULL || job->incarnation != seen->incarnation)
			hash_search(seen_jobs, &seen->job_id, HASH_REMOVE, NULL);
	}
	seen_prune_at = Max(SEEN_JOBS_MIN_PRUNE, 2 * hash_get_num_entries(seen_jobs));
}

/*
 * bytes_are_ascii
 *		No byte of data[0..len) has its high bit set.
 */
static bool
bytes_are_ascii(const char *data, Size len)
{
	for (Size i = 0; i < len; i++)
	{
		if (IS_HIGHBIT_SET(data[i]))
			return false;
	}
	return true;
}

/*
 * encoding_matches
 *		Do bytes of a task's database encoding reach this session as they
 *		are?  True when the encodings are the same, or the bytes are ASCII
 *		(the same in every server encoding).
 */
static bool
encoding_matches(int encoding, const char *data, Size len)
{
	return encoding == GetDatabaseEncoding() || bytes_are_ascii(data, len);
}

/*
 * convert_for_view
 *		A text of a task's database encoding, for a session whose database
 *		has another one, where failing is not an option (the tasks view, the
 *		error column of a report): converted when every character converts,
 *		otherwise with every non-ASCII character replaced by '?'.  Never
 *		wrong bytes, never an error.
 */
static char *
convert_for_view(const char *text, int encoding)
{
	int			len = strlen(text);
	int			db = GetDatabaseEncoding();
	bool		valid = false;
	char	   *out;

	if (encoding == db || bytes_are_ascii(text, len))
		return (char *) text;
	if (PG_VALID_BE_ENCODING(encoding) && db != PG_SQL_ASCII &&
		encoding != PG_SQL_ASCII &&
		len < (int) (MaxAllocSize / MAX_CONVERSION_GROWTH) - 1 &&
		pg_verify_mbstr(encoding, text, len, true))
	{
		Oid			proc = FindDefaultConversionProc(encoding, db);

		valid = true;
		if (OidIsValid(proc))
		{
			int			size = len * MAX_CONVERSION_GROWTH + 1;
			int			done;

			out = palloc(size);
			done = pg_do_encoding_conversion_buf(proc, encoding, db,
												 (unsigned char *) text, len,
												 (unsigned char *) out, size, true);
			if (done == len)
				return out;
			pfree(out);
		}
	}

	/* one '?' per character (per byte when the bytes are not valid) */
	out = palloc(len + 1);
	for (int i = 0, j = 0;; j++)
	{
		int			w = 1;

		if (i >= len)
		{
			out[j] = '\0';
			break;
		}
		if (IS_HIGHBIT_SET(text[i]))
		{
			if (valid)
				w = Min(pg_encoding_mblen(encoding, text + i), len - i);
			out[j] = '?';
		}
		else
			out[j] = text[i];
		i += w;
	}
	return out;
}

/*
 * attach_reported_rows
 *		For wait_for_task_results: hand out the rows of a reported succeeded
 *		task if they may go with its report, and say whether the task may be
 *		dropped.  They may go when the caller may read them (owner or
 *		superuser, as for task_result) and they are kept in shared memory in
 *		the current format with the requested number of columns, within the
 *		budget, and reach the caller as they are: its client_encoding is its
 *		database's and the task's database encoding is the same (or the rows
 *		are ASCII).  A task that succeeded without rows to keep (INSERT,
 *		DDL) gives an empty text.  A result in a file, one kept in the 1.0
 *		library's format, one over the budget or one that would need an
 *		encoding conversion is left to task_result_copy (which converts).
 *		The task may be dropped when its rows went out, in the session that
 *		assigned it, and nothing else is under way for the job (cleanup).
 *		Caller holds the lock; r describes task.
 */
static void
attach_reported_rows(TTTrackedJob *job, TTTrackedTask *task, Reported *r, ResultRequest *want)
{
	Size		len = 0;
	const char *rows = NULL;

	if (r->status != TT_SUCCEEDED || !may_act_for(task->owner) || !want->inline_ok)
		return;
	if (DsaPointerIsValid(task->result))
	{
		TTResultReader reader;

		/* only reads the header: the area's memory is not copied */
		tt_result_reader_open_memory(&reader, tt_text_get(task->result),
									 task->result_size, "in-memory result");
		if (!reader.legacy && (want->columns < 0 || reader.ncols == want->columns))
		{
			rows = reader.buf + reader.start;
			len = reader.end - reader.start;
		}
		tt_result_reader_close(&reader);
		if (rows == NULL)
			return;
	}
	else if (task->has_file)
		return;
	if ((int64) len > want->budget)
		return;
	if (len > 0 && !encoding_matches(task->encoding, rows, len))
		return;

	r->result = (text *) palloc(VARHDRSZ + len);
	SET_VARSIZE(r->result, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(r->result), rows, len);
	want->budget -= len;
	r->dropped = (session_stamp != 0 && task->assigner == session_stamp &&
				  !job->dropping);
}

/*
 * take_reports
 *		The job's tasks that reached a final state since this backend last
 *		asked (each caller is told of every final state once).  Returns how
 *		many, -1 if the job does not exist for this user.  With want
 *		(wait_for_task_results), also the rows of the succeeded ones (see
 *		attach_reported_rows), and the tasks whose rows went out in this session are
 *		dropped; when that was the job's last task, the job goes too, and
 *		want->detached is its renamed directory for the caller to remove
 *		after releasing the lock.
 *
 *		Caller holds the lock, exclusively when exclusive is true.  In
 *		shared mode nothing shared changes but the job's access time; when
 *		want is given and there is something to report, it returns
 *		TAKE_NEEDS_EXCLUSIVE without taking anything, and the caller asks
 *		again with the lock held exclusively.  The work and the memory are
 *		O(tasks reported): never more entries than the job has tasks,
 *		whatever the job's history of final states.
 */
static int
take_reports(int64 job_id, Reported **out, ResultRequest *want, bool exclusive)
{
	TTTrackedJob	   *job = tt_job_lookup(job_id, false, InvalidOid);
	SeenJob    *seen;
	bool		found;
	dlist_iter	iter;
	TTTrackedTask	  **tasks;
	uint64		nmax;
	int			n = 0;
	int			ndrop = 0;

	if (seen_jobs == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(int64);
		info.entrysize = sizeof(SeenJob);
		info.hcxt = TopMemoryContext;
		seen_jobs = hash_create("task_tracker reported jobs", 64, &info,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	if (job == NULL || !may_act_for(job->owner))
	{
		/* a job that is gone takes what this backend was told with it */
		hash_search(seen_jobs, &job_id, HASH_REMOVE, NULL);
		return -1;
	}
	tt_job_touch(job, GetCurrentTimestamp());

	seen = hash_search(seen_jobs, &job_id, HASH_ENTER, &found);
	if (!found || seen->incarnation != job->incarnation)
	{
		seen->incarnation = job->incarnation;
		seen->last_seq = 0;
	}
	if (!found && hash_get_num_entries(seen_jobs) > seen_prune_at)
	{
		prune_seen_jobs(job_id);
		seen = hash_search(seen_jobs, &job_id, HASH_FIND, NULL);
	}
	if (job->final_seq <= seen->last_seq)
		return 0;
	if (want != NULL && !exclusive)
		return TAKE_NEEDS_EXCLUSIVE;

	/* the done list holds at most the job's tasks */
	nmax = Min(job->final_seq - seen->last_seq, (uint64) job->ntasks);
	*out = palloc(sizeof(Reported) * Max(nmax, 1));
	tasks = palloc(sizeof(TTTrackedTask *) * Max(nmax, 1));
	dlist_reverse_foreach(iter, &job->done)
	{
		TTTrackedTask	   *task = dlist_container(TTTrackedTask, done_node, iter.cur);
		Reported   *r;
		char	   *error;

		if (task->final_seq <= seen->last_seq)
			break;
		Assert(n < nmax);
		tasks[n] = task;
		r = &(*out)[n++];
		error = tt_text_get(task->error);
		r->task_id = task->key.task_id;
		r->status = task->status;
		r->error = (error && task->status != TT_SUCCEEDED) ? pstrdup(error) : NULL;
		r->encoding = task->encoding;
		memcpy(r->sqlstate, task->sqlstate, sizeof(r->sqlstate));
		r->result_rows = task->result_rows;
		r->result = NULL;
		r->dropped = false;
	}

	/* oldest first */
	for (int i = 0; i < n / 2; i++)
	{
		Reported	tmp = (*out)[i];
		TTTrackedTask	   *t = tasks[i];

		(*out)[i] = (*out)[n - 1 - i];
		(*out)[n - 1 - i] = tmp;
		tasks[i] = tasks[n - 1 - i];
		tasks[n - 1 - i] = t;
	}

	/* the rows that go with the reports (this may throw: nothing changed yet) */
	if (want != NULL)
	{
		for (int i = 0; i < n; i++)
		{
			attach_reported_rows(job, tasks[i], &(*out)[i], want);
			if ((*out)[i].dropped)
				tasks[ndrop++] = tasks[i];
		}
	}

	/* from here on nothing can fail */
	seen->last_seq = job->final_seq;
	for (int i = 0; i < ndrop; i++)
		tt_task_remove(job, tasks[i]);
	if (ndrop > 0 && job->ntasks == 0)
	{
		/* its last task is gone: so is the job, as after cleanup_job */
		(void) tt_job_drop(job, &want->detached);
		want->job_gone = true;
	}
	pfree(tasks);
	return n;
}

/*
 * wait_for_reports
 *		The body of wait_for_tasks and wait_for_task_results: sleep
 *		(interruptibly, on the job's condition variable) until at least one
 *		task of the job reached a final state not yet reported to this
 *		session, or the timeout passes, and return the reports; want as for
 *		take_reports.  The result's columns are wait_for_tasks', plus
 *		result and dropped when want is given.  Looking takes the lock in
 *		shared mode; only handing out (and dropping) rows takes it
 *		exclusively.
 */
static void
wait_for_reports(FunctionCallInfo fcinfo, int64 job_id, int32 timeout_ms, ResultRequest *want)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ConditionVariable *cv = tt_job_cv(job_id);
	TimestampTz deadline;
	Reported   *reported = NULL;
	int			n;
	bool		sleeping = false;

	check_job_id(job_id);
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout_ms must not be negative")));

	InitMaterializedSRF(fcinfo, 0);
	wait_until_ready();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	for (;;)
	{
		long		left;

		LWLockAcquire(tt_shared->lock, LW_SHARED);
		n = take_reports(job_id, &reported, want, false);
		LWLockRelease(tt_shared->lock);
		if (n == TAKE_NEEDS_EXCLUSIVE)
		{
			LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
			n = take_reports(job_id, &reported, want, true);
			LWLockRelease(tt_shared->lock);
			tt_job_wake_pending();
		}

		if (n < 0)
		{
			if (sleeping)
				ConditionVariableCancelSleep();
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("job " INT64_FORMAT " not found", job_id)));
		}
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (n > 0 || left <= 0)
			break;
		if (!sleeping)
		{
			/* register first, then re-check, so no broadcast is missed */
			ConditionVariablePrepareToSleep(cv);
			sleeping = true;
			continue;
		}
		ConditionVariableTimedSleep(cv, left, TT_WAIT_TASKS);
	}
	if (sleeping)
		ConditionVariableCancelSleep();

	if (want != NULL && want->job_gone)
	{
		/* what this backend was told about the job goes with it */
		hash_search(seen_jobs, &job_id, HASH_REMOVE, NULL);
		tt_result_remove_detached(want->detached);
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};

		values[0] = Int32GetDatum(reported[i].task_id);
		values[1] = CStringGetTextDatum(tt_status_name(reported[i].status));
		if (reported[i].error)
			values[2] = CStringGetTextDatum(convert_for_view(reported[i].error,
															 reported[i].encoding));
		else
			nulls[2] = true;
		if (reported[i].sqlstate[0] && reported[i].status != TT_SUCCEEDED)
			values[3] = CStringGetTextDatum(reported[i].sqlstate);
		else
			nulls[3] = true;
		if (reported[i].result_rows >= 0)
			values[4] = Int64GetDatum(reported[i].result_rows);
		else
			nulls[4] = true;
		if (want != NULL)
		{
			values[5] = PointerGetDatum(reported[i].result);
			nulls[5] = (reported[i].result == NULL);
			values[6] = BoolGetDatum(reported[i].dropped);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

Datum
task_tracker_wait_for_tasks(PG_FUNCTION_ARGS)
{
	require_args(fcinfo, 2, "job_id", "timeout_ms");
	wait_for_reports(fcinfo, PG_GETARG_INT64(0), PG_GETARG_INT32(1), NULL);
	return (Datum) 0;
}

/*
 * task_tracker_wait_for_task_results
 *		wait_for_task_results(job_id, timeout_ms, max_bytes, columns): like
 *		wait_for_tasks, and each succeeded task reported comes with its rows
 *		(COPY text, as task_result_copy gives them) when they are kept in
 *		shared memory and, all together, within max_bytes; with columns
 *		given, only results of that many columns come along.  A task whose
 *		rows came along is dropped (dropped = true) when this session
 *		assigned it.  Others are reported without rows (result NULL): fetch
 *		them with task_result_copy.  Rows come only to a session whose
 *		client_encoding is the database's (or SQL_ASCII), and only when the
 *		task ran in a database of the same encoding (or the rows are ASCII):
 *		anything else would need a conversion, which could fail after the
 *		drop; task_result_copy converts them.
 */
Datum
task_tracker_wait_for_task_results(PG_FUNCTION_ARGS)
{
	ResultRequest want;
	int			client = pg_get_client_encoding();

	require_args(fcinfo, 3, "job_id", "timeout_ms", "max_bytes");
	if (PG_GETARG_INT32(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_bytes must not be negative")));
	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("columns must not be negative")));

	memset(&want, 0, sizeof(want));
	want.budget = PG_GETARG_INT32(2);
	want.columns = PG_ARGISNULL(3) ? -1 : PG_GETARG_INT32(3);
	want.inline_ok = (client == GetDatabaseEncoding() || client == PG_SQL_ASCII);
	wait_for_reports(fcinfo, PG_GETARG_INT64(0), PG_GETARG_INT32(1), &want);
	return (Datum) 0;
}

/*
 * open_result
 *		Start reading the result of the caller's task (job_id, task_id):
 *		copy its in-memory result under the lock (in shared mode), so that
 *		cleanup cannot free it before, or note its file's path and open it
 *		once the lock is released.  A file removed in between (the job was
 *		cleaned up) makes the task "not found", as it is by then; so does a
 *		job that was cleaned up and assigned again meanwhile (the lock is
 *		taken once more after the file is open to check that it is still
 *		the same incarnation of the job, whose file this is).  Errors
 *		out when the task is not the caller's or has not succeeded.
 *		Returns false when it succeeded without a result (a statement that
 *		returns no rows).  The reader converts the rows from the encoding of
 *		the task's database to the caller's (see the file header).  name
 *		(MAXPGPATH bytes) must live as long as the reader.
 */
static bool
open_result(int64 job_id, int32 task_id, TTResultReader *reader, char *name)
{
	TTTrackedTask	   *task;
	FILE	   *file = NULL;
	TTTaskStatus status;
	char	   *copy = NULL;
	Size		copy_size = 0;
	bool		has_file = false;
	int			encoding;
	TTTrackedJob	   *job;
	uint64		incarnation;

	wait_until_ready();

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	task = lookup_own_task(job_id, task_id, &job);
	incarnation = job ? job->incarnation : 0;
	status = task->status;
	encoding = task->encoding;
	if (status == TT_SUCCEEDED && DsaPointerIsValid(task->result))
	{
		copy_size = task->result_size;
		copy = palloc(Max(copy_size, 1));
		memcpy(copy, tt_text_get(task->result), copy_size);
	}
	else if (status == TT_SUCCEEDED && task->has_file)
	{
		tt_task_file_path(name, MAXPGPATH, job_id, task_id, task->owner);
		has_file = true;
	}
	LWLockRelease(tt_shared->lock);

	if (status != TT_SUCCEEDED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task (job " INT64_FORMAT ", task %d) has no result", job_id, task_id),
				 errdetail("Its status is %s; only succeeded tasks have results.",
						   tt_status_name(status))));
	if (copy != NULL)
	{
		snprintf(name, MAXPGPATH, "in-memory result of task (job " INT64_FORMAT ", task %d)",
				 job_id, task_id);
		tt_result_reader_open_memory(reader, copy, copy_size, name);
		tt_result_reader_set_encoding(reader, encoding);
		return true;
	}
	if (has_file)
	{
		int			save_errno;

		file = AllocateFile(name, PG_BINARY_R);
		save_errno = errno;

		/* still the same task of the same job, with its file? */
		LWLockAcquire(tt_shared->lock, LW_SHARED);
		task = tt_task_lookup(job_id, task_id);
		job = tt_job_lookup(job_id, false, InvalidOid);
		has_file = (task != NULL && job != NULL && job->incarnation == incarnation &&
					task->status == TT_SUCCEEDED && task->has_file);
		LWLockRelease(tt_shared->lock);
		if (!has_file)
		{
			if (file != NULL)
				FreeFile(file);
			task_not_found(job_id, task_id);
		}
		errno = save_errno;
		if (file == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not open result file \"%s\": %m", name)));
		tt_result_reader_open_file(reader, file, name);
		tt_result_reader_set_encoding(reader, encoding);
		return true;
	}
	return false;
}

Datum
task_tracker_task_result(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		job_id;
	int32		task_id;
	TTResultReader reader;
	char		name[MAXPGPATH];

	require_args(fcinfo, 2, "job_id", "task_id");
	job_id = PG_GETARG_INT64(0);
	task_id = PG_GETARG_INT32(1);
	check_job_id(job_id);
	check_task_id(task_id);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	if (open_result(job_id, task_id, &reader, name))
	{
		tt_result_read(&reader, rsinfo->setDesc, rsinfo->setResult);
		tt_result_reader_close(&reader);
	}
	return (Datum) 0;
}

/* What task_result_copy keeps between its calls. */
typedef struct ResultCopyState
{
	TTResultReader reader;		/* the stored result */
	bool		open;			/* reader is open */
	char		name[MAXPGPATH];	/* the result's name, for errors */
} ResultCopyState;

/*
 * result_copy_close
 *		Close the result: at the end of the rows, or from the expression
 *		context's shutdown when the caller stops early (LIMIT, rescan).
 */
static void
result_copy_close(Datum arg)
{
	ResultCopyState *st = (ResultCopyState *) DatumGetPointer(arg);

	if (st->open)
		tt_result_reader_close(&st->reader);
	st->open = false;
}

/*
 * result_copy_done
 *		The last call: close the result and forget the shutdown callback,
 *		whose state goes with the call sequence's memory.
 */
static void
result_copy_done(FunctionCallInfo fcinfo, ResultCopyState *st)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	result_copy_close(PointerGetDatum(st));
	UnregisterExprContextCallback(rsinfo->econtext, result_copy_close, PointerGetDatum(st));
}

/*
 * task_tracker_task_result_copy
 *		task_result_copy(job_id, task_id, skip_rows, columns): the stored
 *		result of a succeeded task as COPY text, in chunks of whole lines
 *		(about TT_RESULT_CHUNK_SIZE bytes each), after its first skip_rows
 *		rows.  When columns is not NULL, the result must have that many
 *		columns (the check task_result makes against its column definition
 *		list).  Owner or superuser only, like task_result.  Value per call:
 *		called in a select list, it streams without a tuplestore.
 */
Datum
task_tracker_task_result_copy(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	ResultCopyState *st;
	MemoryContext old;
	char	   *data;
	int			len;
	bool		more;

	if (SRF_IS_FIRSTCALL())
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		int64		job_id;
		int32		task_id;
		int64		skip;

		require_args(fcinfo, 3, "job_id", "task_id", "skip_rows");
		job_id = PG_GETARG_INT64(0);
		task_id = PG_GETARG_INT32(1);
		skip = PG_GETARG_INT64(2);
		check_job_id(job_id);
		check_task_id(task_id);
		if (skip < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("skip_rows must not be negative")));
		if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("columns must not be negative")));

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		st = palloc0(sizeof(ResultCopyState));
		st->open = open_result(job_id, task_id, &st->reader, st->name);
		funcctx->user_fctx = st;
		RegisterExprContextCallback(rsinfo->econtext, result_copy_close, PointerGetDatum(st));
		if (st->open && !PG_ARGISNULL(3))
			tt_result_check_columns(&st->reader, PG_GETARG_INT32(3));
		for (int64 i = 0; st->open && i < skip; i++)
		{
			char	   *line;

			if (!tt_result_next_line(&st->reader, &line, &len))
				break;
			if ((i & 1023) == 0)
				CHECK_FOR_INTERRUPTS();
		}
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	st = (ResultCopyState *) funcctx->user_fctx;
	if (!st->open)
	{
		result_copy_done(fcinfo, st);
		SRF_RETURN_DONE(funcctx);
	}

	/* the reader's buffers live as long as the call sequence */
	old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
	more = tt_result_next_chunk(&st->reader, TT_RESULT_CHUNK_SIZE, &data, &len);
	MemoryContextSwitchTo(old);
	if (more)
		SRF_RETURN_NEXT(funcctx, PointerGetDatum(cstring_to_text_with_len(data, len)));
	result_copy_done(fcinfo, st);
	SRF_RETURN_DONE(funcctx);
}

Datum
task_tracker_cleanup_job(PG_FUNCTION_ARGS)
{
	char	   *detached;
	int64		job_id;
	TTTrackedJob	   *job;
	bool		wait;

	require_args(fcinfo, 1, "job_id");
	job_id = PG_GETARG_INT64(0);
	check_job_id(job_id);
	wait_until_ready();

	/* forget what this backend was told about the job */
	if (seen_jobs != NULL)
		hash_search(seen_jobs, &job_id, HASH_REMOVE, NULL);

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	job = tt_job_lookup(job_id, false, InvalidOid);
	if (job == NULL)
	{
		LWLockRelease(tt_shared->lock);
		PG_RETURN_VOID();
	}
	if (!may_act_for(job->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("job " INT64_FORMAT " belongs to another user", job_id)));

	wait = !tt_job_drop(job, &detached);
	LWLockRelease(tt_shared->lock);
	tt_job_wake_pending();
	tt_result_remove_detached(detached);

	if (!wait)
		PG_RETURN_VOID();

	/* wait until the tracker has stopped the running tasks and removed the job */
	ConditionVariablePrepareToSleep(tt_job_cv(job_id));
	for (;;)
	{
		bool		gone;

		LWLockAcquire(tt_shared->lock, LW_SHARED);
		job = tt_job_lookup(job_id, false, InvalidOid);
		gone = (job == NULL || !job->dropping);
		LWLockRelease(tt_shared->lock);
		if (gone)
			break;
		ConditionVariableSleep(tt_job_cv(job_id), TT_WAIT_CLEANUP);
	}
	ConditionVariableCancelSleep();
	PG_RETURN_VOID();
}

/* A copy of one task for the tasks view. */
typedef struct TaskRow
{
	TTTrackedTask		t;
	bool		visible;		/* the viewer may see its texts */
	bool		copied;			/* query and error were copied */
	char	   *query;
	char	   *error;
} TaskRow;

static Datum
timestamp_or_null(TimestampTz ts, bool *isnull)
{
	*isnull = (ts == 0);
	return TimestampTzGetDatum(ts);
}

/*
 * copy_texts
 *		Copy the query and error of task into r.  Caller holds the lock.
 */
static void
copy_texts(TaskRow *r, TTTrackedTask *task)
{
	char	   *q = tt_text_get(task->query);
	char	   *e = tt_text_get(task->error);

	r->query = q ? pstrdup(q) : NULL;
	r->error = e ? pstrdup(e) : NULL;
	r->copied = true;
}

/*
 * task_tracker_task_list
 *		The tasks view.  Under the lock (shared mode) it copies each task's
 *		fixed part, and the texts only of the tasks whose owner the viewer
 *		is, or of all when the viewer sees everything; whether the viewer
 *		has the privileges of another owner is a catalog question, asked
 *		after the lock is released, and the texts of those tasks are copied
 *		in a second short visit (of the tasks still there in the same
 *		assignment).  So the lock is never held for texts the viewer may
 *		not see, nor across catalog access.
 */
Datum
task_tracker_task_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	TTTrackedTask	   *task;
	TaskRow    *rows;
	int			n = 0;
	int			nlater = 0;
	Oid			viewer = GetUserId();
	bool		see_all;

	tt_shmem_check();
	InitMaterializedSRF(fcinfo, 0);
	see_all = superuser() || has_privs_of_role(viewer, ROLE_PG_READ_ALL_STATS);

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	rows = palloc0(sizeof(TaskRow) * (tt_shared->ntasks + 1));
	hash_seq_init(&seq, tt_task_hash);
	while ((task = hash_seq_search(&seq)) != NULL)
	{
		TaskRow    *r = &rows[n++];

		r->t = *task;
		if (see_all || task->owner == viewer)
			copy_texts(r, task);
	}
	LWLockRelease(tt_shared->lock);

	for (int i = 0; i < n; i++)
	{
		rows[i].visible = rows[i].copied || has_privs_of_role(viewer, rows[i].t.owner);
		if (rows[i].visible && !rows[i].copied)
			nlater++;
	}
	if (nlater > 0)
	{
		LWLockAcquire(tt_shared->lock, LW_SHARED);
		for (int i = 0; i < n; i++)
		{
			TaskRow    *r = &rows[i];

			if (!r->visible || r->copied)
				continue;
			task = tt_task_lookup(r->t.key.job_id, r->t.key.task_id);
			if (task != NULL && task->seq == r->t.seq)
				copy_texts(r, task);
		}
		LWLockRelease(tt_shared->lock);
	}

	for (int i = 0; i < n; i++)
	{
		TaskRow    *r = &rows[i];
		Datum		values[14];
		bool		nulls[14];
		bool		visible = r->visible;

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum(r->t.key.job_id);
		values[1] = Int32GetDatum(r->t.key.task_id);
		values[2] = CStringGetTextDatum(tt_status_name(r->t.status));
		values[3] = NameGetDatum(&r->t.user_name);
		values[4] = NameGetDatum(&r->t.database_name);
		if (visible && r->query)
			values[5] = CStringGetTextDatum(convert_for_view(r->query, r->t.encoding));
		else
			nulls[5] = true;
		values[6] = Int32GetDatum(r->t.attempts);
		values[7] = timestamp_or_null(r->t.assigned_at, &nulls[7]);
		values[8] = timestamp_or_null(r->t.started_at, &nulls[8]);
		values[9] = timestamp_or_null(r->t.finished_at, &nulls[9]);
		values[10] = Int32GetDatum(r->t.backend_pid);
		nulls[10] = (r->t.backend_pid == 0);
		if (visible && r->error)
			values[11] = CStringGetTextDatum(convert_for_view(r->error, r->t.encoding));
		else
			nulls[11] = true;
		values[12] = Int64GetDatum(r->t.result_rows);
		nulls[12] = (r->t.result_rows < 0);
		if (visible && r->t.sqlstate[0])
			values[13] = CStringGetTextDatum(r->t.sqlstate);
		else
			nulls[13] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
task_tracker_tracker_info(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[12];
	bool		nulls[12];

	tt_shmem_check();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(nulls, 0, sizeof(nulls));

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	values[0] = Int32GetDatum(tt_shared->tracker_pid);
	nulls[0] = (tt_shared->tracker_pid == 0);
	values[1] = Int32GetDatum(tt_shared->ntasks);
	values[2] = Int32GetDatum(max_tracked_tasks_per_node);
	values[3] = Int32GetDatum(tt_shared->nrunning);
	/* the limit in force: the setting within the descriptor budget */
	values[4] = Int32GetDatum(Min(max_running_tasks_per_node,
								  tt_running_limit_budget()));
	values[5] = Int64GetDatum((int64) tt_shared->succeeded);
	values[6] = Int64GetDatum((int64) tt_shared->failed);
	values[7] = Int32GetDatum((int32) pg_atomic_read_u32(&tt_shared->nconnections));
	values[8] = timestamp_or_null((TimestampTz) pg_atomic_read_u64(&tt_shared->last_wakeup),
								  &nulls[8]);
	values[9] = Int64GetDatum((int64) pg_atomic_read_u64(&tt_shared->wakeups));
	values[10] = Int64GetDatum((int64) tt_shmem_size());
	values[11] = Int64GetDatum(tt_shared->text_bytes);
	LWLockRelease(tt_shared->lock);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
