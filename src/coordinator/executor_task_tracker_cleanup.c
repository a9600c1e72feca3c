/*-------------------------------------------------------------------------
 *
 * executor_task_tracker_cleanup.c
 *	  The cleanup of the task-tracker executor (job->cleanup, at the end of
 *	  a job, on error and on cancel): cleanup_job() on every node that got
 *	  tasks, all nodes at once, each through the phases of TNCleanupPhase
 *	  (cancel, settle, connect, drain, send, read, done), with interrupts
 *	  held and a bounded wait; a WARNING for a node that could not be
 *	  cleaned up.
 *
 *	  The phases, the deadlines and when a node is given up are described
 *	  in docs/architecture.md, "Task-tracker executor".
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

#include "common/tt_settings.h"
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

/* the node's cleanup is over without success: error says why */
static void
cleanup_fails(TTTrackerNode *tn, char *error)
{
	tn->cleanup_error = error;
	tn->cleanup_phase = TC_DONE;
}

/*
 * start_node_cleanup
 *		Choose where the cleanup of node starts.  A node that needs none (it
 *		got no tasks, its last fetch dropped the job, or after a success
 *		every task was dropped as its rows came) is done at once: an idle
 *		connection is kept, a busy one is added to busy_conns for the caller
 *		to cancel.  A node whose connection has a query in flight gets the
 *		cancel over a spare connection (TC_CANCEL); any other one a
 *		connection to send cleanup_job over (TC_CONNECT), or fails when none
 *		can be had.
 */
static void
start_node_cleanup(TTNode *node, bool failed, TTConn **busy_conns, int *nbusy)
{
	TTTrackerNode *tn = node->tn;

	tn->cleanup_sql = psprintf("SELECT task_tracker.cleanup_job(" INT64_FORMAT ")",
							   tn->job_id);
	tn_clear_result(tn);
	if (tn->inline_cleaned)
		tn->used = false;		/* its last fetch dropped the job already */
	else if (!failed && tn->used && tn->tracked == 0 && tn->c != NULL &&
			 tn->phase == TN_READY && !tn->needs_recover && !node->down)
		tn->used = false;		/* every task was dropped as its rows came */
	if (!tn->used)
	{
		tn->cleanup_ok = true;
		tn->cleanup_phase = TC_DONE;
		if (tn->c && tn->phase != TN_READY)
			busy_conns[(*nbusy)++] = tn->c;
		else if (tn->c)
		{
			tt_conncache_release(tn->c, true);
			tn->c = NULL;
		}
		return;
	}
	if (tn->c && tn->phase != TN_READY && tn->phase != TN_CONNECTING)
	{
		/* a query in flight: cancel it over a spare connection */
		char	   *side_sql;

		tn->clean_again = !may_clean_concurrently(tn);
		side_sql = psprintf("SELECT pg_catalog.pg_cancel_backend(%d); %s",
							PQbackendPID(tn->c->conn), tn->cleanup_sql);
		tt_side_query_start(&tn->side, tn->c, side_sql);
		pfree(side_sql);
		memset(&tn->err, 0, sizeof(tn->err));
		tn->cleanup_phase = TC_CANCEL;
		return;
	}
	if (tn->c == NULL)
	{
		char	   *error;

		tn->c = tt_conncache_claim(node->host, node->port, &error);
		if (tn->c == NULL)
		{
			cleanup_fails(tn, error);
			return;
		}
	}
	tn->cleanup_phase = TC_CONNECT;
}

/*
 * node_gave_no_sign
 *		Note any input on the node's connections (before it is read) as a
 *		sign of life.  A node without one by answer_by is frozen or
 *		unreachable: its connections are closed rather than waited for any
 *		longer, its cleanup fails, and true is returned.
 */
static bool
node_gave_no_sign(TTTrackerNode *tn, TimestampTz answer_by, int answer_ms)
{
	if (!tn->answered &&
		(tt_conn_has_input(tn->c->conn) ||
		 (tn->cleanup_phase == TC_CANCEL && tn->side.c != NULL &&
		  tt_conn_has_input(tn->side.c->conn))))
		tn->answered = true;
	if (tn->answered || GetCurrentTimestamp() < answer_by)
		return false;
	if (tn->cleanup_phase == TC_CANCEL)
		tt_side_query_finish(&tn->side);
	tt_conncache_release(tn->c, false);
	tn->c = NULL;
	cleanup_fails(tn, psprintf("the node did not answer within %d ms", answer_ms));
	return true;
}

