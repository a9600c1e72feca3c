/*-------------------------------------------------------------------------
 *
 * executor_task_tracker_cleanup.c
 *	  The cleanup of the task-tracker executor, run as job->cleanup at the
 *	  end of a job, on error and on cancel.
 *
 * Design
 *	  At the end, on error and on cancel, cleanup_job() runs on every node
 *	  that got tasks, all in parallel and with a bounded wait; a node that
 *	  cannot be cleaned up gets a WARNING naming it and the command to run.
 *	  After a job that succeeded, a node where every task we assigned was
 *	  dropped as its rows came (tracked == 0, nothing in flight) has
 *	  nothing left to clean up and gets no cleanup_job.
 *	  A node that gives no sign of life within citus.node_connection_timeout
 *	  + citus.node_reconnect_timeout of the start of the cleanup (in a
 *	  backend that is exiting: Min(citus.node_connection_timeout,
 *	  TT_CLEANUP_ANSWER_TIME)) is given up at that point (its connections
 *	  closed, never PQcancel'ed), so that a frozen node cannot hold the
 *	  backend for longer, while a loaded but healthy one is waited for.
 *	  The cleanup runs with interrupts held, so however those settings are
 *	  set (node_connection_timeout goes up to an hour) it ends within
 *	  TT_CLEANUP_MAX_HOLD (30 s, the bound postgres_fdw gives its abort
 *	  cleanup) of its start; a cancel that arrives meanwhile is honoured
 *	  then.  Connections it opens never look a name up (the nodes'
 *	  addresses were resolved before the job: src/coordinator/node_registry.c).
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
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "task_tracker.h"
#include "coordinator/tt_executor.h"
#include "coordinator/tt_executor_task_tracker.h"

/* extra time the cleanup may take beyond the connection timeout, ms */
#define TT_CLEANUP_EXTRA_TIME		10000
/* longest time the cleanup waits for a first sign of life of a node, ms */
#define TT_CLEANUP_ANSWER_TIME		2000
/* longest time the cleanup holds interrupts, whatever the settings, ms */
#define TT_CLEANUP_MAX_HOLD			30000

/*
 * may_clean_concurrently
 *		Is a cleanup_job that runs on another connection while tn's query is
 *		still in flight enough?  Not while an assign_tasks may still be
 *		running: it could add tasks after that cleanup (then cleanup_job is
 *		sent again once the query is drained).  wait_for_tasks, task_result,
 *		SHOW, the recovery read and cleanup_job itself add nothing.  Note
 *		that the server flushes the results of a multi-statement query only
 *		at its end, so an assign_tasks that travels with wait_for_tasks is
 *		never known to be over.
 */
static bool
may_clean_concurrently(TTTrackerNode *tn)
{
	switch (tn->phase)
	{
		case TN_ASSIGN:
			return false;
		case TN_ASSIGN_WAIT:
			/* the assign_tasks statement has completed */
			return tn->nresults >= 1;
		default:
			return true;
	}
}

/*
 * tt_task_tracker_cleanup
 *		Drop the job on every node that got tasks (cleanup_job cancels the
 *		running ones and removes tasks and result files), all nodes at once,
 *		with a bounded wait.  Runs with interrupts held; never throws but on
 *		out-of-memory.
 *
 *		A node whose connection still has a query in flight (after a failure
 *		or a cancel) gets, over a spare connection (an idle cached one or a
 *		new one, all nodes in parallel), pg_cancel_backend() of that query's
 *		backend and cleanup_job() in the same round trip, so the tracker
 *		stops the job's tasks at once; the canceled query is then drained
 *		and its connection, idle again, is kept.  When the query in flight
 *		may have been an assign_tasks (may_clean_concurrently), cleanup_job
 *		is sent again over the job's connection once that is drained.
 *		When the spare connection cannot cancel, the job's connection is
 *		closed (never PQcancel'ed: it blocks on a frozen node) and, if the
 *		node answered, cleanup_job runs over a new connection.  A node that
 *		shows no sign of life (any input on its connections, a new session
 *		set up) within answer_ms (see below) is given up: its connections
 *		are closed.  A node that cannot be cleaned up gets a WARNING.
 *		Whatever the settings, everything ends within TT_CLEANUP_MAX_HOLD
 *		of the start: the caller holds interrupts meanwhile.
 */
