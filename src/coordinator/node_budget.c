/*-------------------------------------------------------------------------
 *
 * node_budget.c
 *	  The coordinator-wide connection budget per node: how many connections
 *	  all sessions of this coordinator together may hold to one worker
 *	  node (citus.max_shared_pool_size), so that many concurrent sessions
 *	  queue for connections instead of failing at the worker's
 *	  max_connections.
 *
 *	  It owns the budget's shared memory (a node table keyed by (host,
 *	  port) and one row per PGPROC with a cell per node), the slots a
 *	  backend holds (tt_budget_open / tt_budget_close, asked by the
 *	  connection cache for every connection), the all-or-nothing job
 *	  reservation (tt_budget_reserve), the event-driven waits for a slot
 *	  and for a connect turn, the requests to other sessions to close idle
 *	  connections, the learned budget, and the connection_pool view.
 *
 *	  The design (slot kinds, no deadlock, fair share, connect pacing,
 *	  exit and crash) is described in docs/architecture.md, "Node
 *	  budget"; comments below say why at each step.
 *
 * Locking
 *	  One LWLock (tranche "task_tracker node budget") protects the node
 *	  table and all rows; it is held only for short scans.  A row's
 *	  drop_pending flag and a node's learned budget are read without it as
 *	  hints (tt_budget_process_drops, tt_budget_learn_query).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/twophase.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "common/tt_settings.h"
#include "coordinator/tt_node_budget.h"
#include "common/tt_waits.h"

#define TT_BUDGET_MAX_NODES 64

/*
 * Connection attempts in flight to one node, over all sessions.  Setting up
 * a backend costs a worker a fork and its start-up; a hundred at once on a
 * loaded machine take seconds each and run into citus.node_connection_timeout
 * together, while a few at a time finish quickly.  Attempts beyond this wait
 * for their turn before they start (their timeout starts with them).
 */
#define TT_MAX_CONNECTING 8
#define TT_BUDGET_HOST_LEN 256

/* settings */
int			max_shared_pool_size = 0;
int			max_cached_conns_per_worker = 1;

typedef struct TTBudgetNode
{
	bool		used;			/* entry names a node */
	char		host[TT_BUDGET_HOST_LEN];	/* node name */
	int			port;			/* node port */
	int			learned;		/* budget learned from the node, 0 while
								 * unknown (tt_budget_learn) */
	int			in_use;			/* slots charged over all backends */
	int			holders;		/* backends charged at least one slot */
	int			idle;			/* idle cached connections among them */
	int			waiting;		/* backends waiting for a first slot */
	int			connecting;		/* connection attempts in flight */
	int			turn_waiters;	/* backends waiting for a connect turn */
	uint64		attempts_ended; /* connection attempts ended so far */
	ConditionVariable cv;		/* signalled when a slot is given back */
	ConditionVariable connect_cv;	/* signalled when an attempt ends */
} TTBudgetNode;

typedef struct TTBudgetCell
{
	uint16		conns;			/* open connections to the node */
	uint16		idle;			/* of those, idle in the cache */
	uint16		pins;			/* jobs holding a reserved slot */
	uint16		connecting;		/* its connection attempts in flight */
	bool		waiting;		/* waiting for a first slot there */
	bool		turn_waiting;	/* waiting for a connect turn there */
	bool		drop;			/* asked to close its idle connections */
} TTBudgetCell;

typedef struct TTBudgetRow
{
	int			pid;			/* backend using the row, 0 if none */
	bool		drop_pending;	/* some cell has drop set */
} TTBudgetRow;

typedef struct TTBudgetShared
{
	LWLock	   *lock;			/* protects everything below */
	int			nrows;			/* rows (one per PGPROC) */
	TTBudgetNode nodes[TT_BUDGET_MAX_NODES];
	TTBudgetRow *rows;			/* nrows rows */
	TTBudgetCell *cells;		/* nrows * TT_BUDGET_MAX_NODES cells */
} TTBudgetShared;

static TTBudgetShared *budget = NULL;
static int	my_row = -1;
static int	my_turns = 0;		/* connect turns this backend holds */
static bool xact_callback_registered = false;

/* local memo of node indexes */
typedef struct LocalNode
{
	char		host[TT_BUDGET_HOST_LEN];
	int			port;
	int			index;
} LocalNode;
static LocalNode local_nodes[TT_BUDGET_MAX_NODES];
static int	nlocal_nodes = 0;

PG_FUNCTION_INFO_V1(task_tracker_connection_pool);