/*
 * cleanup_cancel
 *		TC_CANCEL: advance the side query (pg_cancel_backend() of c's query
 *		and cleanup_job).  When it succeeded, the job is dropped on the node
 *		and the canceled query is drained for a moment (TC_SETTLE) so that c
 *		can be kept, or, when an assign_tasks may have raced that
 *		cleanup_job, drained before cleanup_job goes again over c
 *		(TC_DRAIN).  When the cancel did not get through, c is closed (never
 *		PQcancel'ed: it blocks on a frozen node; its remote query stops when
 *		its backend notices) and cleanup_job goes over a new connection
 *		(TC_CONNECT).  When the side query never reached the node and c's
 *		query ends by itself soon (anything but a fetch), c is drained and
 *		cleanup_job goes over it (TC_DRAIN).
 *
 *		Returns true when the node is to wait on *sock for *events.
 */
static bool
cleanup_cancel(TTNode *node, pgsocket *sock, uint32 *events)
{
	TTTrackerNode *tn = node->tn;

	tt_side_query_advance(&tn->side);
	if (!tn->side.q.done)
	{
		if (tn->side.q.sock != PGINVALID_SOCKET)
		{
			*events = tn->side.q.events;
			*sock = tn->side.q.sock;
			return true;
		}
		tn->side.q.done = true;	/* cannot wait for it */
	}
	if (tn->side.q.ok && !tn->clean_again)
	{
		/* cleaned up; drain the canceled query, briefly */
		tn->cleanup_ok = true;
		tn->drain_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 100);
		tn->cleanup_phase = TC_SETTLE;
	}
	else if (tn->side.q.ok)
	{
		/* c has been connected since before its query was canceled */
		tn->cleanup_phase = TC_DRAIN;
	}
	else if (!tn->side.q.sent && tn->phase != TN_FETCH)
	{
		/*
		 * No spare connection could be set up in time (a node too loaded to
		 * start a backend is not a dead one, and giving up left the job's
		 * tasks running there), but c's query ends by itself soon: a wait
		 * returns within TT_WAIT_FOR_TASKS_TIMEOUT, the others are short.
		 * Drain it and send cleanup_job over c: no new backend needed.
		 */
		elog(DEBUG1, "task_tracker: the cancel of job " INT64_FORMAT
			 " did not reach node %s, cleaning up over the job's connection",
			 tn->job_id, node->name);
		tn->cleanup_phase = TC_DRAIN;
	}
	else
	{
		char	   *error;

		/*
		 * The side query failed on the node, or never reached it while c
		 * fetches a result that may go on for long: cleanup_job goes over a
		 * new connection, which cleanup_connect tries again until answer_by
		 * (a slow node is not a dead one) and which fails at once when the
		 * node refuses it.
		 */
		if (!tn->side.q.sent)
			elog(DEBUG1, "task_tracker: the cancel of job " INT64_FORMAT
				 " did not reach node %s, connecting again for its cleanup",
				 tn->job_id, node->name);
		tt_conncache_release(tn->c, false);
		/* claimed before the side connection goes back to the cache */
		tn->c = tt_conncache_claim(node->host, node->port, &error);
		if (tn->c == NULL)
			cleanup_fails(tn, error);
		else
			tn->cleanup_phase = TC_CONNECT;
	}
	tt_side_query_finish(&tn->side);
	return false;
}

/*
 * cleanup_settle
 *		TC_SETTLE: the job is dropped on the node; read what c's canceled
 *		query still sends until it is over (c is kept) or drain_until
 *		passes (c is closed at the end).
 */
static bool
cleanup_settle(TTTrackerNode *tn, pgsocket *sock, uint32 *events)
{
	PGconn	   *conn = tn->c->conn;

	if (tt_discard_results(conn) != 0 ||
		GetCurrentTimestamp() >= tn->drain_until)
	{
		tn->cleanup_phase = TC_DONE;
		return false;
	}
	*events = WL_SOCKET_READABLE;
	*sock = PQsocket(conn);
	return true;
}

