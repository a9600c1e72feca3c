/*-------------------------------------------------------------------------
 *
 * executor.c
 *	  What the coordinator's two executors share: task queues, failover to
 *	  the next placement, turning remote rows into result tuples, the one
 *	  wait on every socket and the latch, and the cleanup that runs when a
 *	  job fails, is canceled, or its backend exits.  Sending, cancelling
 *	  and error mapping are the libpq module's (src/common/remote.c).
 *
 * Design
 *	  A job (TTJob) lives in a memory context of its own, a child of
 *	  TopMemoryContext, from the moment run_job() has read its task list
 *	  until its cleanup has run, because that cleanup may have to run from
 *	  the transaction abort callback (pg_terminate_backend ends the backend
 *	  with FATAL, which never reaches a PG_CATCH).  Running jobs are kept in
 *	  a backend-local list; on ERROR, run_job()'s PG_CATCH calls the
 *	  executor's cleanup and unregisters the job; on FATAL or any abort that
 *	  skipped it, the XACT_EVENT_ABORT callback does the same.  Cleanup runs
 *	  with interrupts held and bounded waits: it cancels remote queries
 *	  still running (pg_cancel_backend over a spare connection, never
 *	  libpq's blocking PQcancel: see src/coordinator/connection_cache.c), closes every
 *	  connection whose state is unknown or whose node does not answer,
 *	  and (task-tracker) drops the job on every node.  No wait there
 *	  depends on a node answering: a frozen node costs at most
 *	  Min(citus.node_connection_timeout, 2 s) before it is given up.
 *
 *	  Rows arrive in text and go, row by row as they are read
 *	  (tt_job_drain), through the column types' input functions straight
 *	  into the result tuplestore, which spills to disk past work_mem; no
 *	  task's result is ever held whole in memory.  They come as COPY text
 *	  lines, split by the shared parser (src/common/copy_text.c,
 *	  tt_job_store_copy_line): the COPY (query) TO STDOUT of a real-time
 *	  task whose query allows it (tt_copy_query); the task-tracker
 *	  executor's task_result_copy chunks (one-column rows, single-row
 *	  mode), the rows sent along with a report, and from a worker at 1.0
 *	  the COPY of task_result().  A real-time task whose query cannot run
 *	  as COPY is read in single-row mode, a row per result (store_rows).
 *
 *	  Failover: a task that fails at a placement moves to the next
 *	  placement whose node is not down; when none is left, the job fails
 *	  with the task's remote error (its SQLSTATE, message, detail, hint
 *	  and remote context, then the node and task in our context:
 *	  tt_raise_remote_error).  A task whose rows have
 *	  partly reached the result cannot move (its rows would be duplicated),
 *	  so it fails the job at once.
 *
 * Locking
 *	  None: all of this is process-local.  The progress table in shared
 *	  memory is updated through src/coordinator/coordinator.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "common/tt_conn_auth.h"
#include "common/tt_copy_text.h"
#include "coordinator/tt_executor.h"
#include "coordinator/tt_node_budget.h"
#include "common/tt_waits.h"

static List *active_jobs = NIL;
static bool xact_callback_registered = false;

static void executor_xact_callback(XactEvent event, void *arg);
static char *copy_query(const char *query);
static void store_values(TTJob *job);
static void column_mismatch(TTJob *job, TTTask *task, int ncols) pg_attribute_noreturn();

/*
 * Task queues: ring buffers of task pointers, allocated in the job's
 * context (the caller's current context is the job's when it pushes).
 */
static void
queue_grow(TTTaskQueue *q)
{
	int			newcap = q->cap > 0 ? q->cap * 2 : 16;
	TTTask	  **items;
	int			i;

	if (q->items)
		items = MemoryContextAlloc(GetMemoryChunkContext(q->items),
								   sizeof(TTTask *) * newcap);
	else
		items = palloc(sizeof(TTTask *) * newcap);
	for (i = 0; i < q->len; i++)
		items[i] = q->items[(q->head + i) % q->cap];
	if (q->items)
		pfree(q->items);
	q->items = items;
	q->head = 0;
	q->cap = newcap;
}

