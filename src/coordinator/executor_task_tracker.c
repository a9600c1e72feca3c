/*-------------------------------------------------------------------------
 *
 * executor_task_tracker.c
 *	  The task-tracker executor: hands a job's tasks to the workers' task
 *	  trackers, learns of their completion through wait_for_task_results
 *	  (wait_for_tasks on a worker still at 1.0), which brings small results
 *	  along, fetches the other succeeded tasks' rows at once, and drops the
 *	  job on every node at the end where anything of it may be left
 *	  (executor_task_tracker_cleanup.c).
 *
 * Design
 *	  One connection per node (from the per-backend cache), driven by a
 *	  state machine (TNPhase): connect, learn the tracker's capacity
 *	  (citus.max_tracked_tasks_per_node) and the version of task_tracker
 *	  installed there in one query (remembered per cached connection),
 *	  then in a loop:
 *		- assign queued tasks with assign_tasks(), at most
 *		  citus.max_assign_task_batch_size per round trip, never keeping more
 *		  of our tasks in the tracker's table than it can hold;
 *		- wait for tasks to finish: from a worker at version 1.1 or later,
 *		  wait_for_task_results(), which blocks on the worker until a task
 *		  of the job finishes and brings the rows of succeeded tasks kept
 *		  in the worker's shared memory along (up to TT_WAIT_RESULT_BYTES
 *		  per call), dropping those tasks there (they were assigned over
 *		  this connection); from a worker still at 1.0, wait_for_tasks();
 *		  the last assign_tasks a node gets travels in the same round trip,
 *		  so a small job costs one round trip per node and no cleanup;
 *		- fetch the rows of each other succeeded task straight into the
 *		  result: from a worker at version 1.1 or later, task_result_copy(),
 *		  which hands out the stored COPY text in chunks of whole lines
 *		  (single-row mode, one chunk per result) at the cost of a file
 *		  read there, and the lines go through the shared COPY text parser
 *		  (copy_text.c) and the input functions of run_job's columns; from
 *		  a worker still at 1.0, COPY (SELECT * FROM task_result() AS t(c1
 *		  text, ...)) TO STDOUT, parsed by tt_job_drain;
 *		- when the tracker's table holds as many of our tasks as it can and
 *		  all of them are fetched, drop them (cleanup_job) and go on.
 *	  Rows that come with a report, and fetched chunks, go through the
 *	  same step (tt_job_store_copy_text).  Every node's query is in flight at once and
 *	  the coordinator waits on all their sockets and its latch together
 *	  (tt_wait_sockets); there is no status polling.  The wait is given a
 *	  timeout only so a node also picks up tasks that failed over to it
 *	  while it waited.
 *
 *	  Once connected to a node, the job asks for the node's control
 *	  connection (tt_conncache_control_open): the cancel of a job
 *	  (executor_task_tracker_cleanup.c, TC_CANCEL) goes over it as a side
 *	  query, one round trip on an open connection.
 *
 *	  A first connection that times out or is turned away (too many
 *	  clients, starting up) is tried again after a back-off, as the
 *	  real-time executor does (tt_connect_failure, tt_connect_retry): a
 *	  node is given up only after about twice citus.node_connection_timeout
 *	  without answering, one with a closed port at once.
 *
 *	  A broken connection (tracker restart, node lost) is retried, with a
 *	  growing delay, for citus.node_reconnect_timeout.  Once reconnected,
 *	  the executor reads the job's tasks from task_tracker.tasks: tasks the
 *	  tracker still has are waited for or fetched (a fetch cut short goes on
 *	  after the rows already received: task_result_copy's skip_rows, or
 *	  OFFSET; a stored result is always read in the same order), missing
 *	  ones are assigned again.  A task the worker dropped when it sent its
 *	  rows, whose rows were lost with the connection, is missing too and
 *	  runs again: tasks run at least once, as when a tracker crash or a
 *	  failover runs a task again.  When the node does not come back, its
 *	  tasks move to their next placements.  A node that cannot be reached
 *	  before anything was assigned to it is down for the job at once.
 *
 *	  Liveness: a node can stop answering without closing its sockets (a
 *	  frozen or hung machine, a lost network).  Every query the executor
 *	  sends returns quickly on a live tracker: wait_for_tasks() by its own
 *	  timeout (TT_WAIT_FOR_TASKS_TIMEOUT), the others at once, and a
 *	  fetch streams rows.  So a node whose connection has a query in
 *	  flight and gives no input at all (tt_conn_has_input) for
 *	  TT_WAIT_FOR_TASKS_TIMEOUT + citus.node_reconnect_timeout is treated
 *	  like a broken connection: the connection is closed and the
 *	  reconnection above runs (each attempt bounded by
 *	  citus.node_connection_timeout, all of them by
 *	  citus.node_reconnect_timeout); a node that does not come back has its
 *	  tasks moved to their next placements, or the job fails with a
 *	  connection error naming the node.  No setting but those two is
 *	  involved, and statement_timeout is never needed to get out.
 *
 *	  Job ids are random (src/coordinator/coordinator.c) but can be read while the job
 *	  runs (the jobs view), so another user may claim the job's id on a
 *	  node before the job gets there, or between two waves there.  Each
 *	  node therefore keeps the id the job has there (TTTrackerNode.job_id):
 *	  an assign_tasks refused because the id "belongs to another user",
 *	  while none of our tasks are left on that node, gives the node a new
 *	  random id and the batch goes again (job_id_taken_by_other,
 *	  assign_failed).  The recovery read takes only the caller's own tasks
 *	  of the id.
 *
 * Locking
 *	  None: process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "coordinator/tt_executor.h"
#include "coordinator/tt_executor_task_tracker.h"

/* timeout of one wait_for_tasks call, ms */
#define TT_WAIT_FOR_TASKS_TIMEOUT	1000
/* first and longest delay between reconnection attempts, ms */
#define TT_RECONNECT_DELAY_MIN		50
#define TT_RECONNECT_DELAY_MAX		1000
/* first worker version (major * 1000 + minor) with task_result_copy() */
#define TT_VERSION_RESULT_COPY		1001
/* ... and with wait_for_task_results() */
#define TT_VERSION_WAIT_RESULTS		1001
/* rows one wait_for_task_results call may bring along, bytes */
#define TT_WAIT_RESULT_BYTES		(256 * 1024)
/* new job ids one node may be given when another user took the job's id */
#define TT_JOB_ID_RETRIES			3
/* connections whose node version is remembered before the memory is reset */
#define TT_MAX_NODE_VERSIONS		256