static void budget_exit(int code, Datum arg);
static void budget_xact_callback(XactEvent event, void *arg);

/*
 * tt_budget_define_settings
 *		Define citus.max_shared_pool_size and citus.max_cached_conns_per_worker.
 */
void
tt_budget_define_settings(void)
{
	DefineCustomIntVariable("citus.max_shared_pool_size",
							"Connections all sessions of this coordinator together may hold to one node.",
							"0 (the default) means what each node can take, learned when the coordinator first connects to it "
							"(its max_connections less superuser_reserved_connections and citus.max_running_tasks_per_node); -1 means no limit.",
							&max_shared_pool_size,
							0, -1, INT_MAX / 2,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("citus.max_cached_conns_per_worker",
							"Idle connections a session keeps per node after its jobs.",
							"They count against citus.max_shared_pool_size; other sessions waiting for a slot can ask for them to be closed.",
							&max_cached_conns_per_worker,
							1, 0, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
}

static int
budget_rows(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

Size
tt_budget_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(TTBudgetShared));

	size = add_size(size, MAXALIGN(mul_size(budget_rows(), sizeof(TTBudgetRow))));
	size = add_size(size, mul_size(mul_size(budget_rows(), TT_BUDGET_MAX_NODES),
								   sizeof(TTBudgetCell)));
	return size;
}

void
tt_budget_shmem_request(void)
{
	RequestAddinShmemSpace(tt_budget_shmem_size());
	RequestNamedLWLockTranche("task_tracker node budget", 1);
}

/*
 * tt_budget_shmem_init
 *		Create or attach to the budget tables (caller: shmem_startup_hook,
 *		holding AddinShmemInitLock or not).
 */
void
tt_budget_shmem_init(void)
{
	bool		found;
	char	   *base;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("task_tracker node budget", tt_budget_shmem_size(), &found);
	budget = (TTBudgetShared *) base;
	if (!found)
	{
		int			i;

		memset(base, 0, tt_budget_shmem_size());
		budget->lock = &(GetNamedLWLockTranche("task_tracker node budget"))->lock;
		budget->nrows = budget_rows();
		for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
		{
			ConditionVariableInit(&budget->nodes[i].cv);
			ConditionVariableInit(&budget->nodes[i].connect_cv);
		}
	}
	/* pointers into the segment are the same in every process */
	budget->rows = (TTBudgetRow *) (base + MAXALIGN(sizeof(TTBudgetShared)));
	budget->cells = (TTBudgetCell *) (base + MAXALIGN(sizeof(TTBudgetShared)) +
									  MAXALIGN(mul_size(budget->nrows, sizeof(TTBudgetRow))));
	LWLockRelease(AddinShmemInitLock);
}

/*
 * budget_limit
 *		The budget of a node now (caller holds the lock): INT_MAX when
 *		unlimited; with the default setting (0) what was learned from the
 *		node when the coordinator first connected to it (tt_budget_learn),
 *		and TT_MAX_CONNECTING until then, so that a burst of sessions does
 *		not take more slots than the node may have before it is known.
 */
static int
budget_limit(int node)
{
	if (max_shared_pool_size < 0)
		return INT_MAX;
	if (max_shared_pool_size > 0)
		return max_shared_pool_size;
	if (budget->nodes[node].learned > 0)
		return budget->nodes[node].learned;
	return TT_MAX_CONNECTING;
}

/*
 * fair_share
 *		The connections one backend may hold to node beyond its first one
 *		when others want slots there too (caller holds the lock): the
 *		budget divided by the backends holding or waiting for slots, at
 *		least 1.  Extra connections beyond it are not opened, and not kept
 *		idle: at 64 sessions on a budget of 90, every session keeps one
 *		connection and reuses it, instead of sessions taking free slots for
 *		extra connections that others then need (a connection costs the
 *		worker a backend start, more than a short task).
 */
static int
fair_share(int node)
{
	TTBudgetNode *n = &budget->nodes[node];
	int			limit = budget_limit(node);

	if (limit == INT_MAX)
		return INT_MAX;
	return Max(1, limit / Max(1, n->holders + n->waiting));
}

static inline TTBudgetCell *
cell_of(int row, int node)
{
	return &budget->cells[row * TT_BUDGET_MAX_NODES + node];
}

static inline int
cell_units(TTBudgetCell *c)
{
	return Max((int) c->conns, c->pins > 0 ? 1 : 0);
}

/* the cell of node changed from before units: adjust the node (lock held) */
static void
recharge(int node, TTBudgetCell *c, int before)
{
	TTBudgetNode *n = &budget->nodes[node];
	int			after = cell_units(c);

	n->in_use += after - before;
	if (before == 0 && after > 0)
		n->holders++;
	else if (before > 0 && after == 0)
		n->holders--;
}

/* give back whatever row holds (lock held); returns nodes to wake as bits */
static void
clear_row(int row, bool *wake)
{
	int			i;

	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
	{
		TTBudgetCell *c = cell_of(row, i);
		TTBudgetNode *n = &budget->nodes[i];
		int			u = cell_units(c);

		if (u > 0)
		{
			n->in_use -= u;
			n->holders--;
			wake[i] = true;
		}
		n->idle -= c->idle;
		if (c->connecting > 0)
		{
			n->connecting -= c->connecting;
			n->attempts_ended += c->connecting;
			wake[i] = true;
		}
		if (c->waiting)
			n->waiting--;
		if (c->turn_waiting)
			n->turn_waiters--;
		memset(c, 0, sizeof(*c));
	}
	budget->rows[row].drop_pending = false;
}

/*
 * attach
 *		Take this backend's row (its PGPROC's), reclaiming what a backend
 *		that died without giving back its slots left there.  Returns false
 *		when there is no budget (not preloaded, no PGPROC).
 */
static bool
attach(void)
{
	bool		wake[TT_BUDGET_MAX_NODES];
	int			i;

	if (budget == NULL || MyProc == NULL)
		return false;
	if (my_row >= 0)
		return true;
	if (MyProc->pgprocno < 0 || MyProc->pgprocno >= budget->nrows)
		return false;

	memset(wake, 0, sizeof(wake));
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	if (budget->rows[MyProc->pgprocno].pid != MyProcPid)
	{
		clear_row(MyProc->pgprocno, wake);
		budget->rows[MyProc->pgprocno].pid = MyProcPid;
	}
	LWLockRelease(budget->lock);
	my_row = MyProc->pgprocno;
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
		if (wake[i])
		{
			ConditionVariableBroadcast(&budget->nodes[i].cv);
			ConditionVariableBroadcast(&budget->nodes[i].connect_cv);
		}
	on_shmem_exit(budget_exit, (Datum) 0);
	if (!xact_callback_registered)
	{
		RegisterXactCallback(budget_xact_callback, NULL);
		xact_callback_registered = true;
	}
	return true;
}

/* the connection cache's calls (tt_budget_set_cache_callbacks) */
static TTBudgetDropIdle cache_drop_idle = NULL;
static TTBudgetCloseAll cache_close_all = NULL;

/*
 * tt_budget_set_cache_callbacks
 *		Remember how to close the idle connections to a node and every
 *		connection of this backend (the connection cache's
 *		tt_conncache_drop_idle and tt_conncache_close_all).  Called once, by
 *		_PG_init.
 */
void
tt_budget_set_cache_callbacks(TTBudgetDropIdle drop_idle, TTBudgetCloseAll close_all)
{
	cache_drop_idle = drop_idle;
	cache_close_all = close_all;
}

/*
 * budget_exit
 *		Backend exit (on_shmem_exit, so after the abort of its transaction
 *		cleaned up its jobs): close the cached connections, give back every
 *		slot of the row.
 */
static void
budget_exit(int code, Datum arg)
{
	bool		wake[TT_BUDGET_MAX_NODES];
	int			i;

	if (budget == NULL || my_row < 0)
		return;
	if (cache_close_all)
		cache_close_all();
	memset(wake, 0, sizeof(wake));
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	clear_row(my_row, wake);
	budget->rows[my_row].pid = 0;
	my_turns = 0;
	LWLockRelease(budget->lock);
	my_row = -1;
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
		if (wake[i])
		{
			ConditionVariableBroadcast(&budget->nodes[i].cv);
			ConditionVariableBroadcast(&budget->nodes[i].connect_cv);
		}
}

/* at commit (also the empty one of a catchup interrupt): act on drop requests */
static void
budget_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
		tt_budget_process_drops();
}