void
tt_queue_push(TTTaskQueue *q, TTTask *task)
{
	if (q->len == q->cap)
		queue_grow(q);
	q->items[(q->head + q->len) % q->cap] = task;
	q->len++;
}

void
tt_queue_push_front(TTTaskQueue *q, TTTask *task)
{
	if (q->len == q->cap)
		queue_grow(q);
	q->head = (q->head + q->cap - 1) % q->cap;
	q->items[q->head] = task;
	q->len++;
}

TTTask *
tt_queue_pop(TTTaskQueue *q)
{
	TTTask	   *task;

	if (q->len == 0)
		return NULL;
	task = q->items[q->head];
	q->head = (q->head + 1) % q->cap;
	q->len--;
	return task;
}

TTNode *
tt_task_node(TTJob *job, TTTask *task)
{
	return &job->nodes[task->placements[task->cur]];
}

/*
 * tt_job_register
 *		Put a job in the list of running jobs, so that an abort of the
 *		transaction or the backend cleans it up.
 */
void
tt_job_register(TTJob *job)
{
	MemoryContext old;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(executor_xact_callback, NULL);
		xact_callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	active_jobs = lcons(job, active_jobs);
	MemoryContextSwitchTo(old);
}

/*
 * tt_job_unregister
 *		Forget a job whose cleanup has run: release its progress slot and
 *		free its memory (job itself included).  Never throws.
 */
void
tt_job_unregister(TTJob *job)
{
	active_jobs = list_delete_ptr(active_jobs, job);
	/* a control connection still being set up waits for the next job */
	tt_conncache_control_park();
	if (job->reserved)
		tt_budget_unreserve(job->budget_nodes, job->nnodes);
	job->reserved = false;
	tt_job_slot_release(job->slot);
	if (job->cur_res)
		PQclear(job->cur_res);
	job->cur_res = NULL;
	if (job->cur_copy)
		PQfreemem(job->cur_copy);
	job->cur_copy = NULL;
	MemoryContextDelete(job->cxt);
}

/*
 * tt_job_reserve
 *		Reserve one slot of the coordinator's connection budget on every node
 *		of the job (src/coordinator/node_budget.c), all at once, before the executor
 *		connects anywhere: the job's first connection to each node.  Waits
 *		while the budget is exhausted (the job shows as starting);
 *		cancellable.  tt_job_unregister gives the reservation back.
 */
void
tt_job_reserve(TTJob *job)
{
	int			i;

	if (job->reserved || job->nnodes == 0)
		return;
	job->budget_nodes = MemoryContextAlloc(job->cxt, sizeof(int) * job->nnodes);
	for (i = 0; i < job->nnodes; i++)
		job->budget_nodes[i] = tt_budget_node(job->nodes[i].host, job->nodes[i].port);
	tt_budget_reserve(job->budget_nodes, job->nnodes);
	job->reserved = true;
}

/*
 * executor_xact_callback
 *		On abort, clean up every job that is still registered (its PG_CATCH
 *		did not run: FATAL, or an error inside the cleanup itself), then
 *		close every connection still lent out: their state is unknown.
 */
static void
executor_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;

	while (active_jobs != NIL)
	{
		TTJob	   *job = (TTJob *) linitial(active_jobs);

		if (!job->cleaned && job->cleanup)
			job->cleanup(job, true);
		tt_job_unregister(job);
	}
	tt_conncache_abort_cleanup();
}

void
tt_job_progress(TTJob *job, TTJobState state)
{
	tt_job_slot_update(job->slot, state, job->tasks_done, job->tasks_failed);
}

static void
copy_error(TTRemoteError *dst, const TTRemoteError *src)
{
	memcpy(dst->sqlstate, src->sqlstate, sizeof(dst->sqlstate));
	dst->message = src->message ? pstrdup(src->message) : pstrdup("unknown error");
	dst->detail = src->detail ? pstrdup(src->detail) : NULL;
	dst->hint = src->hint ? pstrdup(src->hint) : NULL;
	dst->context = src->context ? pstrdup(src->context) : NULL;
}

