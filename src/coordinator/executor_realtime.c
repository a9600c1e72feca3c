/*-------------------------------------------------------------------------
 *
 * executor_realtime.c
 *	  The real-time executor: runs a job's tasks directly on the worker
 *	  nodes over pooled asynchronous connections and streams their rows
 *	  into the result as they arrive.
 *
 * Design
 *	  Each node of the job has up to citus.max_connections_per_node
 *	  connection slots, opened by slow start (see dispatch) within the
 *	  coordinator's budget per node (src/coordinator/node_budget.c): the first one per
 *	  node uses the job's reserved slot, further ones only a free slot.
 *	  Connections come from the per-backend cache (src/coordinator/connection_cache.c):
 *	  a warm job reuses the previous job's connections and pays no
 *	  connection set-up.  Every slot is a small state machine: connecting,
 *	  idle, or running one task in single-row mode.  The loop hands queued
 *	  tasks to idle slots, waits once on every socket plus the latch
 *	  (tt_wait_sockets), and advances every slot.  It never sleeps for a
 *	  fixed time: the only timeout is the nearest connection deadline.
 *
 *	  Failures: a node that cannot be connected to is down for the job, and
 *	  all its queued tasks move to their next placements; but a connection
 *	  attempt that fails while the job works with the node over another
 *	  connection is only dropped (see connect_failed).  A task whose
 *	  connection breaks moves to its next placement; when it ran on a
 *	  connection taken from the cache it is first retried once on a fresh
 *	  connection to the same node (the cached one may have outlived a
 *	  server restart).  A task whose query fails moves to its next
 *	  placement too; a task that fails everywhere fails the job.
 *
 *	  Once the job works with a node, it asks for the node's control
 *	  connection (tt_conncache_control_open, src/coordinator/connection_cache.c),
 *	  so that a cancel finds an open connection to send pg_cancel_backend
 *	  over, instead of a new backend to start on every node.
 *
 *	  Liveness: a node can stop answering without closing its sockets (a
 *	  frozen or hung machine, a lost network): its busy connections then
 *	  stay silent forever.  As a busy connection may also legitimately run
 *	  a long query in silence, silence alone proves nothing, so the node is
 *	  probed.  When a node's busy connections have produced no input (see
 *	  tt_conn_has_input) for citus.node_connection_timeout since its last
 *	  input or last task start, a probe starts: SELECT 1 over a spare
 *	  connection to the node as the current user (an idle cached one or a
 *	  new one, tt_side_query_start), driven in the same wait as the job.
 *	  If the probe completes (or the node answers on any busy connection)
 *	  the node is alive and its silence timer restarts.  If it has not
 *	  completed within citus.node_connection_timeout, the node is dead for
 *	  the job: its connections are closed, it is marked down, and its
 *	  running and queued tasks move to their next placements.  A running
 *	  task that already delivered rows cannot move without duplicating
 *	  them: the job fails with a connection error (08006) naming the node
 *	  and the task.  At most one probe per node runs at a time, and only
 *	  while the job waits.  So a dead node is noticed within about twice
 *	  citus.node_connection_timeout, whatever statement_timeout says.
 *
 * Locking
 *	  None: process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "coordinator/tt_executor.h"
#include "coordinator/tt_node_budget.h"

/*
 * Slow start: while a node's tasks wait and all the job's connections there
 * are busy, another connection is opened at most every TT_SLOW_START_MS
 * (more at once as the established ones grow).  Tasks that finish sooner
 * than that never cost a new connection.
 */
#define TT_SLOW_START_MS 10

typedef struct TTRtConn
{
	TTConn	   *c;				/* claimed connection, or NULL */
	TTTask	   *task;			/* task it runs, or NULL when idle */
	bool		flushing;		/* query not completely sent yet */
	TTRemoteError err;			/* error of the task at hand */
} TTRtConn;

static void realtime_cleanup(TTJob *job, bool failed);

static void
slot_close(TTRtConn *slot, bool reusable)
{
	tt_conncache_release(slot->c, reusable);
	slot->c = NULL;
	slot->task = NULL;
	slot->flushing = false;
}