/*
 * The first query on a connection: the tracker's capacity and the version
 * of task_tracker installed in the database (NULL if none).  An error
 * (the setting does not exist) means the node runs no task tracker.
 */
#define TT_NODE_INFO_QUERY \
	"SELECT pg_catalog.current_setting('citus.max_tracked_tasks_per_node'), " \
	"(SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'task_tracker')"

/*
 * The task_tracker version of the node behind a cached connection, learned
 * with its capacity by TT_NODE_INFO_QUERY.  Kept here by connection rather
 * than in TTConn: every new TTConn starts with tracker_capacity -1, which
 * sends that query before anything else, so an entry left by a closed
 * connection whose TTConn address is used again is always replaced before
 * it is read.
 */
typedef struct NodeVersion
{
	TTConn	   *c;				/* hash key */
	PGconn	   *conn;			/* its libpq connection when learned */
	int			version;		/* major * 1000 + minor; 0: not installed */
} NodeVersion;

static HTAB *node_versions = NULL;

/* the node version of c, or -1 when not known (ask TT_NODE_INFO_QUERY) */
static int
node_version(TTConn *c)
{
	NodeVersion *nv;

	if (node_versions == NULL || c->tracker_capacity < 0)
		return -1;
	nv = hash_search(node_versions, &c, HASH_FIND, NULL);
	if (nv == NULL || nv->conn != c->conn)
		return -1;
	return nv->version;
}