/*
 * tt_raise_task_error
 *		Fail the job with the task's last remote error.
 */
void
tt_raise_task_error(TTJob *job, TTTask *task)
{
	TTNode	   *node = &job->nodes[task->error_node];
	char	   *context;

	context = psprintf("task %d of job " INT64_FORMAT " on node %s, query: %s",
					   task->task_id, job->job_id, node->name, task->query);
	tt_raise_remote_error(ERROR, &task->error, context);
	pg_unreachable();
}

/*
 * tt_task_failed_at_placement
 *		The task failed at its current placement with err: move it to its
 *		next placement whose node is not down (queued there), or, when none
 *		is left or its rows already partly reached the result, fail the job.
 */
void
tt_task_failed_at_placement(TTJob *job, TTTask *task, const TTRemoteError *err)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);

	if (err != &task->error)
		copy_error(&task->error, err);
	task->has_error = true;
	task->error_node = task->placements[task->cur];
	job->tasks_failed++;

	if (task->rows > 0)
		tt_raise_task_error(job, task);

	do
		task->cur++;
	while (task->cur < task->nplacements && tt_task_node(job, task)->down);

	if (task->cur >= task->nplacements)
		tt_raise_task_error(job, task);

	task->state = TT_TASK_PENDING;
	task->retried_fresh = false;
	tt_queue_push(&tt_task_node(job, task)->pending, task);
	MemoryContextSwitchTo(old);
	tt_job_progress(job, TT_JOB_RUNNING);
}

/*
 * tt_node_set_down
 *		Give up on a node for the rest of the job: its queued tasks move to
 *		their next placements (or fail the job).
 */
void
tt_node_set_down(TTJob *job, TTNode *node, const TTRemoteError *err)
{
	MemoryContext old = MemoryContextSwitchTo(job->cxt);
	TTTask	   *task;

	if (!node->down)
	{
		node->down = true;
		copy_error(&node->down_error, err);
	}
	MemoryContextSwitchTo(old);
	while ((task = tt_queue_pop(&node->pending)) != NULL)
		tt_task_failed_at_placement(job, task, &node->down_error);
}

/*
 * tt_connect_failure
 *		A new connection c to node failed or ran out of
 *		citus.node_connection_timeout (tt_conncache_connect_poll returned
 *		-1; c is not released yet).  Fills *err (08001) with why, and
 *		returns whether the failure may be passing: the node is there but
 *		turned the attempt away for now (53300 too many connections, 57P03
 *		cannot connect now, EAGAIN: by SQLSTATE and errno, see
 *		tt_conn_connect_error), or it did not answer in time (it may only be
 *		slow: slow is not dead).  Anything else (a closed port,
 *		authentication...) is no passing failure.  An authentication failure
 *		(tt_is_auth_failure) sets node->auth_failed and gets the message,
 *		DETAIL and HINT of tt_auth_error: trying again cannot help.
 *		Both executors use it.  Throws only on out-of-memory.
 */
bool
tt_connect_failure(TTNode *node, TTConn *c, TTRemoteError *err)
{
	bool		transient;

	memset(err, 0, sizeof(*err));
	strlcpy(err->sqlstate, "08001", sizeof(err->sqlstate));
	if (!c->connecting && PQstatus(c->conn) != CONNECTION_BAD)
	{
		err->message = psprintf("could not connect to node %s: timeout expired",
								node->name);
		return true;
	}
	err->message = tt_conn_connect_error(c->conn, &transient);
	if (tt_is_auth_failure(NULL, err->message))
	{
		const char *user_name;
		const char *dbname;

		tt_conncache_names(c, &user_name, &dbname);
		tt_auth_error(err, err->message, TT_AUTH_COORDINATOR, user_name,
					  psprintf("node %s", node->name), dbname);
		node->auth_failed = true;
		return false;
	}
	return transient;
}

/*
 * tt_connect_back_off
 *		No new connection to node for a jittered, growing time (100 ms
 *		doubling up to 2 s), like the tracker's reconnects: sets
 *		node->connect_after.
 */