/* the connection of slot broke while it ran slot->task */
static void
slot_conn_failed(TTJob *job, TTNode *node, TTRtConn *slot)
{
	TTTask	   *task = slot->task;
	bool		reused = slot->c->reused;
	TTRemoteError err = slot->err;

	if (err.message == NULL)
		tt_remote_error_from_conn(slot->c->conn, "08006", &err);
	slot_close(slot, false);
	if (task == NULL)
		return;
	if (reused && !task->retried_fresh && task->rows == 0 &&
		strncmp(err.sqlstate, "08", 2) == 0)
	{
		/* a stale cached connection: once more on a fresh one */
		task->retried_fresh = true;
		task->state = TT_TASK_PENDING;
		tt_queue_push_front(&node->pending, task);
		return;
	}
	tt_task_failed_at_placement(job, task, &err);
}

static void
slot_start_task(TTJob *job, TTNode *node, TTRtConn *slot, TTTask *task)
{
	int			r;

	slot->task = task;
	task->state = TT_TASK_RUNNING;
	node->heard_at = GetCurrentTimestamp();
	memset(&slot->err, 0, sizeof(slot->err));
	if (!task->copy_checked)
	{
		MemoryContext old = MemoryContextSwitchTo(job->cxt);

		task->copy_sql = tt_copy_query(task->query);
		task->copy_checked = true;
		MemoryContextSwitchTo(old);
	}
	task->use_copy = (task->copy_sql != NULL && !task->no_copy);
	task->copying = false;
	if (task->use_copy)
		r = tt_send_query(slot->c->conn, task->copy_sql, false);
	else
		r = tt_send_query(slot->c->conn, task->query, true);
	if (r < 0)
		slot_conn_failed(job, node, slot);
	else
		slot->flushing = (r == 1);
}

/*
 * dispatch
 *		Give queued tasks to idle connections, then open connections for
 *		the tasks still queued, by slow start: another connection only
 *		while tasks wait and every connection to the node is busy, at most
 *		every TT_SLOW_START_MS (node->extra_after), no more connections
 *		being set up at once than there are established ones (at least
 *		one), none before node->connect_after (backoff after a refused or
 *		slow attempt).  The first connection to a node uses the
 *		job's reserved budget slot (tt_job_reserve), and starts only while
 *		no other attempt of the job holds a connect turn; further ones are
 *		taken only when the coordinator's budget has a slot free within the
 *		session's fair share and a connect turn is free
 *		(tt_conncache_claim_extra), else the tasks wait for the job's own
 *		connections.
 */