/* remember the extversion (text, or NULL) TT_NODE_INFO_QUERY returned for c */
static void
remember_node_version(TTConn *c, const char *extversion)
{
	NodeVersion *nv;
	int			major = 0;
	int			minor = 0;

	if (node_versions != NULL &&
		hash_get_num_entries(node_versions) >= TT_MAX_NODE_VERSIONS)
	{
		/* stale entries of closed connections: start over */
		hash_destroy(node_versions);
		node_versions = NULL;
	}
	if (node_versions == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(TTConn *);
		info.entrysize = sizeof(NodeVersion);
		info.hcxt = TopMemoryContext;
		node_versions = hash_create("task_tracker node versions", 16, &info,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	nv = hash_search(node_versions, &c, HASH_ENTER, NULL);
	nv->conn = c->conn;
	if (extversion == NULL || sscanf(extversion, "%d.%d", &major, &minor) != 2)
		major = minor = 0;
	nv->version = major * 1000 + minor;
}

/* has the node work for its connection (queued, live or unknown tasks)? */
static bool
node_has_work(TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	return node->pending.len > 0 || tn->outstanding > 0 || tn->fetchq.len > 0 ||
		tn->fetching != NULL || tn->needs_recover;
}

/* send a protocol query; false if the connection failed */
static bool
send_protocol_query(TTTrackerNode *tn, const char *sql, TNPhase phase,
					bool single_row)
{
	int			r;

	tn_clear_result(tn);
	memset(&tn->err, 0, sizeof(tn->err));
	tn->nresults = 0;
	r = tt_send_query(tn->c->conn, sql, single_row);
	tn->phase = phase;
	tn->heard_at = GetCurrentTimestamp();
	tn->flushing = (r == 1);
	return r >= 0;
}

/*
 * collect_reply
 *		Read the results of a protocol query: the last row-returning or
 *		command result is kept in tn->res, the first error in tn->err.
 */
static TTDrainResult
collect_reply(TTTrackerNode *tn)
{
	PGconn	   *conn = tn->c->conn;

	if (tn->flushing)
	{
		int			r = tt_flush(conn);

		if (r < 0)
		{
			tt_remote_error_from_conn(conn, "08006", &tn->err);
			return TT_DRAIN_CONN_ERROR;
		}
		tn->flushing = (r == 1);
	}
	if (!PQconsumeInput(conn))
	{
		if (tn->err.message == NULL)
			tt_remote_error_from_conn(conn, "08006", &tn->err);
		return TT_DRAIN_CONN_ERROR;
	}
	while (!PQisBusy(conn))
	{
		PGresult   *res = PQgetResult(conn);

		if (res == NULL)
		{
			if (PQstatus(conn) == CONNECTION_BAD)
			{
				if (tn->err.message == NULL)
					tt_remote_error_from_conn(conn, "08006", &tn->err);
				return TT_DRAIN_CONN_ERROR;
			}
			if (tn->err.message == NULL)
				return TT_DRAIN_DONE;
			if (strncmp(tn->err.sqlstate, "08", 2) == 0 ||
				strncmp(tn->err.sqlstate, "57P", 3) == 0)
				return TT_DRAIN_CONN_ERROR;
			return TT_DRAIN_SQL_ERROR;
		}
		tn->nresults++;
		switch (PQresultStatus(res))
		{
			case PGRES_TUPLES_OK:
			case PGRES_COMMAND_OK:
				tn_clear_result(tn);
				tn->res = res;
				continue;
			default:
				if (tn->err.message == NULL)
					tt_remote_error_from_result(conn, res, &tn->err);
				PQclear(res);
				break;
		}
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		if (tn->err.message == NULL)
			tt_remote_error_from_conn(conn, "08006", &tn->err);
		return TT_DRAIN_CONN_ERROR;
	}
	return TT_DRAIN_BUSY;
}

/* every task of the job that is live on node (assigned or to fetch) */
static bool
task_live_on(TTJob *job, TTTask *task, TTNode *node)
{
	return tt_task_node(job, task) == node &&
		(task->state == TT_TASK_RUNNING || task->state == TT_TASK_SUCCEEDED ||
		 task->state == TT_TASK_FETCHING);
}

/*
 * node_give_up
 *		The node stays unreachable: every task live or queued there moves to
 *		its next placement (or fails the job).
 */
static void
node_give_up(TTJob *job, TTNode *node, TTRemoteError *err)
{
	TTTrackerNode *tn = node->tn;
	int			i;

	tn->phase = TN_NOCONN;
	tn->needs_recover = false;
	tn->outstanding = 0;
	tn->tracked = 0;
	tn->fetching = NULL;
	while (tt_queue_pop(&tn->fetchq) != NULL)
		;
	tt_node_set_down(job, node, err);
	for (i = 0; i < job->ntasks; i++)
	{
		TTTask	   *task = &job->tasks[i];

		if (task_live_on(job, task, node))
			tt_task_failed_at_placement(job, task, err);
	}
}

/* may tasks of ours be on tn's node (assigned, unfetched, or unknown)? */
static bool
tasks_may_be_on_node(TTTrackerNode *tn)
{
	return tn->outstanding > 0 || tn->fetchq.len > 0 || tn->needs_recover;
}

/*
 * node_lost
 *		The node's connection failed (or could not be made).  Retry later
 *		when tasks of ours may still be there, else give the node up.
 */
static void
node_lost(TTJob *job, TTNode *node, TTRemoteError *err)
{
	TTTrackerNode *tn = node->tn;
	TimestampTz now = GetCurrentTimestamp();
	TTRemoteError copy;

	copy = *err;
	if (copy.message == NULL)
	{
		memset(&copy, 0, sizeof(copy));
		strlcpy(copy.sqlstate, "08006", sizeof(copy.sqlstate));
		copy.message = psprintf("connection to node %s lost", node->name);
	}
	tn_clear_result(tn);
	if (tn->c)
		tt_conncache_release(tn->c, false);
	tn->c = NULL;
	tn->flushing = false;

	/* an assign or fetch cut short is sorted out by the recovery */
	if (tn->fetching)
	{
		tn->fetching->state = TT_TASK_SUCCEEDED;
		tt_queue_push_front(&tn->fetchq, tn->fetching);
		tn->fetching = NULL;
	}
	tn->nbatch = 0;

	if (!tasks_may_be_on_node(tn))
	{
		tt_node_set_down(job, node, &copy);
		tn->phase = TN_NOCONN;
		return;
	}
	if (tn->lost_at == 0)
	{
		tn->lost_at = now;
		tn->retry_delay = TT_RECONNECT_DELAY_MIN;
		elog(DEBUG1, "task_tracker: lost node %s during job " INT64_FORMAT ": %s",
			 node->name, job->job_id, copy.message);
	}
	if (TimestampDifferenceExceeds(tn->lost_at, now, node_reconnect_timeout))
	{
		node_give_up(job, node, &copy);
		return;
	}
	tn->needs_recover = true;
	tn->phase = TN_RETRY;
	tn->retry_at = TimestampTzPlusMilliseconds(now, tn->retry_delay);
	tn->retry_delay = Min(tn->retry_delay * 2, TT_RECONNECT_DELAY_MAX);
}

/*
 * append_wait_query
 *		Append the node's wait to buf: wait_for_task_results, which brings
 *		the rows of small results along (checked against run_job's column
 *		count: others are fetched and fail there), from a worker at 1.1 or
 *		later; wait_for_tasks from one at 1.0.  Rows come as columns 5
 *		(result) and 6 (dropped) after wait_for_tasks' five.
 */
static void
append_wait_query(StringInfo buf, TTJob *job, TTTrackerNode *tn)
{
	if (node_version(tn->c) >= TT_VERSION_WAIT_RESULTS)
		appendStringInfo(buf, "SELECT * FROM task_tracker.wait_for_task_results(" INT64_FORMAT ", %d, %d, %d)",
						 tn->job_id, TT_WAIT_FOR_TASKS_TIMEOUT, TT_WAIT_RESULT_BYTES,
						 job->tupdesc->natts);
	else
		appendStringInfo(buf, "SELECT * FROM task_tracker.wait_for_tasks(" INT64_FORMAT ", %d)",
						 tn->job_id, TT_WAIT_FOR_TASKS_TIMEOUT);
}

/* append s to buf as an element of an array literal */
static void
append_array_element(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *s);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * send_assign
 *		Send assign_tasks for the next n queued tasks of node.  When pipelined,
 *		the wait (append_wait_query) goes in the same round trip (one
 *		simple-protocol query of two statements): used for the last batch a
 *		node gets, it saves a round trip per job.  Returns false if the
 *		connection failed.
 */
static bool
send_assign(TTJob *job, TTNode *node, int n, bool pipelined)
{
	TTTrackerNode *tn = node->tn;
	StringInfoData ids;
	StringInfoData queries;
	char		jobstr[32];
	const char *values[3];
	int			i;
	int			r;

	initStringInfo(&ids);
	initStringInfo(&queries);
	appendStringInfoChar(&ids, '{');
	appendStringInfoChar(&queries, '{');
	tn->nbatch = 0;
	for (i = 0; i < n; i++)
	{
		TTTask	   *task = tt_queue_pop(&node->pending);

		tn->batch[tn->nbatch++] = task;
		task->state = TT_TASK_RUNNING;
		if (i > 0)
		{
			appendStringInfoChar(&ids, ',');
			appendStringInfoChar(&queries, ',');
		}
		appendStringInfo(&ids, "%d", task->task_id);
		append_array_element(&queries, task->query);
	}
	appendStringInfoChar(&ids, '}');
	appendStringInfoChar(&queries, '}');
	snprintf(jobstr, sizeof(jobstr), INT64_FORMAT, tn->job_id);
	values[0] = jobstr;
	values[1] = ids.data;
	values[2] = queries.data;

	/* counted as assigned from now on; an error takes them back */
	tn->outstanding += n;
	tn->tracked += n;
	tn->used = true;
	tn->inline_cleaned = false;

	tn_clear_result(tn);
	memset(&tn->err, 0, sizeof(tn->err));
	tn->nresults = 0;
	tn->phase = TN_ASSIGN;
	tn->heard_at = GetCurrentTimestamp();
	if (pipelined)
	{
		char	   *lit = PQescapeLiteral(tn->c->conn, queries.data, queries.len);

		if (lit == NULL)
			pipelined = false;	/* e.g. bad encoding: let assign_tasks say so */
		else
		{
			StringInfoData sql;

			initStringInfo(&sql);
			appendStringInfo(&sql, "SELECT task_tracker.assign_tasks(%s, '%s'::integer[], %s::text[]);",
							 jobstr, ids.data, lit);
			append_wait_query(&sql, job, tn);
			PQfreemem(lit);
			tn->phase = TN_ASSIGN_WAIT;
			r = tt_send_query(tn->c->conn, sql.data, false);
			pfree(sql.data);
		}
	}
	if (!pipelined)
	{
		if (!PQsendQueryParams(tn->c->conn,
							   "SELECT task_tracker.assign_tasks($1::bigint, $2::integer[], $3::text[])",
							   3, NULL, values, NULL, NULL, 0))
			r = -1;
		else
			r = tt_flush(tn->c->conn);
	}
	pfree(ids.data);
	pfree(queries.data);
	tn->flushing = (r == 1);
	return r >= 0;
}

/*
 * job_id_taken_by_other
 *		Did the assign in flight fail because another user holds the job's
 *		id on the node ("job ... belongs to another user", or one of its
 *		task ids does), while nothing of ours is left there under that id?
 *		Job ids are random (src/coordinator/coordinator.c), so that is not a collision
 *		but someone who read the id (the jobs view shows it to everyone, a
 *		worker's tasks view too) and claimed it first on a node the job had
 *		not reached yet, or had dropped between two waves.
 */
static bool
job_id_taken_by_other(TTTrackerNode *tn)
{
	return strcmp(tn->err.sqlstate, "42501") == 0 && tn->err.message != NULL &&
		strstr(tn->err.message, "belongs to another user") != NULL &&
		tn->tracked == 0 && tn->outstanding == 0 && tn->fetchq.len == 0 &&
		tn->fetching == NULL && !tn->needs_recover;
}

/* the assign in flight failed with an SQL error */
static void
assign_failed(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	int			i;

	tn->outstanding -= tn->nbatch;
	tn->tracked -= tn->nbatch;
	if ((strcmp(tn->err.sqlstate, "53400") == 0 && tn->tracked > 0) ||
		(job_id_taken_by_other(tn) && tn->id_retries < TT_JOB_ID_RETRIES))
	{
		if (tn->tracked > 0)
		{
			/* the table is full: wait for ours to finish, drop them, go on */
			tn->capacity = tn->tracked;
		}
		else
		{
			/*
			 * Another user took the job's id on this node first: the job
			 * goes on here under a new random id of its own.  Nothing of
			 * ours is there under the old one.
			 */
			tn->id_retries++;
			tn->job_id = tt_new_job_id();
			elog(DEBUG1, "task_tracker: job " INT64_FORMAT " is known as " INT64_FORMAT " on node %s: %s",
				 job->job_id, tn->job_id, node->name, tn->err.message);
		}
		for (i = tn->nbatch - 1; i >= 0; i--)
		{
			tn->batch[i]->state = TT_TASK_PENDING;
			tt_queue_push_front(&node->pending, tn->batch[i]);
		}
	}
	else
	{
		for (i = 0; i < tn->nbatch; i++)
			tt_task_failed_at_placement(job, tn->batch[i], &tn->err);
	}
	tn->nbatch = 0;
}

/*
 * apply_task_report
 *		A row of the wait: task_id, status, error, sqlstate, result_rows,
 *		and from wait_for_task_results result and dropped.  A succeeded
 *		task whose rows came along is done (the whole result has arrived:
 *		nothing is stored before); one that was dropped there no longer
 *		counts in the tracker's table.  Other succeeded tasks are queued
 *		for the fetch; failed ones move on.
 *
 *		A task may also be reported after a recovery queued it for the
 *		fetch (from the tasks view, when a failed wait had not taken its
 *		report): rows that come along then are used and the fetch is
 *		skipped (its queue entry is stale, see send_next_query).  Rows of a
 *		task whose fetch already delivered some cannot be used; if the
 *		worker dropped it, the rest is lost and the task fails (which fails
 *		the job: its rows are partly in the result).
 */
static void
apply_task_report(TTJob *job, TTNode *node, PGresult *res, int row)
{
	TTTrackerNode *tn = node->tn;
	int			task_id = atoi(PQgetvalue(res, row, 0));
	const char *status = PQgetvalue(res, row, 1);
	bool		has_rows = PQnfields(res) >= 7 && !PQgetisnull(res, row, 5);
	bool		dropped = has_rows && strcmp(PQgetvalue(res, row, 6), "t") == 0;
	TTTask	   *task;

	if (task_id < 1 || task_id > job->ntasks)
		return;
	task = &job->tasks[task_id - 1];
	if (tt_task_node(job, task) != node)
		return;
	if (task->state == TT_TASK_SUCCEEDED && has_rows && task->rows == 0)
	{
		/* queued for the fetch by a recovery: its rows came instead */
		tt_job_store_copy_text(job, task, PQgetvalue(res, row, 5), PQgetlength(res, row, 5));
		if (dropped)
			tn->tracked--;
		tt_task_done(job, task);
		return;
	}
	if (task->state != TT_TASK_RUNNING)
	{
		/* already known, e.g. from a recovery */
		if (dropped && task->state == TT_TASK_DONE)
			tn->tracked--;
		else if (dropped && task->state == TT_TASK_SUCCEEDED)
		{
			TTRemoteError err;

			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, "08006", sizeof(err.sqlstate));
			err.message = psprintf("the rest of the result of task %d was dropped on node %s",
								   task->task_id, node->name);
			tt_task_failed_at_placement(job, task, &err);
		}
		return;
	}
	tn->outstanding--;
	if (strcmp(status, "succeeded") == 0 && has_rows)
	{
		/* its rows came with the report */
		tt_job_store_copy_text(job, task, PQgetvalue(res, row, 5), PQgetlength(res, row, 5));
		if (dropped)
			tn->tracked--;
		tt_task_done(job, task);
	}
	else if (strcmp(status, "succeeded") == 0)
	{
		task->state = TT_TASK_SUCCEEDED;
		tt_queue_push(&tn->fetchq, task);
	}
	else
	{
		TTRemoteError err;

		memset(&err, 0, sizeof(err));
		strlcpy(err.sqlstate, PQgetisnull(res, row, 3) ? "XX000" : PQgetvalue(res, row, 3),
				sizeof(err.sqlstate));
		if (strcmp(status, "canceled") == 0 && PQgetisnull(res, row, 2))
		{
			strlcpy(err.sqlstate, "57014", sizeof(err.sqlstate));
			err.message = pstrdup("task was canceled on the worker");
		}
		else
			err.message = PQgetisnull(res, row, 2) ? psprintf("task %s", status) :
				pstrdup(PQgetvalue(res, row, 2));
		tt_task_failed_at_placement(job, task, &err);
	}
}

/*
 * apply_recovered_tasks
 *		Apply the rows of task_tracker.tasks (task_id, status, error,
 *		error_sqlstate) read after a reconnection.
 */
static void
apply_recovered_tasks(TTJob *job, TTNode *node, PGresult *res)
{
	TTTrackerNode *tn = node->tn;
	char	  **status_of = palloc0(sizeof(char *) * (job->ntasks + 1));
	int			ntuples = PQntuples(res);
	int			row;
	int			i;

	for (row = 0; row < ntuples; row++)
	{
		int			task_id = atoi(PQgetvalue(res, row, 0));

		if (task_id >= 1 && task_id <= job->ntasks)
			status_of[task_id] = PQgetvalue(res, row, 1);
	}
	tn->tracked = ntuples;
	tn->outstanding = 0;
	while (tt_queue_pop(&tn->fetchq) != NULL)
		;

	for (i = 0; i < job->ntasks; i++)
	{
		TTTask	   *task = &job->tasks[i];
		const char *status = status_of[task->task_id];

		if (!task_live_on(job, task, node))
			continue;
		if (status == NULL)
		{
			if (task->rows > 0)
			{
				TTRemoteError err;

				memset(&err, 0, sizeof(err));
				strlcpy(err.sqlstate, "08006", sizeof(err.sqlstate));
				err.message = psprintf("the result of task %d was lost when node %s restarted",
									   task->task_id, node->name);
				tt_task_failed_at_placement(job, task, &err);	/* throws */
			}
			/* the tracker lost it: assign it again */
			task->state = TT_TASK_PENDING;
			tt_queue_push_front(&node->pending, task);
		}
		else if (strcmp(status, "succeeded") == 0)
		{
			task->state = TT_TASK_SUCCEEDED;
			tt_queue_push(&tn->fetchq, task);
		}
		else if (strcmp(status, "permanently_failed") == 0 ||
				 strcmp(status, "canceled") == 0)
		{
			TTRemoteError err;

			row = -1;
			for (int r = 0; r < ntuples; r++)
				if (atoi(PQgetvalue(res, r, 0)) == task->task_id)
					row = r;
			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, row >= 0 && !PQgetisnull(res, row, 3) ?
					PQgetvalue(res, row, 3) : "XX000", sizeof(err.sqlstate));
			err.message = row >= 0 && !PQgetisnull(res, row, 2) ?
				pstrdup(PQgetvalue(res, row, 2)) : psprintf("task %s", status);
			tt_task_failed_at_placement(job, task, &err);
		}
		else
		{
			task->state = TT_TASK_RUNNING;
			tn->outstanding++;
		}
	}
	pfree(status_of);
	tn->needs_recover = false;
	tn->lost_at = 0;
}