void
tt_connect_back_off(TTNode *node)
{
	int			ms;

	node->backoff_ms = node->backoff_ms <= 0 ? 100 : Min(node->backoff_ms * 2, 2000);
	ms = node->backoff_ms / 2 + (int) (pg_prng_uint32(&pg_global_prng_state) % (node->backoff_ms / 2 + 1));
	node->connect_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
}

/*
 * tt_connect_retry
 *		The job's only attempt to node had a passing failure
 *		(tt_connect_failure).  Returns true, with a back-off set
 *		(tt_connect_back_off: retry at node->connect_after), while the
 *		first such failure since the last success is less than
 *		citus.node_connection_timeout ago; false once longer, when the
 *		caller gives the node up.  So a node that does not answer at all is
 *		given up after about twice citus.node_connection_timeout, one that
 *		keeps turning attempts away after about that timeout.
 */
bool
tt_connect_retry(TTNode *node)
{
	TimestampTz now = GetCurrentTimestamp();

	if (node->refused_since == 0)
		node->refused_since = now;
	if (now >= TimestampTzPlusMilliseconds(node->refused_since, node_connection_timeout))
		return false;
	tt_connect_back_off(node);
	return true;
}

/* a connection to node was set up: the passing failures are over */
void
tt_connect_succeeded(TTNode *node)
{
	node->backoff_ms = 0;
	node->refused_since = 0;
}

void
tt_task_done(TTJob *job, TTTask *task)
{
	task->state = TT_TASK_DONE;
	job->tasks_done++;
	tt_job_progress(job, TT_JOB_RUNNING);
}

/*
 * column_mismatch
 *		The error of a task whose rows have ncols columns where run_job's
 *		column definition list has another number.
 */
static void
column_mismatch(TTJob *job, TTTask *task, int ncols)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("task %d returned %d columns, but the column definition list has %d",
					task->task_id, ncols, job->tupdesc->natts),
			 errcontext("task %d of job " INT64_FORMAT ", query: %s",
						task->task_id, job->job_id, task->query)));
}

/* put the rows of res into the result; res stays owned by the caller */
static void
store_rows(TTJob *job, TTTask *task, PGresult *res)
{
	int			natts = job->tupdesc->natts;
	int			ntuples = PQntuples(res);
	int			nfields = PQnfields(res);
	int			i,
				j;

	if (nfields != natts)
	{
		job->cur_res = NULL;
		PQclear(res);
		column_mismatch(job, task, nfields);
	}
	for (i = 0; i < ntuples; i++)
	{
		for (j = 0; j < natts; j++)
			job->values[j] = PQgetisnull(res, i, j) ? NULL : PQgetvalue(res, i, j);
		store_values(job);
	}
	task->rows += ntuples;
}

/*
 * store_values
 *		Convert the text values of the row at hand (job->values, NULL for
 *		an SQL NULL) with the input functions of the result's columns and
 *		put the row into the result.
 */
static void
store_values(TTJob *job)
{
	AttInMetadata *meta = job->attinmeta;
	MemoryContext old = MemoryContextSwitchTo(job->rowcxt);

	for (int i = 0; i < job->tupdesc->natts; i++)
	{
		job->nulls[i] = (job->values[i] == NULL);
		job->datums[i] = InputFunctionCall(&meta->attinfuncs[i], job->values[i],
										   meta->attioparams[i], meta->atttypmods[i]);
	}
	tuplestore_putvalues(job->tupstore, job->tupdesc, job->datums, job->nulls);
	MemoryContextSwitchTo(old);
	MemoryContextReset(job->rowcxt);
}

/*
 * tt_job_store_copy_line
 *		Put one row given as a COPY text line (len bytes at line, without
 *		its newline; line[len] must be writable, and the line is ours to
 *		change) into the result: split and de-escaped by the shared parser
 *		(src/common/copy_text.c), each value through the input function of its
 *		column, formed straight into the tuplestore.  Every path that
 *		receives COPY text — the real-time executor's COPY, the task-tracker
 *		executor's task_result_copy chunks and inline results — stores rows
 *		here.  Throws when the line's columns do not match the column
 *		definition list.
 */