static void
dispatch(TTJob *job, TTNode *node)
{
	int			established = 0;
	int			connecting = 0;
	TimestampTz now;
	int			i;

	if (node->down)
		return;
	if (node->pending.len == 0)
	{
		int			open = 0;

		/*
		 * Nothing queued here: give idle connections back at once (cached
		 * or closed, see tt_conncache_release), so that other sessions can
		 * have their slots, but one: the job's reserved slot stays anyway,
		 * and while sessions wait for the node the connection given back
		 * would be closed, and a task that fails over to the node later
		 * would need a new one.
		 */
		for (i = 0; i < node->nrt; i++)
			if (node->rt[i].c != NULL)
				open++;
		for (i = 0; i < node->nrt && open > 1; i++)
			if (node->rt[i].c != NULL && !node->rt[i].c->connecting &&
				node->rt[i].task == NULL)
			{
				slot_close(&node->rt[i], true);
				open--;
			}
		return;
	}

	for (i = 0; i < node->nrt && node->pending.len > 0; i++)
	{
		TTRtConn   *slot = &node->rt[i];

		if (slot->c == NULL)
			continue;
		if (slot->c->connecting)
		{
			connecting++;
			continue;
		}
		established++;
		if (slot->task == NULL)
			slot_start_task(job, node, slot, tt_queue_pop(&node->pending));
	}
	/* idle cached connections cost nothing to set up: take them first */
	for (i = 0; i < node->nrt && node->pending.len > connecting; i++)
	{
		TTRtConn   *slot = &node->rt[i];

		if (slot->c != NULL)
			continue;
		slot->c = tt_conncache_claim_cached(node->host, node->port);
		if (slot->c == NULL)
			break;
		established++;
		slot_start_task(job, node, slot, tt_queue_pop(&node->pending));
		if (node->down)
			return;
	}
	if (node->pending.len <= connecting || node->down)
		return;
	now = GetCurrentTimestamp();
	if (node->connect_after != 0 && now < node->connect_after)
		return;
	if (established + connecting > 0 && now < node->extra_after)
		return;

	for (i = 0; i < node->nrt && node->pending.len > connecting &&
		 connecting < Max(1, established); i++)
	{
		TTRtConn   *slot = &node->rt[i];
		char	   *error;

		if (slot->c != NULL)
			continue;
		if (established + connecting == 0)
		{
			/*
			 * Our attempt to another node holds a connect turn: let it end
			 * first (its socket wakes us), rather than take a turn here
			 * beyond the node's pacing (tt_budget_connect_begin).
			 */
			if (tt_budget_turns_held() > 0)
				return;
			slot->c = tt_conncache_claim(node->host, node->port, &error);
		}
		else
			slot->c = tt_conncache_claim_extra(node->host, node->port, &error);
		if (slot->c == NULL && error == NULL)
			return;				/* no slot free in the budget: wait for ours */
		if (slot->c == NULL)
		{
			TTRemoteError err;

			if (established + connecting > 0)
				return;			/* no FD now; the job's connections go on */
			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, "53000", sizeof(err.sqlstate));
			err.message = error;
			tt_node_set_down(job, node, &err);
			return;
		}
		node->extra_after = TimestampTzPlusMilliseconds(now, TT_SLOW_START_MS);
		if (!slot->c->connecting)
		{
			/* an idle cached connection */
			established++;
			slot_start_task(job, node, slot, tt_queue_pop(&node->pending));
		}
		else
			connecting++;
	}
}

/*
 * connect_failed
 *		A connection attempt of slot failed or timed out.  When the job has
 *		a working connection to the node, that is no node failure: the
 *		attempt is dropped, the queued tasks wait for the working
 *		connections and new attempts back off.  Without one, a refusal
 *		(the node is there but full) or a timeout (it may only be slow) is
 *		retried with back-off while the first such failure is less than
 *		citus.node_connection_timeout ago, so a node that does not answer is
 *		given up after about twice citus.node_connection_timeout; anything
 *		else (connection refused by a closed port, authentication...), or
 *		failing for longer, makes the node down for the job (its tasks fail
 *		over).  The task-tracker executor decides the same way
 *		(tt_connect_failure, tt_connect_retry in src/coordinator/executor.c).
 */
static void
connect_failed(TTJob *job, TTNode *node, TTRtConn *slot)
{
	TTRemoteError err;
	bool		working = false;
	bool		passing;
	int			i;

	passing = tt_connect_failure(node, slot->c, &err);
	slot_close(slot, false);

	for (i = 0; i < node->nrt; i++)
		if (node->rt[i].c != NULL && !node->rt[i].c->connecting)
			working = true;
	if (working)
	{
		elog(DEBUG1, "task_tracker: dropped a connection attempt to node %s, the job has working connections there: %s",
			 node->name, err.message);
		tt_connect_back_off(node);
		return;
	}
	for (i = 0; i < node->nrt; i++)
		if (node->rt[i].c != NULL)
			return;				/* another attempt is still under way */
	if (passing && tt_connect_retry(node))
	{
		elog(DEBUG1, "task_tracker: could not connect to node %s, retrying: %s",
			 node->name, err.message);
		return;
	}
	tt_node_set_down(job, node, &err);
}

/*
 * advance
 *		Move one slot forward after a wait: finish connecting, flush, read
 *		rows, notice the end of its task.
 */