/*
 * send_next_query
 *		Choose the node's next query.  Returns false when there is nothing to
 *		do for now.
 */
static bool
send_next_query(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	char	   *sql;
	bool		ok;

	/* tasks whose rows came with a report after they were queued here */
	while (tn->fetchq.len > 0 &&
		   tn->fetchq.items[tn->fetchq.head]->state != TT_TASK_SUCCEEDED)
		(void) tt_queue_pop(&tn->fetchq);

	if (tn->needs_recover)
	{
		sql = psprintf("SELECT task_id, status, error, error_sqlstate "
					   "FROM task_tracker.tasks WHERE job_id = " INT64_FORMAT
					   " AND user_name = current_user",
					   tn->job_id);
		ok = send_protocol_query(tn, sql, TN_RECOVER, false);
	}
	else if (node->pending.len > 0 && tn->tracked < tn->capacity && !node->down)
	{
		int			n = Min(node->pending.len, tn->capacity - tn->tracked);

		n = Min(n, tn->batch_size);
		if (!send_assign(job, node, n, n == node->pending.len && !tn->no_pipeline))
		{
			TTRemoteError err;

			tt_remote_error_from_conn(tn->c->conn, "08006", &err);
			node_lost(job, node, &err);
		}
		return true;
	}
	else if (tn->fetchq.len > 0)
	{
		TTTask	   *task = tt_queue_pop(&tn->fetchq);

		StringInfoData buf;

		tn->fetching = task;
		task->state = TT_TASK_FETCHING;

		/*
		 * The rows come as COPY text: the stored result as it is, in chunks
		 * of whole lines (task_result_copy, one chunk per result in
		 * single-row mode, the worker's column count checked there), or,
		 * from a worker still at 1.0, COPY data of task_result (whose
		 * column definition list checks the count; tt_job_drain parses
		 * it).  A fetch cut short resumes after the rows received.  The
		 * node's last fetch also drops the job there, in the same round
		 * trip: cleanup_job runs only when the fetch succeeded, and its
		 * rows are not the task's.  Tasks that fail over to the node later
		 * are assigned anew, and the job's cleanup drops them.
		 */
		task->fetch_tail = (node->pending.len == 0 && tn->outstanding == 0 &&
							tn->fetchq.len == 0 && !tn->needs_recover);
		task->rows_ended = false;
		task->tail_failed = false;
		task->copying = false;
		tn->fetch_chunks = node_version(tn->c) >= TT_VERSION_RESULT_COPY;
		task->use_copy = !tn->fetch_chunks;
		task->copy_chunks = tn->fetch_chunks;
		initStringInfo(&buf);
		if (tn->fetch_chunks)
			appendStringInfo(&buf, "SELECT task_tracker.task_result_copy(" INT64_FORMAT ", %d, " INT64_FORMAT ", %d)",
							 tn->job_id, task->task_id, task->rows, job->tupdesc->natts);
		else
		{
			appendStringInfo(&buf, "COPY (SELECT * FROM task_tracker.task_result(" INT64_FORMAT ", %d) AS t(%s)",
							 tn->job_id, task->task_id, job->coldefs);
			if (task->rows > 0)
				appendStringInfo(&buf, " OFFSET " INT64_FORMAT, task->rows);
			appendStringInfoString(&buf, ") TO STDOUT");
		}
		if (task->fetch_tail)
			appendStringInfo(&buf, "; SELECT task_tracker.cleanup_job(" INT64_FORMAT ")",
							 tn->job_id);
		sql = buf.data;
		ok = send_protocol_query(tn, sql, TN_FETCH, tn->fetch_chunks);
	}
	else if (node->pending.len > 0 && tn->outstanding == 0 && tn->tracked > 0)
	{
		/* the table holds as many of ours as it can, all done: drop them */
		sql = psprintf("SELECT task_tracker.cleanup_job(" INT64_FORMAT ")", tn->job_id);
		ok = send_protocol_query(tn, sql, TN_PURGE, false);
	}
	else if (tn->outstanding > 0)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		append_wait_query(&buf, job, tn);
		sql = buf.data;
		ok = send_protocol_query(tn, sql, TN_WAIT, false);
	}
	else
		return false;

	pfree(sql);
	if (!ok)
	{
		TTRemoteError err;

		tt_remote_error_from_conn(tn->c->conn, "08006", &err);
		node_lost(job, node, &err);
	}
	return true;
}