/*
 * tt_budget_node
 *		The budget index of node (host, port), entering it in the shared
 *		table on first use; -1 when there is no budget (not preloaded) or
 *		the table is full (the node is then not limited; a WARNING says
 *		so once per backend).
 */
int
tt_budget_node(const char *host, int port)
{
	int			i;
	int			free_slot = -1;
	int			index = -1;
	static bool warned = false;

	if (!attach())
		return -1;
	for (i = 0; i < nlocal_nodes; i++)
		if (local_nodes[i].port == port && strcmp(local_nodes[i].host, host) == 0)
			return local_nodes[i].index;

	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
	{
		TTBudgetNode *n = &budget->nodes[i];

		if (!n->used)
		{
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (n->port == port && strncmp(n->host, host, TT_BUDGET_HOST_LEN) == 0)
		{
			index = i;
			break;
		}
	}
	if (index < 0 && free_slot >= 0)
	{
		TTBudgetNode *n = &budget->nodes[free_slot];

		n->used = true;
		strlcpy(n->host, host, sizeof(n->host));
		n->port = port;
		n->learned = n->in_use = n->holders = n->idle = n->waiting = n->connecting = 0;
		n->turn_waiters = 0;
		index = free_slot;
	}
	LWLockRelease(budget->lock);

	if (index < 0)
	{
		if (!warned)
			ereport(WARNING,
					(errmsg("connections to node %s:%d are not counted against citus.max_shared_pool_size",
							host, port),
					 errdetail("The coordinator budgets at most %d nodes.", TT_BUDGET_MAX_NODES)));
		warned = true;
		return -1;
	}
	if (nlocal_nodes < TT_BUDGET_MAX_NODES)
	{
		strlcpy(local_nodes[nlocal_nodes].host, host, TT_BUDGET_HOST_LEN);
		local_nodes[nlocal_nodes].port = port;
		local_nodes[nlocal_nodes].index = index;
		nlocal_nodes++;
	}
	return index;
}

/*
 * try_take
 *		With the lock held: charge what nodes[0..n-1] need, all or nothing.
 *		pin: reserve a slot for a job on each (a new unit only where the
 *		backend holds none); otherwise: one more connection to nodes[0] (a
 *		new unit unless a reserved slot has no connection yet).  nolimit:
 *		take it whatever the budget says.  Returns -1 when taken, or the
 *		index (into nodes) of a node without room.
 */
static int
try_take(const int *nodes, int n, bool pin, bool nolimit)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		TTBudgetCell *c = cell_of(my_row, nodes[i]);
		bool		needs = pin ? cell_units(c) == 0 : (int) c->conns >= cell_units(c);

		if (needs && !nolimit &&
			budget->nodes[nodes[i]].in_use >= budget_limit(nodes[i]))
			return i;
	}
	for (i = 0; i < n; i++)
	{
		TTBudgetCell *c = cell_of(my_row, nodes[i]);
		int			before = cell_units(c);

		if (pin)
			c->pins++;
		else
			c->conns++;
		recharge(nodes[i], c, before);
	}
	return -1;
}