static void
advance(TTJob *job, TTNode *node, TTRtConn *slot)
{
	TTTask	   *task;

	if (slot->c == NULL)
		return;

	if (slot->c->connecting)
	{
		int			r = tt_conncache_connect_poll(slot->c);

		if (r < 0)
			connect_failed(job, node, slot);
		else if (r == 0)
			tt_connect_succeeded(node);
		return;
	}

	task = slot->task;
	if (task == NULL)
		return;

	if (slot->flushing)
	{
		int			r = tt_flush(slot->c->conn);

		if (r < 0)
		{
			slot_conn_failed(job, node, slot);
			return;
		}
		slot->flushing = (r == 1);
	}

	switch (tt_job_drain(job, slot->c->conn, task, true, &slot->err))
	{
		case TT_DRAIN_BUSY:
			break;
		case TT_DRAIN_DONE:
			slot->task = NULL;
			tt_task_done(job, task);
			break;
		case TT_DRAIN_SQL_ERROR:
			slot->task = NULL;
			if (task->use_copy && task->rows == 0 &&
				strcmp(slot->err.sqlstate, "0A000") == 0)
			{
				/* the worker cannot run it as a COPY: run it as it is */
				task->no_copy = true;
				task->state = TT_TASK_PENDING;
				tt_queue_push_front(&node->pending, task);
				break;
			}
			tt_task_failed_at_placement(job, task, &slot->err);
			break;
		case TT_DRAIN_CONN_ERROR:
			slot_conn_failed(job, node, slot);
			break;
	}
}

/* does node have a connection running a task (sent, not connecting)? */
static bool
node_busy(TTNode *node)
{
	int			i;

	for (i = 0; i < node->nrt; i++)
		if (node->rt[i].c != NULL && !node->rt[i].c->connecting &&
			node->rt[i].task != NULL)
			return true;
	return false;
}

/* end node's probe, if any; never throws */
static void
probe_end(TTNode *node)
{
	if (node->probing)
		tt_side_query_finish(&node->probe);
	node->probing = false;
}

/*
 * node_dead
 *		The node did not answer the liveness probe in time: close all its
 *		connections (without waiting for it), mark it down, and move its
 *		running and queued tasks to their next placements.  Throws when a
 *		task cannot move (no placement left, or rows already delivered).
 */
static void
node_dead(TTJob *job, TTNode *node)
{
	TTRemoteError err;
	TTTask	  **running;
	int			nrunning = 0;
	int			i;

	probe_end(node);
	memset(&err, 0, sizeof(err));
	strlcpy(err.sqlstate, "08006", sizeof(err.sqlstate));
	err.message = psprintf("node %s stopped answering: no response within %d ms",
						   node->name, 2 * node_connection_timeout);
	err.detail = psprintf("Its connections gave no input for %d ms and a new query to it did not complete within %d ms.",
						  node_connection_timeout, node_connection_timeout);
	elog(DEBUG1, "task_tracker: %s", err.message);

	/* first close every connection, so that nothing waits for it later */
	running = palloc(sizeof(TTTask *) * Max(node->nrt, 1));
	for (i = 0; i < node->nrt; i++)
	{
		TTRtConn   *slot = &node->rt[i];

		if (slot->c == NULL)
			continue;
		if (slot->task != NULL)
			running[nrunning++] = slot->task;
		slot_close(slot, false);
	}
	tt_node_set_down(job, node, &err);
	for (i = 0; i < nrunning; i++)
		tt_task_failed_at_placement(job, running[i], &err);
	pfree(running);
}

/*
 * check_liveness
 *		Before a wait: start a probe when the node's busy connections have
 *		been silent (no input seen by the wait) for
 *		citus.node_connection_timeout,
 *		advance a running probe, and declare the node dead when the probe
 *		ran out of time (see the file header).  *timeout is lowered to the
 *		node's next liveness deadline.  Throws as node_dead does.
 */