/*
 * start_connection
 *		TN_NOCONN, or TN_RETRY once retry_at has come: claim a connection
 *		to the node when it has work (TN_CONNECTING).  Returns false when
 *		the node is to wait (for retry_at, or for work).
 */
static bool
start_connection(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	char	   *error;

	if (tn->phase == TN_RETRY)
	{
		if (GetCurrentTimestamp() < tn->retry_at)
			return false;
		tn->phase = TN_NOCONN;
	}
	if (node->down || !node_has_work(node))
		return false;
	tn->c = tt_conncache_claim(node->host, node->port, &error);
	if (tn->c == NULL)
	{
		TTRemoteError err;

		memset(&err, 0, sizeof(err));
		strlcpy(err.sqlstate, "53000", sizeof(err.sqlstate));
		err.message = error;
		node_lost(job, node, &err);
		return true;
	}
	tn->phase = TN_CONNECTING;
	return true;
}

/*
 * connect_failed
 *		The connection being set up failed.  A first connection that was
 *		turned away for now or ran out of time (slow is not dead) is tried
 *		again after a back-off, within the same bound as the real-time
 *		executor (tt_connect_retry): returns false, the node waits in
 *		TN_RETRY.  Credentials that were refused give the node up for the
 *		job at once (node_give_up: reconnecting cannot help).  Otherwise
 *		node_lost's reconnection bound applies.  Returns true but in
 *		TN_RETRY.
 */