void
tt_job_store_copy_line(TTJob *job, TTTask *task, char *line, int len)
{
	int			natts = job->tupdesc->natts;
	int			n;

	n = tt_copy_text_split(line, len, job->values, natts);
	if (n != natts)
		column_mismatch(job, task, n);
	store_values(job);
	task->rows++;
}

/*
 * tt_job_store_copy_text
 *		Put the rows of len bytes of whole COPY text lines at data (which is
 *		ours to change) into the result, line by line
 *		(tt_job_store_copy_line): a chunk of task_result_copy, or the
 *		result that came along with a task's report.
 */
void
tt_job_store_copy_text(TTJob *job, TTTask *task, char *data, int len)
{
	char	   *end = data + len;

	while (data < end)
	{
		char	   *nl = memchr(data, '\n', end - data);

		if (nl == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("task %d returned an incomplete row", task->task_id),
					 errcontext("task %d of job " INT64_FORMAT ", query: %s",
								task->task_id, job->job_id, task->query)));
		tt_job_store_copy_line(job, task, data, nl - data);
		data = nl + 1;
	}
}

/*
 * drain_copy
 *		Read the COPY data of task's query that has arrived: rows into the
 *		result (when store), then, at the end of the data, the COPY's own
 *		result.  Returns TT_DRAIN_BUSY while more input is needed, or
 *		TT_DRAIN_DONE once the COPY is over (task->copying is then false and
 *		its error, if any, is in *err).
 */