void
tt_task_tracker_cleanup(TTJob *job, bool failed)
{
	TimestampTz deadline;
	TimestampTz answer_by;
	int			answer_ms;
	pgsocket   *socks;
	uint32	   *events;
	TTConn	  **unused_busy;
	int			nunused_busy = 0;
	int			i;
	MemoryContext old;

	/*
	 * How long a node may take to show it is alive: a backend that is
	 * exiting (pg_terminate_backend, FATAL) must not be held by a frozen
	 * node, so it gives up quickly; otherwise a busy but healthy worker
	 * gets the same patience as a reconnection, so that a loaded worker is
	 * not mistaken for a frozen one and left with the job's tasks.
	 */
	answer_ms = proc_exit_inprogress ?
		Min(node_connection_timeout, TT_CLEANUP_ANSWER_TIME) :
		Min((int64) node_connection_timeout + node_reconnect_timeout,
			TT_CLEANUP_MAX_HOLD);

	job->cleaned = true;
	old = MemoryContextSwitchTo(job->cxt);
	tt_job_progress(job, failed ? TT_JOB_FAILING : TT_JOB_CLEANING_UP);

	/*
	 * The whole cleanup, interrupts held, ends by deadline: a healthy node
	 * gets the connection timeout and some more to drop the job, but never
	 * more than TT_CLEANUP_MAX_HOLD in all.
	 */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   Min((int64) node_connection_timeout +
											   TT_CLEANUP_EXTRA_TIME,
											   TT_CLEANUP_MAX_HOLD));
	socks = palloc(sizeof(pgsocket) * Max(2 * job->nnodes, 1));
	events = palloc(sizeof(uint32) * Max(2 * job->nnodes, 1));
	unused_busy = palloc(sizeof(TTConn *) * Max(job->nnodes, 1));
	for (i = 0; i < job->nnodes; i++)
	{
		TTTrackerNode *tn = job->nodes[i].tn;

		if (tn == NULL)
			continue;
		tn->cleanup_sql = psprintf("SELECT task_tracker.cleanup_job(" INT64_FORMAT ")",
								   tn->job_id);
		tn_clear_result(tn);
		if (tn->inline_cleaned)
			tn->used = false;	/* its last fetch dropped the job already */
		else if (!failed && tn->used && tn->tracked == 0 && tn->c != NULL &&
				 tn->phase == TN_READY && !tn->needs_recover && !job->nodes[i].down)
			tn->used = false;	/* every task was dropped as its rows came */
		if (!tn->used)
		{
			tn->cleanup_done = tn->cleanup_ok = true;
			if (tn->c && tn->phase != TN_READY)
				unused_busy[nunused_busy++] = tn->c;
			else if (tn->c)
			{
				tt_conncache_release(tn->c, true);
				tn->c = NULL;
			}
			continue;
		}
		if (tn->c && tn->phase != TN_READY && tn->phase != TN_CONNECTING)
		{
			/* a query in flight: cancel it over a spare connection */
			char	   *side_sql;

			tn->side_cleanup = true;
			tn->recleanup = !may_clean_concurrently(tn);
			side_sql = psprintf("SELECT pg_catalog.pg_cancel_backend(%d); %s",
								PQbackendPID(tn->c->conn), tn->cleanup_sql);
			tt_side_query_start(&tn->side, tn->c, side_sql);
			pfree(side_sql);
			tn->side_active = true;
			tn->canceled = true;
			memset(&tn->err, 0, sizeof(tn->err));
		}
		else if (tn->c == NULL)
		{
			char	   *error;

			tn->c = tt_conncache_claim(job->nodes[i].host, job->nodes[i].port, &error);
			if (tn->c == NULL)
			{
				tn->cleanup_done = true;
				tn->cleanup_error = error;
			}
		}
	}

	/* nodes that got nothing: just stop what runs there */
	if (nunused_busy > 0)
	{
		tt_conncache_cancel_many(unused_busy, nunused_busy);
		for (i = 0; i < job->nnodes; i++)
		{
			TTTrackerNode *tn = job->nodes[i].tn;

			if (tn != NULL && !tn->used && tn->c != NULL)
			{
				tt_conncache_release(tn->c, false);
				tn->c = NULL;
			}
		}
	}

	/* from now on, a node has answer_ms to show it is alive */
	answer_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), answer_ms);
	if (answer_by > deadline)
		answer_by = deadline;
	for (;;)
	{
		int			n = 0;
		long		timeout;
		bool		unanswered = false;

		for (i = 0; i < job->nnodes; i++)
		{
			TTTrackerNode *tn = job->nodes[i].tn;
			PGconn	   *conn;

			if (tn == NULL || tn->cleanup_done)
				continue;

			/* any input (before it is read) shows the node is alive */
			if (!tn->answered &&
				(tt_conn_has_input(tn->c->conn) ||
				 (tn->side_active && tn->side.c != NULL &&
				  tt_conn_has_input(tn->side.c->conn))))
				tn->answered = true;
			if (!tn->answered && GetCurrentTimestamp() >= answer_by)
			{
				/*
				 * Not a sign of life: the node is frozen or unreachable.
				 * Close its connections rather than wait any longer.
				 */
				if (tn->side_active)
					tt_side_query_finish(&tn->side);
				tn->side_active = false;
				tt_conncache_release(tn->c, false);
				tn->c = NULL;
				tn->cleanup_done = true;
				tn->cleanup_error = psprintf("the node did not answer within %d ms", answer_ms);
				continue;
			}
			if (!tn->answered)
				unanswered = true;
			conn = tn->c->conn;

			if (tn->side_active)
			{
				tt_side_query_advance(&tn->side);
				if (!tn->side.done)
				{
					if (tn->side.sock != PGINVALID_SOCKET)
					{
						events[n] = tn->side.events;
						socks[n++] = tn->side.sock;
					}
					else
						tn->side.done = true;	/* cannot wait for it */
					if (!tn->side.done)
						continue;
				}
				tn->side_active = false;
				if (tn->side.ok && tn->side_cleanup && !tn->recleanup)
				{
					/* cleaned up; drain the canceled query, briefly */
					tn->cleanup_ok = true;
					tn->cleanup_sent = true;
					tn->drain_only = true;
					tn->drain_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 100);
				}
				else if (!tn->side.ok)
				{
					/*
					 * The cancel did not get through.  Never PQcancel (it
					 * blocks on a frozen node): close the connection, whose
					 * remote query stops when its backend notices, and run
					 * cleanup_job over a new one if the node answered the
					 * side query at all.
					 */
					bool		reached = tn->side.sent;

					tt_conncache_release(tn->c, false);
					tn->c = NULL;
					tn->canceled = false;
					tn->drain_only = false;
					tn->cleanup_sent = false;
					tn->recleanup = false;
					if (reached)
					{
						char	   *error;

						tn->c = tt_conncache_claim(job->nodes[i].host,
												   job->nodes[i].port, &error);
						if (tn->c == NULL)
							tn->cleanup_error = error;
					}
					else
						tn->cleanup_error = pstrdup("could not reach the node to cancel the job's query");
					if (tn->c == NULL)
					{
						tt_side_query_finish(&tn->side);
						tn->cleanup_done = true;
						continue;
					}
					conn = tn->c->conn;
				}
				tt_side_query_finish(&tn->side);
			}

			if (tn->drain_only)
			{
				if (tt_discard_results(conn) != 0 ||
					GetCurrentTimestamp() >= tn->drain_until)
				{
					tn->cleanup_done = true;
					continue;
				}
				events[n] = WL_SOCKET_READABLE;
				socks[n++] = PQsocket(conn);
				continue;
			}

			if (tn->c->connecting)
			{
				int			r = tt_conncache_connect_poll(tn->c);

				if (r == 0)
					tn->answered = true;	/* a new session: alive */
				if (r < 0 && PQstatus(conn) != CONNECTION_BAD &&
					GetCurrentTimestamp() < answer_by)
				{
					char	   *error;

					/*
					 * The attempt timed out, but the node still has until
					 * answer_by to show it is alive: a loaded node is not a
					 * dead one (a refused or failed attempt is final).
					 * Start another attempt.
					 */
					tt_conncache_release(tn->c, false);
					tn->c = tt_conncache_claim(job->nodes[i].host,
											   job->nodes[i].port, &error);
					if (tn->c == NULL)
					{
						tn->cleanup_done = true;
						tn->cleanup_error = error;
						continue;
					}
					conn = tn->c->conn;
					r = tt_conncache_connect_poll(tn->c);
				}
				if (r < 0)
				{
					tn->cleanup_done = true;
					tn->cleanup_error = PQstatus(conn) == CONNECTION_BAD ?
						tt_conn_error_message(conn) : pstrdup("timeout expired");
					continue;
				}
				if (r > 0)
				{
					events[n] = tt_poll_wait_events(tn->c->poll);
					socks[n++] = PQsocket(conn);
					continue;
				}
			}
			if (!tn->cleanup_sent && PQtransactionStatus(conn) == PQTRANS_ACTIVE)
			{
				/* drain the canceled query */
				int			r = tt_discard_results(conn);

				if (r < 0)
				{
					tn->cleanup_done = true;
					tn->cleanup_error = tt_conn_error_message(conn);
					continue;
				}
				if (r == 0)
				{
					events[n] = WL_SOCKET_READABLE;
					socks[n++] = PQsocket(conn);
					continue;
				}
			}
			if (!tn->cleanup_sent)
			{
				memset(&tn->err, 0, sizeof(tn->err));
				tn->cleanup_sent = true;
				if (tt_send_query(conn, tn->cleanup_sql, false) < 0)
				{
					tn->cleanup_done = true;
					tn->cleanup_error = tt_conn_error_message(conn);
					continue;
				}
				tn->flushing = PQflush(conn) == 1;
			}
			if (tn->flushing && tt_flush(conn) == 0)
				tn->flushing = false;
			if (!PQconsumeInput(conn))
			{
				tn->cleanup_done = true;
				tn->cleanup_error = tt_conn_error_message(conn);
				continue;
			}
			while (!PQisBusy(conn))
			{
				PGresult   *res = PQgetResult(conn);

				if (res == NULL)
				{
					tn->cleanup_done = true;
					tn->cleanup_ok = (tn->err.message == NULL);
					if (!tn->cleanup_ok)
						tn->cleanup_error = tn->err.message;
					break;
				}
				if (PQresultStatus(res) != PGRES_TUPLES_OK &&
					PQresultStatus(res) != PGRES_COMMAND_OK && tn->err.message == NULL)
					tt_remote_error_from_result(conn, res, &tn->err);
				PQclear(res);
			}
			if (!tn->cleanup_done)
			{
				if (PQstatus(conn) == CONNECTION_BAD)
				{
					tn->cleanup_done = true;
					tn->cleanup_error = tt_conn_error_message(conn);
					continue;
				}
				events[n] = WL_SOCKET_READABLE | (tn->flushing ? WL_SOCKET_WRITEABLE : 0);
				socks[n++] = PQsocket(conn);
			}
		}
		if (n == 0)
			break;
		timeout = tt_ms_until(deadline);
		if (timeout <= 0)
			break;
		if (unanswered)
			timeout = Min(timeout, tt_ms_until(answer_by));
		tt_wait_sockets(n, socks, events, NULL, timeout);
	}

	for (i = 0; i < job->nnodes; i++)
	{
		TTNode	   *node = &job->nodes[i];
		TTTrackerNode *tn = node->tn;

		if (tn == NULL)
			continue;
		if (tn->side_active)
		{
			/* out of time: its query state is unknown */
			if (!tn->side.ok)
				tn->canceled = false;
			tt_side_query_finish(&tn->side);
			tn->side_active = false;
		}
		if (tn->used && !tn->cleanup_ok)
			ereport(WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not clean up job " INT64_FORMAT " on node %s: %s",
							tn->job_id, node->name,
							tn->cleanup_error ? tn->cleanup_error : "timeout expired"),
					 errhint("Run SELECT task_tracker.cleanup_job(" INT64_FORMAT ") on node %s as user %s.",
							 tn->job_id, node->name, job->user_name)));
		if (tn->c)
		{
			bool		reusable = tn->cleanup_ok && !tn->c->connecting &&
				PQtransactionStatus(tn->c->conn) == PQTRANS_IDLE &&
				!PQisBusy(tn->c->conn);

			/*
			 * Not reusable: closed as it is, never PQcancel'ed (which
			 * blocks on a frozen node).  A query still running there stops
			 * when its backend notices the lost client.
			 */
			tt_conncache_release(tn->c, reusable);
			tn->c = NULL;
		}
	}
	MemoryContextSwitchTo(old);
}