/*
 * ask_idle_holder
 *		With the lock held: pick one other backend keeping an idle cached
 *		connection to node and not asked yet, flag it; returns its pid, or
 *		0 when there is none.
 */
static int
ask_idle_holder(int node)
{
	int			r;

	if (budget->nodes[node].idle <= 0)
		return 0;
	for (r = 0; r < budget->nrows; r++)
	{
		TTBudgetCell *c;

		if (r == my_row || budget->rows[r].pid == 0)
			continue;
		c = cell_of(r, node);
		if (c->idle > 0 && !c->drop)
		{
			c->drop = true;
			budget->rows[r].drop_pending = true;
			return budget->rows[r].pid;
		}
	}
	return 0;
}

/* stop waiting on node (lock held) */
static void
stop_waiting(int node)
{
	TTBudgetCell *c = cell_of(my_row, node);

	if (c->waiting)
	{
		c->waiting = false;
		budget->nodes[node].waiting--;
	}
}

/* with the lock held: a free slot on node and sessions waiting for it? */
static bool
room_for_waiter(int node)
{
	return budget->nodes[node].waiting > 0 &&
		budget->nodes[node].in_use < budget_limit(node);
}

/*
 * wait_and_take
 *		try_take until it succeeds, sleeping on the condition variable of a
 *		node without room in between.  While it waits the backend counts as
 *		waiting on that node (so that connections given back there are
 *		closed rather than cached, and EXTRA slots are not handed out),
 *		asks a session with an idle cached connection there to close it,
 *		closes its own idle ones there, and acts on such requests to it.
 *		Cancellable at every wake; throws only on cancel / termination.
 */