static void
check_liveness(TTJob *job, TTNode *node, TimestampTz now, long *timeout)
{
	TimestampTz due;
	long		left;
	int			i;

	if (node->down || node->rt == NULL)
		return;
	if (!node_busy(node))
	{
		probe_end(node);
		return;
	}
	if (node->probing)
	{
		TimestampTz probe_start;

		probe_start = TimestampTzPlusMilliseconds(node->probe_deadline,
												  -node_connection_timeout);
		tt_side_query_advance(&node->probe);
		if (node->probe.q.done && !node->probe.q.ok && !node->probe.q.sent &&
			node->heard_at < probe_start)
		{
			/* could not even connect: as good as no answer */
			node->probe_deadline = now;
		}
		else if (node->probe.q.done || node->heard_at >= probe_start)
		{
			/* it answered (even with an error): alive */
			probe_end(node);
			node->heard_at = now;
		}
		if (node->probing)
		{
			if (now >= node->probe_deadline)
			{
				node_dead(job, node);
				return;
			}
			left = TimestampDifferenceMilliseconds(now, node->probe_deadline);
			if (*timeout < 0 || left < *timeout)
				*timeout = left;
			return;
		}
	}

	due = TimestampTzPlusMilliseconds(node->heard_at, node_connection_timeout);
	if (now >= due)
	{
		/* silent for too long: is the node still there? */
		TTConn	   *like = NULL;

		for (i = 0; i < node->nrt && like == NULL; i++)
			if (node->rt[i].c != NULL && !node->rt[i].c->connecting)
				like = node->rt[i].c;
		tt_side_query_start(&node->probe, like, "SELECT 1");
		node->probing = true;
		if (node->probe.c == NULL)
		{
			/* no connection to be had here (no FD left): cannot tell */
			probe_end(node);
			node->heard_at = now;
			left = node_connection_timeout;
			if (*timeout < 0 || left < *timeout)
				*timeout = left;
			return;
		}
		node->probe_deadline = TimestampTzPlusMilliseconds(now, node_connection_timeout);
		elog(DEBUG1, "task_tracker: no input from node %s for %d ms during job " INT64_FORMAT ": probing it",
			 node->name, node_connection_timeout, job->job_id);
		tt_side_query_advance(&node->probe);
		left = node_connection_timeout;
	}
	else
		left = TimestampDifferenceMilliseconds(now, due);
	if (*timeout < 0 || left < *timeout)
		*timeout = left;
}

/*
 * tt_realtime_execute
 *		Run every task of job (already queued at its first placement) and
 *		put their rows into job->tupstore.  Throws on failure; the caller's
 *		PG_CATCH runs job->cleanup.
 */
void
tt_realtime_execute(TTJob *job)
{
	int			maxconns = max_connections_per_node;
	int			nsocks = 0;
	pgsocket   *socks;
	uint32	   *events;
	bool	   *ready;
	int		   *busy_node;
	int			i;

	job->cleanup = realtime_cleanup;
	for (i = 0; i < job->nnodes; i++)
	{
		job->nodes[i].rt = MemoryContextAllocZero(job->cxt, sizeof(TTRtConn) * maxconns);
		job->nodes[i].nrt = maxconns;
		nsocks += maxconns;
	}
	nsocks += job->nnodes;		/* the probes */
	socks = MemoryContextAlloc(job->cxt, sizeof(pgsocket) * nsocks);
	events = MemoryContextAlloc(job->cxt, sizeof(uint32) * nsocks);
	ready = MemoryContextAlloc(job->cxt, sizeof(bool) * nsocks);
	busy_node = MemoryContextAlloc(job->cxt, sizeof(int) * nsocks);
	tt_job_progress(job, TT_JOB_RUNNING);

	for (;;)
	{
		long		timeout = -1;
		int			n = 0;
		int			j;
		TimestampTz now;

		for (i = 0; i < job->nnodes; i++)
			dispatch(job, &job->nodes[i]);

		if (job->tasks_done >= job->ntasks)
			break;

		/* a control connection per node, for a cancel without a new backend */
		for (i = 0; i < job->nnodes; i++)
		{
			TTNode	   *node = &job->nodes[i];

			for (j = 0; j < node->nrt; j++)
				if (node->rt[j].c != NULL && !node->rt[j].c->connecting)
				{
					tt_conncache_control_open(node->rt[j].c, (uint64) job->job_id);
					break;
				}
		}

		now = GetCurrentTimestamp();
		for (i = 0; i < job->nnodes; i++)
			check_liveness(job, &job->nodes[i], now, &timeout);
		/* a dead node's tasks may have moved: hand them out first */
		for (i = 0; i < job->nnodes; i++)
			dispatch(job, &job->nodes[i]);

		for (i = 0; i < job->nnodes; i++)
		{
			TTNode	   *node = &job->nodes[i];

			/* tasks queued behind a back-off or slow start: wake up then */
			if (!node->down && node->pending.len > 0 &&
				(node->connect_after != 0 || node->extra_after != 0))
			{
				long		left = tt_ms_until(Max(node->connect_after,
												   node->extra_after));

				if (left > 0 && (timeout < 0 || left < timeout))
					timeout = left;
			}
			if (node->probing && !node->probe.q.done &&
				node->probe.q.sock != PGINVALID_SOCKET)
			{
				socks[n] = node->probe.q.sock;
				busy_node[n] = -1;
				events[n++] = node->probe.q.events;
			}
			for (j = 0; j < node->nrt; j++)
			{
				TTRtConn   *slot = &node->rt[j];
				pgsocket	sock;

				if (slot->c == NULL)
					continue;
				sock = PQsocket(slot->c->conn);
				if (slot->c->connecting)
				{
					long		left = tt_ms_until(slot->c->connect_deadline);

					if (timeout < 0 || left < timeout)
						timeout = left;
					if (sock == PGINVALID_SOCKET)
					{
						timeout = 0;
						continue;
					}
					events[n] = tt_poll_wait_events(slot->c->poll);
				}
				else if (slot->task != NULL)
					events[n] = WL_SOCKET_READABLE |
						(slot->flushing ? WL_SOCKET_WRITEABLE : 0);
				else
					continue;
				if (sock == PGINVALID_SOCKET)
				{
					timeout = 0;
					continue;
				}
				/* input on a connection running a task: the node is alive */
				busy_node[n] = slot->c->connecting ? -1 : i;
				socks[n++] = sock;
			}
		}

		if (n == 0 && timeout < 0)
			elog(ERROR, "real-time executor has %d unfinished tasks but nothing to wait for",
				 job->ntasks - job->tasks_done);

		tt_wait_sockets(n, socks, events, ready, timeout);

		now = GetCurrentTimestamp();
		for (j = 0; j < n; j++)
		{
			if (ready[j] && busy_node[j] >= 0)
				job->nodes[busy_node[j]].heard_at = now;
		}
		for (i = 0; i < job->nnodes; i++)
		{
			TTNode	   *node = &job->nodes[i];

			for (j = 0; j < node->nrt; j++)
				advance(job, node, &node->rt[j]);
		}
	}
}