/*
 * cleanup_connect
 *		TC_CONNECT: finish setting up c, then TC_DRAIN.  A new session shows
 *		the node is alive.  An attempt that timed out while the node still
 *		has until answer_by to show it is alive is started again (a loaded
 *		node is not a dead one); a refused or failed attempt is final.
 */
static bool
cleanup_connect(TTNode *node, TimestampTz answer_by,
				pgsocket *sock, uint32 *events)
{
	TTTrackerNode *tn = node->tn;
	int			r;

	if (!tn->c->connecting)
	{
		tn->cleanup_phase = TC_DRAIN;
		return false;
	}
	r = tt_conncache_connect_poll(tn->c);
	if (r == 0)
		tn->answered = true;	/* a new session: alive */
	if (r < 0 && PQstatus(tn->c->conn) != CONNECTION_BAD &&
		GetCurrentTimestamp() < answer_by)
	{
		char	   *error;

		tt_conncache_release(tn->c, false);
		tn->c = tt_conncache_claim(node->host, node->port, &error);
		if (tn->c == NULL)
		{
			cleanup_fails(tn, error);
			return false;
		}
		r = tt_conncache_connect_poll(tn->c);
	}
	if (r < 0)
	{
		cleanup_fails(tn, PQstatus(tn->c->conn) == CONNECTION_BAD ?
					  tt_conn_error_message(tn->c->conn) :
					  pstrdup("timeout expired"));
		return false;
	}
	if (r > 0)
	{
		*events = tt_poll_wait_events(tn->c->poll);
		*sock = PQsocket(tn->c->conn);
		return true;
	}
	tn->cleanup_phase = TC_DRAIN;
	return false;
}

/*
 * cleanup_drain
 *		TC_DRAIN: when c still runs a (canceled) query, read what it sends
 *		until it is over; then TC_SEND.
 */
static bool
cleanup_drain(TTTrackerNode *tn, pgsocket *sock, uint32 *events)
{
	PGconn	   *conn = tn->c->conn;

	if (PQtransactionStatus(conn) == PQTRANS_ACTIVE)
	{
		int			r = tt_discard_results(conn);

		if (r < 0)
		{
			cleanup_fails(tn, tt_conn_error_message(conn));
			return false;
		}
		if (r == 0)
		{
			*events = WL_SOCKET_READABLE;
			*sock = PQsocket(conn);
			return true;
		}
	}
	tn->cleanup_phase = TC_SEND;
	return false;
}

/*
 * cleanup_send
 *		TC_SEND: start cleanup_job over c (tt_remote_query_start), then
 *		TC_READ.  Never waits.
 */
static bool
cleanup_send(TTTrackerNode *tn)
{
	tt_remote_query_start(&tn->cleanup_q, tn->c->conn, tn->cleanup_sql, false);
	tn->cleanup_phase = TC_READ;
	return false;
}

/*
 * cleanup_read
 *		TC_READ: run cleanup_job to its end (tt_remote_query_advance); the
 *		first error result, or a broken connection, makes it fail.
 */
static bool
cleanup_read(TTTrackerNode *tn, pgsocket *sock, uint32 *events)
{
	TTRemoteQuery *q = &tn->cleanup_q;

	tt_remote_query_advance(q);
	if (!q->done)
	{
		*events = q->events;
		*sock = q->sock;
		return true;
	}
	if (q->ok)
	{
		tn->cleanup_ok = true;
		tn->cleanup_phase = TC_DONE;
	}
	else
		cleanup_fails(tn, q->err.message);
	return false;
}

/*
 * connect_deadline_of
 *		The wall-clock limit of the connection the node's cleanup is setting
 *		up (the side query's or c), or 0 when it sets up none: the wait must
 *		end by then, since a connection attempt that gets no answer at all
 *		wakes nobody when its time is up.
 */