static void
wait_and_take(const int *nodes, int n, bool pin)
{
	volatile int waiting_on = -1;

	PG_TRY();
	{
		for (;;)
		{
			int			blocked;
			int			pid = 0;
			int			pass_on = -1;
			bool		own_idle = false;

			LWLockAcquire(budget->lock, LW_EXCLUSIVE);
			blocked = try_take(nodes, n, pin, false);
			if (blocked >= 0)
			{
				int			node = nodes[blocked];

				if (waiting_on != node)
				{
					if (waiting_on >= 0)
					{
						stop_waiting(waiting_on);
						pass_on = room_for_waiter(waiting_on) ? waiting_on : -1;
					}
					cell_of(my_row, node)->waiting = true;
					budget->nodes[node].waiting++;
					waiting_on = node;
				}
				own_idle = cell_of(my_row, node)->idle > 0;
				if (!own_idle)
					pid = ask_idle_holder(node);
			}
			else if (waiting_on >= 0)
			{
				stop_waiting(waiting_on);
				waiting_on = -1;
			}
			LWLockRelease(budget->lock);
			if (pass_on >= 0)
				ConditionVariableSignal(&budget->nodes[pass_on].cv);
			if (blocked < 0)
				break;

			if (own_idle)
			{
				/* our own idle connection there is in the way */
				if (cache_drop_idle)
					cache_drop_idle(waiting_on);
				continue;
			}
			if (pid != 0)
				SendProcSignal(pid, PROCSIG_CATCHUP_INTERRUPT, InvalidBackendId);

			/* sleep until a slot of that node is given back */
			ConditionVariablePrepareToSleep(&budget->nodes[waiting_on].cv);
			LWLockAcquire(budget->lock, LW_SHARED);
			blocked = budget->nodes[waiting_on].in_use >= budget_limit(waiting_on);
			LWLockRelease(budget->lock);
			if (blocked)
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1,
								 TT_WAIT_EXECUTOR);
				ResetLatch(MyLatch);
			}
			ConditionVariableCancelSleep();
			CHECK_FOR_INTERRUPTS();
			tt_budget_process_drops();
		}
	}
	PG_CATCH();
	{
		ConditionVariableCancelSleep();
		if (waiting_on >= 0)
		{
			bool		room;

			LWLockAcquire(budget->lock, LW_EXCLUSIVE);
			stop_waiting(waiting_on);
			room = room_for_waiter(waiting_on);
			LWLockRelease(budget->lock);
			/* a release may have woken us for a slot we now leave */
			if (room)
				ConditionVariableSignal(&budget->nodes[waiting_on].cv);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * tt_budget_open
 *		Ask for a slot for a new connection to node (an index from
 *		tt_budget_node, or -1: not budgeted).  TT_SLOT_FIRST waits for one
 *		when the backend holds none there (cancellable), TT_SLOT_EXTRA
 *		returns false when none is free or sessions wait for a first one,
 *		TT_SLOT_FORCE always counts the connection.  With interrupts held
 *		(cleanup paths) FIRST does not wait and acts as FORCE.  A true
 *		return must be matched by tt_budget_close when the connection
 *		closes (or fails to be set up).
 */
bool
tt_budget_open(int node, TTSlotKind kind)
{
	bool		ok;

	if (node < 0 || !attach())
		return true;

	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	if (kind == TT_SLOT_FORCE ||
		(kind == TT_SLOT_FIRST && InterruptHoldoffCount > 0))
	{
		TTBudgetCell *c = cell_of(my_row, node);
		int			before = cell_units(c);

		c->conns++;
		recharge(node, c, before);
		ok = true;
	}
	else if (kind == TT_SLOT_EXTRA)
	{
		TTBudgetCell *c = cell_of(my_row, node);
		TTBudgetNode *n = &budget->nodes[node];

		/* a reserved slot without its connection, or a free fair share */
		ok = (c->conns < cell_units(c)) ||
			(n->waiting == 0 && n->in_use < budget_limit(node) &&
			 (int) c->conns < fair_share(node));
		if (ok)
			(void) try_take(&node, 1, false, true);
	}
	else
		ok = (try_take(&node, 1, false, false) < 0);
	LWLockRelease(budget->lock);

	if (!ok && kind == TT_SLOT_FIRST)
	{
		wait_and_take(&node, 1, false);
		ok = true;
	}
	return ok;
}

/*
 * tt_budget_close
 *		A connection to node closed (idle: it was idle in the cache).
 *		Never throws.
 */
void
tt_budget_close(int node, bool idle)
{
	TTBudgetCell *c;
	int			before;
	bool		freed;

	if (node < 0 || budget == NULL || my_row < 0)
		return;
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	c = cell_of(my_row, node);
	before = cell_units(c);
	if (c->conns > 0)
		c->conns--;
	if (idle && c->idle > 0)
	{
		c->idle--;
		budget->nodes[node].idle--;
	}
	recharge(node, c, before);
	freed = before > cell_units(c);
	LWLockRelease(budget->lock);
	if (freed)
		ConditionVariableSignal(&budget->nodes[node].cv);
}

/*
 * tt_budget_idle
 *		A connection to node went idle in the cache (idle true) or was lent
 *		from it again.  Never throws.
 */
void
tt_budget_idle(int node, bool idle)
{
	TTBudgetCell *c;

	if (node < 0 || budget == NULL || my_row < 0)
		return;
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	c = cell_of(my_row, node);
	if (idle)
	{
		c->idle++;
		budget->nodes[node].idle++;
	}
	else if (c->idle > 0)
	{
		c->idle--;
		budget->nodes[node].idle--;
	}
	LWLockRelease(budget->lock);
}

/*
 * tt_budget_keep_idle
 *		May a connection to node given back by a job stay cached, the
 *		backend keeping idle_now idle ones of its key there already?  Never
 *		while sessions wait for a slot there or the node is over its budget.
 *		Otherwise up to citus.max_cached_conns_per_worker idle ones per node;
 *		and up to max_idle (the caller's per-key cap) while the node has a
 *		free slot and the backend holds no more than its fair share there
 *		(fair_share): spare idle connections make the next job and the
 *		cancel of a failed one cheap (a new connection to a loaded worker
 *		can take seconds), and cost nobody anything while nobody waits (a
 *		session that comes to wait has them closed on request).
 *		Never throws.
 */
bool
tt_budget_keep_idle(int node, int idle_now, int max_idle)
{
	bool		keep;
	int			idle;
	int			limit;

	if (node < 0 || budget == NULL || my_row < 0)
		return idle_now < Max(max_cached_conns_per_worker, max_idle);
	LWLockAcquire(budget->lock, LW_SHARED);
	limit = budget_limit(node);
	idle = Max(idle_now, (int) cell_of(my_row, node)->idle);
	if (budget->nodes[node].waiting > 0 || budget->nodes[node].in_use > limit)
		keep = false;
	else if (idle < max_cached_conns_per_worker)
		keep = true;
	else
		keep = idle < max_idle && budget->nodes[node].in_use < limit &&
			(int) cell_of(my_row, node)->conns <= fair_share(node);
	LWLockRelease(budget->lock);
	return keep;
}

/*
 * tt_budget_reserve
 *		Reserve one slot on each of the n nodes for a job, all at once,
 *		waiting (cancellable) until every one of them has room.  A node
 *		where the backend already holds a slot (an idle cached connection,
 *		another job's reservation) needs no new one.  Entries < 0 are
 *		skipped.  Throws on cancel.
 */
void
tt_budget_reserve(const int *nodes, int n)
{
	int		   *want;
	int			nwant = 0;
	int			i,
				k;
	bool		ok;

	if (n <= 0 || !attach())
		return;
	want = palloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
	{
		bool		dup = false;

		if (nodes[i] < 0)
			continue;
		for (k = 0; k < nwant; k++)
			dup |= (want[k] == nodes[i]);
		if (!dup)
			want[nwant++] = nodes[i];
	}
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	ok = (try_take(want, nwant, true, false) < 0);
	LWLockRelease(budget->lock);
	if (!ok)
		wait_and_take(want, nwant, true);
	pfree(want);
}

/*
 * tt_budget_unreserve
 *		Give back a job's reservation (the nodes given to tt_budget_reserve).
 *		Never throws.
 */
void
tt_budget_unreserve(const int *nodes, int n)
{
	bool		wake[TT_BUDGET_MAX_NODES];
	int			i;

	if (n <= 0 || budget == NULL || my_row < 0)
		return;
	memset(wake, 0, sizeof(wake));
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
	{
		TTBudgetCell *c;
		int			before;
		int			k;
		bool		dup = false;

		if (nodes[i] < 0)
			continue;
		for (k = 0; k < i; k++)
			dup |= (nodes[k] == nodes[i]);
		if (dup)
			continue;
		c = cell_of(my_row, nodes[i]);
		before = cell_units(c);
		if (c->pins > 0)
			c->pins--;
		recharge(nodes[i], c, before);
		if (before > cell_units(c))
			wake[nodes[i]] = true;
	}
	LWLockRelease(budget->lock);
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
		if (wake[i])
			ConditionVariableSignal(&budget->nodes[i].cv);
}

/*
 * tt_budget_connect_begin
 *		Take a turn to start a connection attempt to node (at most
 *		TT_MAX_CONNECTING in flight per node over all sessions).  When wait
 *		is true, waits for one (event-driven, cancellable); otherwise
 *		returns false when there is none.  A true return must be matched by
 *		tt_budget_connect_end once the attempt has ended, well or not.
 *
 *		Turns are handed out in order: while backends wait for one, a free
 *		turn is left to them (the longest waiting is woken first), not taken
 *		by a backend that just came (without that, waiters were overtaken
 *		again and again and some jobs waited many seconds for a first
 *		connection).  Extra connections (wait false) never take one then.
 *
 *		No deadlock: a waiting backend that holds a turn already (an attempt
 *		of its own in flight, which nobody drives while it waits) takes one
 *		at once, beyond the cap; callers that can wait for their own
 *		attempt first do so (tt_budget_turns_held).  And when no attempt to
 *		the node ended for citus.node_connection_timeout while a backend
 *		waited (their owners wait for something else), it takes a turn
 *		beyond the cap too.  Attempts that merely take long (a loaded
 *		worker) keep the others waiting: letting them all in at once would
 *		make every attempt slower, until they all time out together.
 */
bool
tt_budget_connect_begin(int node, bool wait)
{
	volatile bool queued = false;
	volatile bool ok = false;
	volatile bool stuck = false;
	volatile uint64 seen = 0;
	volatile TimestampTz until = 0;
	TTBudgetNode *n;

	if (node < 0 || !attach())
		return true;
	n = &budget->nodes[node];
	PG_TRY();
	{
		for (;;)
		{
			LWLockAcquire(budget->lock, LW_EXCLUSIVE);
			/* a free turn goes to the waiters first (woken in order) */
			if ((n->connecting < TT_MAX_CONNECTING &&
				 (n->turn_waiters == 0 || queued)) ||
				(wait && (my_turns > 0 || stuck)))
			{
				n->connecting++;
				cell_of(my_row, node)->connecting++;
				my_turns++;
				ok = true;
				if (queued)
				{
					n->turn_waiters--;
					cell_of(my_row, node)->turn_waiting = false;
				}
				queued = false;
			}
			else if (wait)
			{
				if (!queued)
				{
					n->turn_waiters++;
					cell_of(my_row, node)->turn_waiting = true;
				}
				queued = true;
				if (until == 0 || n->attempts_ended != seen)
				{
					/* the queue moves: wait for it (again) from now on */
					seen = n->attempts_ended;
					until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														node_connection_timeout);
				}
			}
			LWLockRelease(budget->lock);
			if (ok || !wait)
				break;

			ConditionVariablePrepareToSleep(&n->connect_cv);
			LWLockAcquire(budget->lock, LW_SHARED);
			ok = n->connecting < TT_MAX_CONNECTING || n->attempts_ended != seen;
			LWLockRelease(budget->lock);
			if (!ok)
			{
				long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

				if (left <= 0)
					stuck = true;
				else
				{
					(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 left, TT_WAIT_EXECUTOR);
					ResetLatch(MyLatch);
				}
			}
			ConditionVariableCancelSleep();
			ok = false;
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		bool		room = false;

		ConditionVariableCancelSleep();
		if (queued)
		{
			LWLockAcquire(budget->lock, LW_EXCLUSIVE);
			n->turn_waiters--;
			cell_of(my_row, node)->turn_waiting = false;
			room = n->connecting < TT_MAX_CONNECTING;
			LWLockRelease(budget->lock);
		}
		/* a turn given back may have woken us: pass it on */
		if (room)
			ConditionVariableSignal(&n->connect_cv);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return ok;
}

/*
 * tt_budget_turns_held
 *		How many connection attempts of this backend hold a turn now.
 */
int
tt_budget_turns_held(void)
{
	return my_turns;
}

/*
 * tt_budget_connect_quiet
 *		Is no connection attempt to node in flight, and no backend waiting
 *		for a turn there?  Read without the lock, as a hint: for connections
 *		worth making only when they cost the others nothing (the control
 *		connections of src/coordinator/connection_cache.c, which take no
 *		turn: made during a storm of first connections, they would slow
 *		those down until they time out).
 */
bool
tt_budget_connect_quiet(int node)
{
	TTBudgetNode *n;

	if (node < 0 || budget == NULL)
		return true;
	n = &budget->nodes[node];
	return n->connecting == 0 && n->turn_waiters == 0;
}

/*
 * tt_budget_connect_end
 *		A connection attempt begun with tt_budget_connect_begin ended.
 *		Never throws.
 */
void
tt_budget_connect_end(int node)
{
	TTBudgetCell *c;
	bool		ended = false;

	if (node < 0 || budget == NULL || my_row < 0)
		return;
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	c = cell_of(my_row, node);
	if (c->connecting > 0)
	{
		c->connecting--;
		budget->nodes[node].connecting--;
		budget->nodes[node].attempts_ended++;
		ended = true;
		if (my_turns > 0)
			my_turns--;
	}
	LWLockRelease(budget->lock);
	if (ended)
		ConditionVariableSignal(&budget->nodes[node].connect_cv);
}

/*
 * tt_budget_learn_query
 *		With the default citus.max_shared_pool_size (0), the query a new
 *		connection to node runs before it is used when the node's budget is
 *		not known yet (NULL otherwise): the connections the node can take
 *		from this coordinator, its max_connections less
 *		superuser_reserved_connections and less the task sessions of its
 *		tracker (citus.max_running_tasks_per_node, when it runs one).  Other
 *		clients of the workers, or other coordinators, are not known here:
 *		then set citus.max_shared_pool_size.  The answer goes to
 *		tt_budget_learn.
 */
const char *
tt_budget_learn_query(int node)
{
	if (node < 0 || budget == NULL || max_shared_pool_size != 0 ||
		budget->nodes[node].learned > 0)	/* unlocked: a hint */
		return NULL;
	return "SELECT pg_catalog.current_setting('max_connections')::pg_catalog.int4"
		" - pg_catalog.current_setting('superuser_reserved_connections')::pg_catalog.int4"
		" - coalesce(pg_catalog.current_setting('citus.max_running_tasks_per_node', true)::pg_catalog.int4, 0)";
}

/*
 * tt_budget_learn
 *		The node told its budget (tt_budget_learn_query): keep the first
 *		answer (at least 1) for the life of the coordinator's shared
 *		memory, and wake the sessions waiting for a slot there, which may
 *		fit now.  Never throws.
 */
void
tt_budget_learn(int node, int connections)
{
	bool		learned = false;

	if (node < 0 || budget == NULL)
		return;
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	if (budget->nodes[node].learned == 0)
	{
		budget->nodes[node].learned = Max(1, connections);
		learned = true;
	}
	LWLockRelease(budget->lock);
	if (learned)
		ConditionVariableBroadcast(&budget->nodes[node].cv);
}

/*
 * tt_budget_process_drops
 *		Close the idle cached connections other sessions asked this one to
 *		close.  Cheap when there is nothing to do (one unlocked read).
 *		Never throws.
 */
void
tt_budget_process_drops(void)
{
	bool		drop[TT_BUDGET_MAX_NODES];
	int			i;

	if (budget == NULL || my_row < 0 || !budget->rows[my_row].drop_pending)
		return;
	memset(drop, 0, sizeof(drop));
	LWLockAcquire(budget->lock, LW_EXCLUSIVE);
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
	{
		TTBudgetCell *c = cell_of(my_row, i);

		drop[i] = c->drop;
		c->drop = false;
	}
	budget->rows[my_row].drop_pending = false;
	LWLockRelease(budget->lock);
	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
		if (drop[i])
			if (cache_drop_idle)
				cache_drop_idle(i);
}

/*
 * task_tracker.connection_pool_list()
 *		Per budgeted node: its budget (NULL: no limit), the slots in use
 *		(connections and reserved slots of every session), the idle cached
 *		connections among them, and the sessions waiting for a slot.
 */
Datum
task_tracker_connection_pool(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (budget == NULL)
		return (Datum) 0;

	for (i = 0; i < TT_BUDGET_MAX_NODES; i++)
	{
		Datum		values[6];
		bool		nulls[6];
		TTBudgetNode copy;
		int			limit;

		LWLockAcquire(budget->lock, LW_SHARED);
		copy = budget->nodes[i];
		limit = budget_limit(i);
		LWLockRelease(budget->lock);
		if (!copy.used)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(copy.host);
		values[1] = Int32GetDatum(copy.port);
		values[2] = Int32GetDatum(limit);
		nulls[2] = (limit == INT_MAX);
		values[3] = Int32GetDatum(copy.in_use);
		values[4] = Int32GetDatum(copy.idle);
		values[5] = Int32GetDatum(copy.waiting);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