static TTDrainResult
drain_copy(TTJob *job, PGconn *conn, TTTask *task, bool store, TTRemoteError *err)
{
	for (;;)
	{
		char	   *buf = NULL;
		int			len = PQgetCopyData(conn, &buf, 1);

		if (len > 0)
		{
			job->cur_copy = buf;	/* freed by tt_job_unregister on error */
			if (store && err->message == NULL)
				tt_job_store_copy_line(job, task, buf,
									   buf[len - 1] == '\n' ? len - 1 : len);
			job->cur_copy = NULL;
			PQfreemem(buf);
			if ((task->rows & 1023) == 0)
				CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (len == 0)
			return TT_DRAIN_BUSY;
		task->copying = false;
		if (len == -2)
		{
			if (err->message == NULL)
				tt_remote_error_from_conn(conn, "08006", err);
			return TT_DRAIN_DONE;
		}
		/* end of the data: the COPY's own result follows */
		return TT_DRAIN_DONE;
	}
}

/*
 * tt_copy_query
 *		When query is one statement that can run as COPY (query) TO STDOUT
 *		(tt_copy_statement_length, the same rule the worker applies to
 *		tracked tasks), that COPY statement (palloc'd); else NULL.  Decided
 *		by the raw parser of the coordinator, without catalog access; a
 *		query that does not parse gets NULL (the worker reports its error);
 *		one the worker still refuses as COPY (0A000) is run as it is.  The answer for the
 *		last query text is remembered: the tasks of a job, and the jobs of
 *		an application, tend to repeat the same text.
 */
char *
tt_copy_query(const char *query)
{
	/* the answer for the last query text (jobs tend to repeat their tasks) */
	static char *last_query = NULL;
	static char *last_copy = NULL;
	char	   *copy;

	if (last_query == NULL || strcmp(last_query, query) != 0)
	{
		if (last_query != NULL)
		{
			pfree(last_query);
			if (last_copy != NULL)
				pfree(last_copy);
			last_query = NULL;
		}
		copy = copy_query(query);
		last_copy = copy ? MemoryContextStrdup(TopMemoryContext, copy) : NULL;
		last_query = MemoryContextStrdup(TopMemoryContext, query);
		return copy;
	}
	return last_copy ? pstrdup(last_copy) : NULL;
}

/* tt_copy_query without the cache */
static char *
copy_query(const char *query)
{
	MemoryContext old = CurrentMemoryContext;
	List	   *stmts = NIL;
	int			len;

	PG_TRY();
	{
		stmts = raw_parser(query, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		FlushErrorState();
		stmts = NIL;
	}
	PG_END_TRY();

	if (list_length(stmts) != 1)
		return NULL;
	len = tt_copy_statement_length(linitial_node(RawStmt, stmts), strlen(query));
	return len > 0 ? tt_copy_wrap(query, len) : NULL;
}

/*
 * tt_job_drain
 *		Read what has arrived on conn for the query of task: rows go into
 *		the result (store_rows), an error is kept in *err (which the caller
 *		zeroed when it sent the query).
 *
 * Returns TT_DRAIN_BUSY while more input is needed, TT_DRAIN_DONE when the
 * query completed, TT_DRAIN_SQL_ERROR when it failed and the connection is
 * still fine, TT_DRAIN_CONN_ERROR when the connection broke (or is in a
 * state we cannot use again).  Throws only when the rows do not fit the
 * column definition list.
 *
 * When task->fetch_tail is set, the query has a second statement after the
 * one returning the task's rows (the task-tracker executor's cleanup_job):
 * its results are not stored and its failure only sets task->tail_failed.
 */
TTDrainResult
tt_job_drain(TTJob *job, PGconn *conn, TTTask *task, bool store, TTRemoteError *err)
{
	if (!PQconsumeInput(conn))
	{
		if (err->message == NULL)
			tt_remote_error_from_conn(conn, "08006", err);
		return TT_DRAIN_CONN_ERROR;
	}

	for (;;)
	{
		PGresult   *res;

		CHECK_FOR_INTERRUPTS();
		if (task != NULL && task->copying)
		{
			if (drain_copy(job, conn, task, store, err) == TT_DRAIN_BUSY)
			{
				if (PQstatus(conn) == CONNECTION_BAD)
				{
					if (err->message == NULL)
						tt_remote_error_from_conn(conn, "08006", err);
					return TT_DRAIN_CONN_ERROR;
				}
				return TT_DRAIN_BUSY;
			}
			continue;
		}
		if (PQisBusy(conn))
		{
			if (PQstatus(conn) == CONNECTION_BAD)
			{
				if (err->message == NULL)
					tt_remote_error_from_conn(conn, "08006", err);
				return TT_DRAIN_CONN_ERROR;
			}
			return TT_DRAIN_BUSY;
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		job->cur_res = res;
		if (task != NULL && task->fetch_tail && task->rows_ended)
		{
			/* a statement after the task's rows: only its failure counts */
			if (PQresultStatus(res) != PGRES_SINGLE_TUPLE &&
				PQresultStatus(res) != PGRES_TUPLES_OK &&
				PQresultStatus(res) != PGRES_COMMAND_OK)
				task->tail_failed = true;
			job->cur_res = NULL;
			PQclear(res);
			continue;
		}
		switch (PQresultStatus(res))
		{
			case PGRES_SINGLE_TUPLE:
			case PGRES_TUPLES_OK:
				if (store && err->message == NULL && task != NULL && task->copy_chunks)
				{
					for (int i = 0; i < PQntuples(res); i++)
					{
						if (PQnfields(res) == 1 && !PQgetisnull(res, i, 0))
							tt_job_store_copy_text(job, task, PQgetvalue(res, i, 0),
												   PQgetlength(res, i, 0));
					}
				}
				else if (store && err->message == NULL)
					store_rows(job, task, res);
				if (task != NULL && task->fetch_tail &&
					PQresultStatus(res) == PGRES_TUPLES_OK)
					task->rows_ended = true;
				break;
			case PGRES_COMMAND_OK:
				if (task != NULL && task->fetch_tail && task->use_copy)
					task->rows_ended = true;
				break;
			case PGRES_EMPTY_QUERY:
				break;
			case PGRES_COPY_OUT:
				if (task != NULL && task->use_copy && !task->rows_ended)
				{
					int			nfields = PQnfields(res);

					job->cur_res = NULL;
					PQclear(res);
					if (nfields != job->tupdesc->natts)
						column_mismatch(job, task, nfields);
					task->copying = true;
					continue;
				}
				/* FALLTHROUGH */
			case PGRES_COPY_IN:
			case PGRES_COPY_BOTH:
				job->cur_res = NULL;
				PQclear(res);
				if (err->message == NULL)
				{
					memset(err, 0, sizeof(*err));
					strlcpy(err->sqlstate, "0A000", sizeof(err->sqlstate));
					err->message = pstrdup("COPY is not supported in tasks");
				}
				return TT_DRAIN_CONN_ERROR;
			default:
				if (err->message == NULL)
					tt_remote_error_from_result(conn, res, err);
				break;
		}
		job->cur_res = NULL;
		PQclear(res);
	}

	if (PQclientEncoding(conn) != GetDatabaseEncoding())
	{
		/*
		 * The task changed client_encoding (SET in a task of several
		 * statements): the server says so only at the end of the query, so
		 * the rows that came after the SET may be in another encoding.  The
		 * task fails (with rows in the result: the job fails, so none of
		 * them reach the user), and the connection is closed, not reused.
		 */
		if (err->message == NULL)
		{
			memset(err, 0, sizeof(*err));
			strlcpy(err->sqlstate, "0A000", sizeof(err->sqlstate));
			err->message = psprintf("a task may not change client_encoding (to %s)",
									pg_encoding_to_char(PQclientEncoding(conn)));
		}
		return TT_DRAIN_CONN_ERROR;
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		if (err->message == NULL)
			tt_remote_error_from_conn(conn, "08006", err);
		return TT_DRAIN_CONN_ERROR;
	}
	if (err->message != NULL)
	{
		/* an error result that came with a broken connection, say */
		if (strncmp(err->sqlstate, "08", 2) == 0 || strcmp(err->sqlstate, "57P01") == 0)
			return TT_DRAIN_CONN_ERROR;
		return TT_DRAIN_SQL_ERROR;
	}
	return TT_DRAIN_DONE;
}

/*
 * tt_ms_until
 *		Milliseconds from now to deadline, at least 0.
 */
long
tt_ms_until(TimestampTz deadline)
{
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
}

/*
 * tt_wait_sockets
 *		The executors' one wait: on the latch, postmaster death and the n
 *		sockets (for events[i]), for at most timeout_ms (-1: no limit);
 *		ready[i] (when ready is not NULL) tells whether socks[i] fired.
 *		Processes interrupts afterwards (unless the caller holds them, as
 *		the cleanup paths do).  The control connections being set up
 *		(tt_conncache_control_open) are waited on too and moved forward
 *		after the wait.
 */
void
tt_wait_sockets(int n, pgsocket *socks, uint32 *events, bool *ready, long timeout_ms)
{
	/* only a job's waits drive control connections (a job's end parks them) */
	int			extra = active_jobs != NIL ? tt_conncache_control_pending() : 0;

	if (extra == 0)
		tt_wait_sockets_raw(n, socks, events, ready, timeout_ms, TT_WAIT_EXECUTOR);
	else
	{
		/* control connections being set up wait along (never a job's cost) */
		pgsocket   *all_socks = palloc(sizeof(pgsocket) * (n + extra));
		uint32	   *all_events = palloc(sizeof(uint32) * (n + extra));
		bool	   *all_ready = palloc(sizeof(bool) * (n + extra));

		memcpy(all_socks, socks, sizeof(pgsocket) * n);
		memcpy(all_events, events, sizeof(uint32) * n);
		extra = tt_conncache_control_sockets(all_socks + n, all_events + n,
											 extra, &timeout_ms);
		tt_wait_sockets_raw(n + extra, all_socks, all_events, all_ready,
							timeout_ms, TT_WAIT_EXECUTOR);
		if (ready)
			memcpy(ready, all_ready, sizeof(bool) * n);
		pfree(all_socks);
		pfree(all_events);
		pfree(all_ready);
		tt_conncache_control_advance();
	}
	CHECK_FOR_INTERRUPTS();
	/* sessions waiting for a slot may have asked us to close idle ones */
	tt_budget_process_drops();
}