static bool
connect_failed(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	TTRemoteError err;
	bool		passing;

	passing = tt_connect_failure(node, tn->c, &err);
	if (passing && !tasks_may_be_on_node(tn) && tt_connect_retry(node))
	{
		elog(DEBUG1, "task_tracker: could not connect to node %s, retrying: %s",
			 node->name, err.message);
		tt_conncache_release(tn->c, false);
		tn->c = NULL;
		tn->phase = TN_RETRY;
		tn->retry_at = node->connect_after;
		return false;
	}
	/* credentials refused: reconnecting cannot help */
	if (node->auth_failed)
	{
		tt_conncache_release(tn->c, false);
		tn->c = NULL;
		node_give_up(job, node, &err);
		return true;
	}
	node_lost(job, node, &err);
	return true;
}

/*
 * poll_connection
 *		TN_CONNECTING: advance the connection being set up.  Once connected,
 *		ask the node's capacity and version (TN_SHOW) unless they are known
 *		for this connection (TN_READY).  Returns false while it waits.
 */
static bool
poll_connection(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	int			r = tt_conncache_connect_poll(tn->c);

	if (r > 0)
		return false;
	if (r < 0)
		return connect_failed(job, node);
	tt_connect_succeeded(node);
	if (node_version(tn->c) < 0)
	{
		if (!send_protocol_query(tn, TT_NODE_INFO_QUERY, TN_SHOW, false))
		{
			TTRemoteError err;

			tt_remote_error_from_conn(tn->c->conn, "08006", &err);
			node_lost(job, node, &err);
		}
		return true;
	}
	tn->capacity = tn->c->tracker_capacity;
	tn->phase = TN_READY;
	return true;
}

/*
 * fetch_connection_lost
 *		The connection broke during a fetch.  A fetch whose task's rows had
 *		all arrived (only its trailing cleanup_job is unknown) completes the
 *		task; the recovery sorts out the rest.
 */