static TimestampTz
connect_deadline_of(TTTrackerNode *tn)
{
	TTConn	   *c = NULL;

	if (tn->cleanup_phase == TC_CANCEL)
		c = tn->side.c;
	else if (tn->cleanup_phase == TC_CONNECT)
		c = tn->c;
	return (c != NULL && c->connecting) ? c->connect_deadline : 0;
}

/*
 * advance_node_cleanup
 *		Run the node's cleanup phases as far as they go without waiting,
 *		one case per phase.  Returns true when the node waits on *sock for
 *		*events, false when its cleanup is over.
 */
static bool
advance_node_cleanup(TTNode *node, TimestampTz answer_by,
					 pgsocket *sock, uint32 *events)
{
	TTTrackerNode *tn = node->tn;

	for (;;)
	{
		bool		waits = false;

		switch (tn->cleanup_phase)
		{
			case TC_CANCEL:
				waits = cleanup_cancel(node, sock, events);
				break;
			case TC_SETTLE:
				waits = cleanup_settle(tn, sock, events);
				break;
			case TC_CONNECT:
				waits = cleanup_connect(node, answer_by, sock, events);
				break;
			case TC_DRAIN:
				waits = cleanup_drain(tn, sock, events);
				break;
			case TC_SEND:
				waits = cleanup_send(tn);
				break;
			case TC_READ:
				waits = cleanup_read(tn, sock, events);
				break;
			case TC_DONE:
				return false;
		}
		if (waits)
			return true;
	}
}

/*
 * finish_node_cleanup
 *		After the wait: a side query still running ran out of time; a node
 *		that got tasks and could not be cleaned up gets a WARNING naming it
 *		and the command to run there; the node's connection is kept when
 *		idle after a successful cleanup, closed otherwise (never
 *		PQcancel'ed, which blocks on a frozen node: a query still running
 *		there stops when its backend notices the lost client).
 */
static void
finish_node_cleanup(TTJob *job, TTNode *node)
{
	TTTrackerNode *tn = node->tn;

	if (tn->cleanup_phase == TC_CANCEL)
		tt_side_query_finish(&tn->side);
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

		tt_conncache_release(tn->c, reusable);
		tn->c = NULL;
	}
}

/*
 * tt_task_tracker_cleanup
 *		Drop the job on every node that got tasks (cleanup_job cancels the
 *		running ones and removes tasks and result files), all nodes at once,
 *		with a bounded wait: each node's cleanup runs through the phases of
 *		TNCleanupPhase (start_node_cleanup, advance_node_cleanup), and all
 *		their sockets are waited on together.  A node that shows no sign of
 *		life (any input on its connections, a new session set up) within
 *		answer_ms (see below) is given up (node_gave_no_sign).  A node that
 *		cannot be cleaned up gets a WARNING.  Whatever the settings,
 *		everything ends within TT_CLEANUP_MAX_HOLD of the start: the caller
 *		holds interrupts meanwhile.  Never throws but on out-of-memory.
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
		if (job->nodes[i].tn != NULL)
			start_node_cleanup(&job->nodes[i], failed, unused_busy, &nunused_busy);
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
		TimestampTz wake_by = deadline;

		for (i = 0; i < job->nnodes; i++)
		{
			TTNode	   *node = &job->nodes[i];
			TTTrackerNode *tn = node->tn;

			if (tn == NULL || tn->cleanup_phase == TC_DONE)
				continue;
			if (node_gave_no_sign(tn, answer_by, answer_ms))
				continue;
			if (!tn->answered)
				unanswered = true;
			if (advance_node_cleanup(node, answer_by, &socks[n], &events[n]))
			{
				TimestampTz connect_by = connect_deadline_of(tn);

				if (connect_by != 0 && connect_by < wake_by)
					wake_by = connect_by;
				n++;
			}
		}
		if (n == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;
		if (unanswered && answer_by < wake_by)
			wake_by = answer_by;
		timeout = tt_ms_until(wake_by);
		tt_wait_sockets(n, socks, events, NULL, timeout);
	}

	for (i = 0; i < job->nnodes; i++)
	{
		if (job->nodes[i].tn != NULL)
			finish_node_cleanup(job, &job->nodes[i]);
	}
	MemoryContextSwitchTo(old);
}