/*
 * realtime_cleanup
 *		Give the job's connections back.  After a failure, the queries still
 *		running are canceled, all nodes at once (tt_conncache_cancel_many);
 *		their connections are kept only once the canceled query is seen to
 *		end and the session is reset (tt_conncache_cancel_release), closed
 *		otherwise, and at once when their node does not answer the cancel.
 *		Idle clean connections go back to the cache.  Runs with interrupts
 *		held; bounded, never blocks on a node (no PQcancel); never throws
 *		but on out-of-memory.
 */
static void
realtime_cleanup(TTJob *job, bool failed)
{
	TTConn	  **busy;
	int			nbusy = 0;
	int			i,
				j;

	job->cleaned = true;
	for (i = 0; i < job->nnodes; i++)
		nbusy += job->nodes[i].nrt;
	busy = palloc(sizeof(TTConn *) * Max(nbusy, 1));
	nbusy = 0;

	/*
	 * Give every connection back: idle clean ones to the cache; those still
	 * running a task are canceled, all nodes at once, and kept once the
	 * canceled query has ended and the session is reset (a known state
	 * again), closed otherwise; those with a query not even sent whole or
	 * still being set up are closed at once.
	 */
	for (i = 0; i < job->nnodes; i++)
	{
		TTNode	   *node = &job->nodes[i];

		if (node->rt == NULL)
			continue;
		probe_end(node);
		for (j = 0; j < node->nrt; j++)
		{
			TTRtConn   *slot = &node->rt[j];

			if (slot->c == NULL)
				continue;
			if (slot->task != NULL && !slot->flushing && !slot->c->connecting)
			{
				busy[nbusy++] = slot->c;
				slot->c = NULL;
				slot->task = NULL;
				continue;
			}
			/*
			 * A query not even sent whole has not started; one still being
			 * set up runs nothing: closing is enough (and never blocks).
			 */
			slot_close(slot, slot->task == NULL && !slot->c->connecting);
		}
	}
	tt_conncache_cancel_release(busy, nbusy, true);
	pfree(busy);
}