static void
fetch_connection_lost(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	TTTask	   *task = tn->fetching;

	if (task->fetch_tail && task->rows_ended)
	{
		/* all its rows arrived; only the cleanup is unknown */
		tn->fetching = NULL;
		task->fetch_tail = false;
		tt_task_done(job, task);
	}
	node_lost(job, node, &tn->err);
}

/*
 * fetch_ended
 *		The fetch query completed (d: TT_DRAIN_DONE) or failed with an SQL
 *		error (TT_DRAIN_SQL_ERROR): the node is ready again, the task done or
 *		failed at this placement.  A successful node's last fetch also
 *		dropped the job there (its trailing cleanup_job).
 */
static void
fetch_ended(TTJob *job, TTNode *node, TTDrainResult d)
{
	TTTrackerNode *tn = node->tn;
	TTTask	   *task = tn->fetching;

	tn->phase = TN_READY;
	tn->fetching = NULL;
	if (d == TT_DRAIN_DONE && task->fetch_tail && !task->tail_failed)
	{
		/* the job is dropped on this node */
		tn->inline_cleaned = true;
		tn->tracked = 0;
		tn->capacity = tn->c->tracker_capacity;
	}
	task->fetch_tail = false;
	if (d == TT_DRAIN_DONE)
		tt_task_done(job, task);
	else
		tt_task_failed_at_placement(job, task, &tn->err);
}

/*
 * read_fetch
 *		TN_FETCH: send the rest of the fetch query and store the rows that
 *		arrived.  Returns false while it waits for more.
 */
static bool
read_fetch(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	TTDrainResult d;

	if (tn->flushing)
	{
		int			r = tt_flush(tn->c->conn);

		if (r < 0)
		{
			tt_remote_error_from_conn(tn->c->conn, "08006", &tn->err);
			node_lost(job, node, &tn->err);
			return true;
		}
		tn->flushing = (r == 1);
	}
	d = tt_job_drain(job, tn->c->conn, tn->fetching, true, &tn->err);
	if (d == TT_DRAIN_BUSY)
		return false;
	if (d == TT_DRAIN_CONN_ERROR)
		fetch_connection_lost(job, node);
	else
		fetch_ended(job, node, d);
	return true;
}

/*
 * node_info_arrived
 *		TT_NODE_INFO_QUERY answered: remember the tracker's capacity (at
 *		least 1) and the task_tracker version installed on the node.
 */
static void
node_info_arrived(TTTrackerNode *tn)
{
	bool		one = (tn->res && PQntuples(tn->res) == 1 &&
					   PQnfields(tn->res) == 2);

	tn->c->tracker_capacity = one ? atoi(PQgetvalue(tn->res, 0, 0)) : 0;
	if (tn->c->tracker_capacity <= 0)
		tn->c->tracker_capacity = 1;
	tn->capacity = tn->c->tracker_capacity;
	remember_node_version(tn->c, one && !PQgetisnull(tn->res, 0, 1) ?
						  PQgetvalue(tn->res, 0, 1) : NULL);
}

/* the wait (alone or after an assign) answered: apply every report */
static void
reports_arrived(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	if (tn->res)
	{
		int			ntuples = PQntuples(tn->res);
		int			row;

		for (row = 0; row < ntuples; row++)
			apply_task_report(job, node, tn->res, row);
	}
}

/*
 * query_done
 *		The protocol query in flight completed: apply its answer, one case
 *		per query, then the node is ready for the next.
 */
static void
query_done(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	switch (tn->phase)
	{
		case TN_SHOW:
			node_info_arrived(tn);
			break;
		case TN_RECOVER:
			if (tn->res)
				apply_recovered_tasks(job, node, tn->res);
			break;
		case TN_ASSIGN:
			tn->nbatch = 0;
			break;
		case TN_ASSIGN_WAIT:
			tn->nbatch = 0;
			reports_arrived(job, node);
			break;
		case TN_WAIT:
			reports_arrived(job, node);
			break;
		case TN_PURGE:
			/* the job's tasks are dropped: the whole table is ours again */
			tn->tracked = 0;
			tn->capacity = tn->c->tracker_capacity;
			break;
		default:
			break;
	}
	tn_clear_result(tn);
	tn->phase = TN_READY;
}

/*
 * query_failed
 *		The protocol query in flight failed with an SQL error (the
 *		connection is fine): the node is ready again, and what to do next
 *		depends on the query, one case per query.
 */
static void
query_failed(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;
	TNPhase		phase = tn->phase;

	tn->phase = TN_READY;
	tn_clear_result(tn);
	switch (phase)
	{
		case TN_SHOW:
			/* not a task tracker node */
			node_give_up(job, node, &tn->err);
			tt_conncache_release(tn->c, true);
			tn->c = NULL;
			tn->phase = TN_NOCONN;
			break;
		case TN_ASSIGN:
			assign_failed(job, node);
			break;
		case TN_ASSIGN_WAIT:

			/*
			 * Either statement may have failed: find out from the tracker
			 * which tasks it has, and send the others again, one statement
			 * at a time.
			 */
			tn->nbatch = 0;
			tn->no_pipeline = true;
			tn->needs_recover = true;
			break;
		case TN_RECOVER:
			/* the tracker cannot say which tasks it has: give the node up */
			node_give_up(job, node, &tn->err);
			break;
		case TN_WAIT:
		case TN_PURGE:
			/* find out where we stand */
			tn->needs_recover = true;
			break;
		default:
			break;
	}
}

/*
 * read_reply
 *		TN_SHOW, TN_RECOVER, TN_ASSIGN, TN_ASSIGN_WAIT, TN_WAIT, TN_PURGE:
 *		read the answer of the protocol query in flight, and act on what
 *		happened: it completed, it failed, or the connection broke.  Returns
 *		false while it waits for more.
 */
static bool
read_reply(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	switch (collect_reply(tn))
	{
		case TT_DRAIN_BUSY:
			return false;
		case TT_DRAIN_CONN_ERROR:
			node_lost(job, node, &tn->err);
			break;
		case TT_DRAIN_SQL_ERROR:
			query_failed(job, node);
			break;
		case TT_DRAIN_DONE:
			query_done(job, node);
			break;
	}
	return true;
}

/*
 * advance_node
 *		Drive the node's state machine as far as it goes without waiting:
 *		one case per TNPhase, each a function that returns false when the
 *		node is to wait.
 */
static void
advance_node(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	for (;;)
	{
		bool		go_on = false;

		CHECK_FOR_INTERRUPTS();
		switch (tn->phase)
		{
			case TN_RETRY:
			case TN_NOCONN:
				go_on = start_connection(job, node);
				break;
			case TN_CONNECTING:
				go_on = poll_connection(job, node);
				break;
			case TN_READY:
				go_on = send_next_query(job, node);
				break;
			case TN_FETCH:
				go_on = read_fetch(job, node);
				break;
			case TN_SHOW:
			case TN_RECOVER:
			case TN_ASSIGN:
			case TN_ASSIGN_WAIT:
			case TN_WAIT:
			case TN_PURGE:
				go_on = read_reply(job, node);
				break;
		}
		if (!go_on)
			return;
	}
}

/* has tn's connection a query in flight, whose answer is awaited? */
static bool
query_in_flight(TTTrackerNode *tn)
{
	switch (tn->phase)
	{
		case TN_SHOW:
		case TN_RECOVER:
		case TN_ASSIGN:
		case TN_ASSIGN_WAIT:
		case TN_WAIT:
		case TN_FETCH:
		case TN_PURGE:
			return tn->c != NULL;
		default:
			return false;
	}
}

/*
 * tt_task_tracker_execute
 *		Run every task of job (already queued at its first placement) through
 *		the workers' trackers and put their rows into job->tupstore.  Throws
 *		on failure; the caller's PG_CATCH runs job->cleanup.
 */
void
tt_task_tracker_execute(TTJob *job)
{
	pgsocket   *socks;
	uint32	   *events;
	int			i;

	job->cleanup = tt_task_tracker_cleanup;
	for (i = 0; i < job->nnodes; i++)
	{
		TTTrackerNode *tn = MemoryContextAllocZero(job->cxt, sizeof(TTTrackerNode));

		tn->job_id = job->job_id;
		tn->batch_size = max_assign_task_batch_size;
		tn->batch = MemoryContextAlloc(job->cxt, sizeof(TTTask *) * tn->batch_size);
		job->nodes[i].tn = tn;
	}
	socks = MemoryContextAlloc(job->cxt, sizeof(pgsocket) * Max(job->nnodes, 1));
	events = MemoryContextAlloc(job->cxt, sizeof(uint32) * Max(job->nnodes, 1));
	tt_job_progress(job, TT_JOB_RUNNING);

	for (;;)
	{
		long		timeout = -1;
		int			n = 0;
		TimestampTz now = GetCurrentTimestamp();

		for (i = 0; i < job->nnodes; i++)
		{
			TTTrackerNode *tn = job->nodes[i].tn;

			/* before reading: did the node send anything? */
			if (query_in_flight(tn) && tt_conn_has_input(tn->c->conn))
				tn->heard_at = now;
			advance_node(job, &job->nodes[i]);
		}
		if (job->tasks_done >= job->ntasks)
			break;

		/* a control connection per node: the cleanup's cancel goes over it */
		for (i = 0; i < job->nnodes; i++)
		{
			TTTrackerNode *tn = job->nodes[i].tn;

			if (tn->c != NULL && !tn->c->connecting)
				tt_conncache_control_open(tn->c, (uint64) job->job_id);
		}

		now = GetCurrentTimestamp();
		for (i = 0; i < job->nnodes; i++)
		{
			TTNode	   *node = &job->nodes[i];
			TTTrackerNode *tn = node->tn;
			pgsocket	sock;
			long		left;

			if (query_in_flight(tn))
			{
				long		silence_limit = TT_WAIT_FOR_TASKS_TIMEOUT + node_reconnect_timeout;
				TimestampTz due = TimestampTzPlusMilliseconds(tn->heard_at, silence_limit);

				if (now >= due)
				{
					/* not a word from the node for too long: it is lost */
					TTRemoteError err;

					memset(&err, 0, sizeof(err));
					strlcpy(err.sqlstate, "08006", sizeof(err.sqlstate));
					err.message = psprintf("node %s stopped answering: no response for %ld ms",
										   node->name, silence_limit);
					node_lost(job, node, &err);
					timeout = 0;
					continue;
				}
				left = TimestampDifferenceMilliseconds(now, due);
				if (timeout < 0 || left < timeout)
					timeout = left;
			}
			switch (tn->phase)
			{
				case TN_NOCONN:
				case TN_READY:
					/* work that failed over to it after its turn: go again */
					if (!node->down && node_has_work(node))
						timeout = 0;
					continue;
				case TN_RETRY:
					left = tt_ms_until(tn->retry_at);
					if (timeout < 0 || left < timeout)
						timeout = left;
					continue;
				case TN_CONNECTING:
					left = tt_ms_until(tn->c->connect_deadline);
					if (timeout < 0 || left < timeout)
						timeout = left;
					events[n] = tt_poll_wait_events(tn->c->poll);
					break;
				default:
					events[n] = WL_SOCKET_READABLE | (tn->flushing ? WL_SOCKET_WRITEABLE : 0);
					break;
			}
			sock = PQsocket(tn->c->conn);
			if (sock == PGINVALID_SOCKET)
			{
				timeout = 0;
				continue;
			}
			socks[n++] = sock;
		}
		if (n == 0 && timeout < 0)
			elog(ERROR, "task-tracker executor has %d unfinished tasks but nothing to wait for",
				 job->ntasks - job->tasks_done);
		tt_wait_sockets(n, socks, events, NULL, timeout);
	}
}
