/*-------------------------------------------------------------------------
 *
 * connection_cache.c
 *	  The coordinator's per-backend cache of connections to worker nodes.
 *
 * Design
 *	  Connections are keyed by (host, port, user, database): a connection
 *	  is always established as the current user (GetUserId()) to the
 *	  current database, through tt_conn_start() of src/common/remote.c (keyword /
 *	  value arrays, AcquireExternalFD, a notice receiver).  Several
 *	  connections may share a key: the real-time executor uses up to
 *	  citus.max_connections_per_node of them per node.
 *
 *	  Every connection takes a slot of the coordinator-wide budget of its
 *	  node before it connects (src/coordinator/node_budget.c, tt_budget_open) and gives
 *	  it back when it is closed (drop_conn): the first one a session needs
 *	  may wait for a slot (tt_conncache_claim), extra ones are only taken
 *	  when a slot is free (tt_conncache_claim_extra), cancel and cleanup
 *	  connections are never refused (tt_side_query_start).  Idle ones stay
 *	  cached only while no session waits for that node, up to
 *	  citus.max_cached_conns_per_worker per node, more (up to
 *	  citus.max_connections_per_node per key) while the node has a free
 *	  slot (tt_budget_keep_idle); other sessions waiting
 *	  for a slot can ask for them to be closed (tt_conncache_drop_idle).
 *
 *	  A job claims connections and gives them back when it is done.  A
 *	  connection goes back into the cache only when its state is known to
 *	  be clean: connected, idle, outside any transaction.  After an error,
 *	  a cancel, a failed transaction, or an abort of the local transaction
 *	  it is closed instead (tt_conncache_release(c, false) and
 *	  tt_conncache_abort_cleanup()).  A cached connection is checked for a
 *	  dead server (PQconsumeInput) before it is lent again.
 *
 *	  Connecting is non-blocking: tt_conncache_claim() only starts the
 *	  attempt; the caller waits on the socket in its own WaitEventSet and
 *	  calls tt_conncache_connect_poll(), which also enforces the wall-clock
 *	  limit citus.node_connection_timeout measured from the start of the
 *	  attempt, and asks a node whose budget is not known yet for it
 *	  (tt_budget_learn_query) before the connection is used.
 *
 *	  Control connections.  A cancel over a connection that has to be set
 *	  up first costs a worker a new backend (15-40 ms on a loaded machine,
 *	  almost all of a cancel's time), and so does libpq's cancel request.
 *	  So a job asks for one control connection per key it uses
 *	  (tt_conncache_control_open, once it has a connection there): an idle
 *	  connection of the key that the job does not use becomes it, else one
 *	  is set up, without waiting (the executors' one wait drives it:
 *	  tt_conncache_control_sockets / tt_conncache_control_advance).  It
 *	  stays in the cache from job to job and is never lent to a job's
 *	  tasks (claim_idle skips it); side queries (the cancel, the cleanup
 *	  of the task-tracker executor, the liveness probe) take it first, so
 *	  that a warm cancel is one round trip on an open connection to every
 *	  node at once.  It counts in the node's budget like any connection,
 *	  as an extra one (TT_SLOT_EXTRA: only while a slot is free, nobody
 *	  waits for a first one and the session is within its fair share), is
 *	  idle between uses, so a session waiting for a slot has it closed
 *	  like any idle connection, and is only kept while the budget keeps
 *	  idle connections (tt_budget_keep_idle): under pressure a session
 *	  holds no control connection and a cancel sets up a connection as
 *	  before.  A job that needs a first connection and finds only the
 *	  control connection idle takes it rather than wait or connect.
 *
 *	  Only the cache is here: everything said to a server (connecting,
 *	  queries, the cancel query, draining) is src/common/remote.c's.
 *
 *	  Cancel never blocks.  libpq 15's PQcancel() has no timeout: it
 *	  connects to the server, sends the request and waits for EOF with a
 *	  blocking recv(), forever when the node is frozen (SIGSTOP, a hung
 *	  machine: the kernel still accepts connections into the backlog).  So
 *	  it is never called.  A query is canceled with
 *	  SELECT pg_cancel_backend(pid) (tt_remote_cancel_sql) over a spare
 *	  connection of the same key (tt_conncache_cancel_many), every node in
 *	  parallel, in one wait bounded by
 *	  Min(citus.node_connection_timeout, TT_SIDE_CANCEL_TIMEOUT).
 *	  A node where that does not work in time is taken as not answering:
 *	  its busy connections are marked (TTConn.unanswered) and closed by the
 *	  callers instead of drained.  Closing does not block either (the
 *	  sockets are non-blocking, PQfinish only queues its Terminate
 *	  message); the remote query then stops when its backend notices the
 *	  lost client, at once when it tries to send, or while it computes when
 *	  the workers set client_connection_check_interval (recommended).
 *
 * Locking
 *	  None: the cache is process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "commands/dbcommands.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "coordinator/tt_connection_cache.h"
#include "coordinator/tt_coordinator.h"
#include "coordinator/tt_node_budget.h"
#include "coordinator/tt_node_registry.h"
#include "common/tt_conn_auth.h"
#include "common/tt_remote.h"
#include "common/tt_waits.h"

#define TT_MAX_HOST_LEN 256

/*
 * Longest wait for the side connections that cancel busy ones, ms; the
 * whole of tt_conncache_cancel_release takes at most that plus
 * TT_CANCEL_EXTRA_TIME.
 */
#define TT_SIDE_CANCEL_TIMEOUT 2000
#define TT_CANCEL_EXTRA_TIME 500
/* cancel rounds for queries that go on, and the first wait for their end, ms */
#define TT_CANCEL_ROUNDS 3
#define TT_CANCEL_DRAIN_MIN 50

typedef struct TTConnKey
{
	char		host[TT_MAX_HOST_LEN];	/* node name, NUL padded */
	int			port;			/* node port */
	Oid			userid;			/* role the connections log in as */
	Oid			dbid;			/* database they are connected to */
} TTConnKey;

typedef struct TTConnEntry
{
	TTConnKey	key;			/* hash key; must be first */
	List	   *conns;			/* TTConn *, claimed or idle */
	char	   *user_name;		/* name of key.userid, looked up once */
	char	   *dbname;			/* name of key.dbid, looked up once */
	int			budget_node;	/* index in the node budget, -1 if none */
	TTConn	   *control;		/* the control connection, or NULL */
	bool		control_lent;	/* it runs a side query right now */
	uint64		control_asker;	/* the last job that asked for one */
} TTConnEntry;

static HTAB *conn_cache = NULL;
static MemoryContext conn_cache_cxt = NULL;

/* may a control connection be in set-up (not lent)?  A hint, see below */
static bool control_connecting = false;

static void
init_cache(void)
{
	HASHCTL		ctl;

	conn_cache_cxt = AllocSetContextCreate(TopMemoryContext,
										   "task_tracker connection cache",
										   ALLOCSET_SMALL_SIZES);
	ctl.keysize = sizeof(TTConnKey);
	ctl.entrysize = sizeof(TTConnEntry);
	ctl.hcxt = conn_cache_cxt;
	conn_cache = hash_create("task_tracker connections", 16, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* the attempt of c ended: give back its connect turn; never throws */
static void
connect_ended(TTConn *c)
{
	if (c->throttled)
		tt_budget_connect_end(c->entry->budget_node);
	c->throttled = false;
}

/* close c and forget it, giving back its budget slot; never throws */
static void
drop_conn(TTConn *c)
{
	TTConnEntry *entry = c->entry;

	connect_ended(c);
	if (c->learn.result != NULL)
		PQclear(c->learn.result);
	if (c->control)
	{
		entry->control = NULL;
		entry->control_lent = false;
	}
	tt_budget_close(entry->budget_node, !c->claimed);
	tt_conn_finish(c->conn);
	c->conn = NULL;
	entry->conns = list_delete_ptr(entry->conns, c);
	pfree(c);
}

/*
 * start_conn
 *		Start a new connection for entry (whose names are known) and lend it:
 *		c->connecting is true.  It first takes a slot of the node's budget
 *		(src/coordinator/node_budget.c) as kind says: TT_SLOT_FIRST may wait for one
 *		(and throws if canceled meanwhile), TT_SLOT_EXTRA returns NULL with
 *		*error NULL when there is none.  paced: take a connect turn first
 *		(tt_budget_connect_begin); cancel, cleanup and control connections
 *		do not.  Does no catalog access, so that it also works in the
 *		cleanup of an aborted transaction.  Returns NULL with *error set
 *		when no connection could be started.
 */
static TTConn *
start_conn(TTConnEntry *entry, TTSlotKind kind, bool paced, char **error)
{
	TTConnTarget target;
	TTConn	   *c;
	PGconn	   *conn;
	MemoryContext old;

	*error = NULL;
	if (!tt_budget_open(entry->budget_node, kind))
		return NULL;
	/* and a turn to connect (cancel and cleanup connections do not queue) */
	if (paced &&
		!tt_budget_connect_begin(entry->budget_node,
								 kind == TT_SLOT_FIRST && InterruptHoldoffCount == 0))
	{
		tt_budget_close(entry->budget_node, false);
		return NULL;
	}

	memset(&target, 0, sizeof(target));
	target.host = entry->key.host;
	/* the address resolved before the job: libpq need not look it up */
	(void) tt_node_address(entry->key.host, &target.host, &target.hostaddr);
	target.port = entry->key.port;
	target.user = entry->user_name;
	target.dbname = entry->dbname;
	/* text travels in this database's encoding, as postgres_fdw does */
	target.client_encoding = GetDatabaseEncodingName();
	target.application_name = "task_tracker coordinator";
	/* another node: citus.node_conninfo's options (TLS, passfile) */
	target.noptions = tt_node_conninfo_options(&target.option_keywords,
											   &target.option_values);

	conn = tt_conn_start(&target, error);
	if (conn == NULL)
	{
		if (paced)
			tt_budget_connect_end(entry->budget_node);
		tt_budget_close(entry->budget_node, false);
		return NULL;
	}

	old = MemoryContextSwitchTo(conn_cache_cxt);
	c = palloc0(sizeof(TTConn));
	c->conn = conn;
	c->entry = entry;
	c->claimed = true;
	c->connecting = true;
	c->poll = PGRES_POLLING_WRITING;
	c->connect_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  node_connection_timeout);
	c->reused = false;
	c->tracker_capacity = -1;
	c->throttled = paced;
	c->conninfo_generation = tt_node_conninfo_generation;
	entry->conns = lappend(entry->conns, c);
	MemoryContextSwitchTo(old);
	return c;
}

/* is an idle cached connection still good to lend? */
static bool
conn_is_healthy(TTConn *c)
{
	if (c->conn == NULL || c->connecting)
		return false;
	/* made before citus.node_conninfo last changed: connect anew */
	if (c->conninfo_generation != tt_node_conninfo_generation)
		return false;
	return tt_conn_check_idle(c->conn);
}

/* lend an idle healthy connection of entry, or return NULL; never throws */
static TTConn *
claim_idle(TTConnEntry *entry)
{
	ListCell   *lc;

retry:
	foreach(lc, entry->conns)
	{
		TTConn	   *c = (TTConn *) lfirst(lc);

		if (c->claimed || c->control)
			continue;
		if (!conn_is_healthy(c))
		{
			drop_conn(c);
			goto retry;			/* the list changed under foreach */
		}
		c->claimed = true;
		c->reused = true;
		c->unanswered = false;
		tt_budget_idle(entry->budget_node, false);
		return c;
	}
	return NULL;
}

/*
 * claim_kind
 *		Lend a connection to (host, port) as the current user to the current
 *		database: an idle healthy cached one, or a new one being set up (then
 *		c->connecting is true and the caller drives tt_conncache_connect_poll)
 *		with a budget slot of the given kind.
 *
 * Returns NULL with *error set when no connection could even be started (no
 * file descriptor left), or with *error NULL when kind is TT_SLOT_EXTRA and
 * the node's budget has no slot for it.  Throws on out-of-memory, and when
 * canceled while it waits for a slot.
 */
static TTConn *
claim_kind(const char *host, int port, TTSlotKind kind, char **error)
{
	TTConnKey	key;
	TTConnEntry *entry;
	bool		found;
	TTConn	   *c;

	*error = NULL;
	if (conn_cache == NULL)
		init_cache();

	memset(&key, 0, sizeof(key));
	strlcpy(key.host, host, sizeof(key.host));
	key.port = port;
	key.userid = GetUserId();
	key.dbid = MyDatabaseId;

	entry = hash_search(conn_cache, &key, HASH_ENTER, &found);
	if (!found)
	{
		entry->conns = NIL;
		entry->user_name = NULL;
		entry->dbname = NULL;
		entry->budget_node = tt_budget_node(host, port);
		entry->control = NULL;
		entry->control_lent = false;
		entry->control_asker = 0;
	}

	/* an idle cached connection? */
	c = claim_idle(entry);
	if (c != NULL)
		return c;

	/*
	 * A connection the job cannot do without, and only the control
	 * connection idle: better lend it than wait for a slot or connect (the
	 * job asks for a new control connection, which is taken only when the
	 * budget has room).
	 */
	if (kind == TT_SLOT_FIRST && entry->control != NULL &&
		!entry->control->claimed && !entry->control->connecting)
	{
		c = entry->control;
		if (conn_is_healthy(c))
		{
			c->control = false;
			entry->control = NULL;
			c->claimed = true;
			c->reused = true;
			c->unanswered = false;
			tt_budget_idle(entry->budget_node, false);
			return c;
		}
		drop_conn(c);
	}

	/* no: start a new one */
	if (entry->user_name == NULL)
	{
		char	   *user_name = GetUserNameFromId(key.userid, false);
		char	   *dbname = get_database_name(MyDatabaseId);

		if (dbname == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_DATABASE),
					 errmsg("current database no longer exists")));
		entry->user_name = MemoryContextStrdup(conn_cache_cxt, user_name);
		entry->dbname = MemoryContextStrdup(conn_cache_cxt, dbname);
	}
	return start_conn(entry, kind, kind != TT_SLOT_FORCE, error);
}

/*
 * tt_conncache_names
 *		The role and database names c logs in with (for error messages).
 */
void
tt_conncache_names(TTConn *c, const char **user_name, const char **dbname)
{
	*user_name = c->entry->user_name;
	*dbname = c->entry->dbname;
}

/*
 * tt_conncache_claim
 *		claim_kind() for a connection the caller cannot do without: when the
 *		session holds no slot of the node's budget, it waits for one
 *		(cancellable).  A job's reserved slot (tt_budget_reserve) is used
 *		without waiting.
 */
TTConn *
tt_conncache_claim(const char *host, int port, char **error)
{
	return claim_kind(host, port, TT_SLOT_FIRST, error);
}

/*
 * tt_conncache_claim_cached
 *		Lend an idle healthy cached connection to (host, port) of the current
 *		user and database, or return NULL; never connects, never throws but
 *		on out-of-memory.
 */
TTConn *
tt_conncache_claim_cached(const char *host, int port)
{
	TTConnKey	key;
	TTConnEntry *entry;

	if (conn_cache == NULL)
		return NULL;
	memset(&key, 0, sizeof(key));
	strlcpy(key.host, host, sizeof(key.host));
	key.port = port;
	key.userid = GetUserId();
	key.dbid = MyDatabaseId;
	entry = hash_search(conn_cache, &key, HASH_FIND, NULL);
	return entry ? claim_idle(entry) : NULL;
}

/*
 * tt_conncache_claim_extra
 *		claim_kind() for one more connection to a node the job already
 *		works with: NULL with *error NULL when the budget has no slot free
 *		(or sessions wait for their first one); never waits.
 */
TTConn *
tt_conncache_claim_extra(const char *host, int port, char **error)
{
	return claim_kind(host, port, TT_SLOT_EXTRA, error);
}

/*
 * learn_budget
 *		Part of setting up c: read the node's answer to
 *		tt_budget_learn_query and hand it to tt_budget_learn.  Returns as
 *		tt_conncache_connect_poll does; the connection is ready (0) once the
 *		answer is read, whatever it was (a node that cannot tell keeps the
 *		budget unknown, and the next connection asks again).
 */
static int
learn_budget(TTConn *c)
{
	TTRemoteQuery *q = &c->learn;
	PGresult   *res;

	c->poll = PGRES_POLLING_READING;
	tt_remote_query_advance(q);
	if (!q->done && GetCurrentTimestamp() < c->connect_deadline)
		return q->events;
	c->connecting = c->learning = false;
	connect_ended(c);
	res = q->result;
	q->result = NULL;
	if (res != NULL && q->ok && PQntuples(res) == 1 && PQnfields(res) == 1 &&
		!PQgetisnull(res, 0, 0))
		tt_budget_learn(c->entry->budget_node, atoi(PQgetvalue(res, 0, 0)));
	if (res != NULL)
		PQclear(res);
	/* out of time, or the connection failed: the attempt failed */
	return (!q->done || q->broken) ? -1 : 0;
}

/*
 * tt_conncache_connect_poll
 *		Advance a connection being set up.  Once libpq has established it,
 *		the first connection to a node whose budget is not known yet asks
 *		the node (learn_budget) before it counts as connected.
 *
 * Returns 0 once connected, the WL_SOCKET_* event to wait for while still
 * connecting, or -1 when the attempt failed or its wall-clock time ran out
 * (the connection then stays claimed and PQerrorMessage tells why; the
 * caller releases it as not reusable).
 */
int
tt_conncache_connect_poll(TTConn *c)
{
	int			r;

	if (!c->connecting)
		return PQstatus(c->conn) == CONNECTION_OK ? 0 : -1;
	if (c->learning)
		return learn_budget(c);
	r = tt_conn_poll_until(c->conn, c->connect_deadline, &c->poll);
	if (r == 0)
	{
		const char *sql = tt_budget_learn_query(c->entry->budget_node);

		if (sql != NULL)
		{
			/* the node's budget is not known yet: ask it first */
			tt_remote_query_start(&c->learn, c->conn, sql, false);
			c->learn.keep_result = true;
			c->learning = true;
			return learn_budget(c);
		}
	}
	if (r <= 0)
	{
		c->connecting = false;
		connect_ended(c);
	}
	return r;
}

/*
 * release_control
 *		A side query gave the control connection c back: it stays the
 *		control connection, idle, when reusable is true, it is idle and
 *		outside a transaction, and the budget keeps idle connections of the
 *		node now (as for any connection beyond the first: nobody waits
 *		there, the node has room, the session is within its fair share);
 *		otherwise it is closed.  Never throws.
 */
static void
release_control(TTConn *c, bool reusable)
{
	TTConnEntry *entry = c->entry;

	entry->control_lent = false;
	if (reusable && !c->connecting && c->conn != NULL &&
		tt_conn_is_idle(c->conn) &&
		tt_budget_keep_idle(entry->budget_node, 0, INT_MAX))
	{
		c->claimed = false;
		tt_budget_idle(entry->budget_node, true);
		return;
	}
	drop_conn(c);
}

/*
 * tt_conncache_release
 *		Give back a claimed connection.  It stays cached only when reusable
 *		is true and it is connected, idle and outside a transaction, and
 *		the node's budget lets it (tt_budget_keep_idle: fewer than
 *		citus.max_cached_conns_per_worker idle ones, nobody waiting for a
 *		slot there).  Never throws.
 */
void
tt_conncache_release(TTConn *c, bool reusable)
{
	if (c == NULL)
		return;
	if (c->control)
	{
		release_control(c, reusable);
		return;
	}
	if (reusable && !c->connecting && c->conn != NULL && tt_conn_is_idle(c->conn))
	{
		ListCell   *lc;
		int			idle = 0;
		int			max_idle = max_connections_per_node;

		foreach(lc, c->entry->conns)
		{
			TTConn	   *o = (TTConn *) lfirst(lc);

			if (!o->claimed && o != c && !o->control)
				idle++;
		}
		/* an idle control connection comes on top of the per-key cap */
		if (c->entry->control != NULL && !c->entry->control->claimed)
			max_idle++;
		if (tt_budget_keep_idle(c->entry->budget_node, idle, max_idle))
		{
			c->claimed = false;
			tt_budget_idle(c->entry->budget_node, true);
			return;
		}
	}
	drop_conn(c);
}

/*
 * tt_conncache_drop_idle
 *		Close every idle cached connection to budget node node (any user and
 *		database), at the request of a session waiting for a slot there.
 *		Never throws.
 */
void
tt_conncache_drop_idle(int node)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;

	if (conn_cache == NULL)
		return;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		ListCell   *lc;

		if (entry->budget_node != node)
			continue;
retry:
		foreach(lc, entry->conns)
		{
			TTConn	   *c = (TTConn *) lfirst(lc);

			if (!c->claimed)
			{
				drop_conn(c);
				goto retry;		/* the list changed under foreach */
			}
		}
	}
}

/*
 * tt_conncache_close_all
 *		Close every connection of the cache (backend exit).  Never throws.
 */
void
tt_conncache_close_all(void)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;

	if (conn_cache == NULL)
		return;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		while (entry->conns != NIL)
			drop_conn((TTConn *) linitial(entry->conns));
	}
}

/*
 * tt_conncache_abort_cleanup
 *		After the local transaction aborted: every connection still lent to a
 *		job is in an unknown state; cancel what it runs and close it.
 *		Never throws.
 */
void
tt_conncache_abort_cleanup(void)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;
	TTConn	  **claimed;
	int			n = 0;
	int			cap = 16;

	if (conn_cache == NULL)
		return;
	claimed = palloc(sizeof(TTConn *) * cap);
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		ListCell   *lc;

		foreach(lc, entry->conns)
		{
			TTConn	   *c = (TTConn *) lfirst(lc);

			if (!c->claimed)
				continue;
			/* a control connection being set up runs nothing: parked below */
			if (c->control && !entry->control_lent)
				continue;
			if (n == cap)
			{
				cap *= 2;
				claimed = repalloc(claimed, sizeof(TTConn *) * cap);
			}
			claimed[n++] = c;
		}
	}
	/* cancel what they run, all nodes at once, then close them */
	tt_conncache_cancel_release(claimed, n, false);
	pfree(claimed);
	tt_conncache_control_park();
}

/*
 * unpark_control
 *		A job waits again: the parked set-up of control connection c goes
 *		on (claimed by the cache, not idle), with a new deadline from now.
 *		Never throws.
 */
static void
unpark_control(TTConn *c)
{
	c->parked = false;
	c->claimed = true;
	tt_budget_idle(c->entry->budget_node, false);
	c->connect_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  node_connection_timeout);
}

/*
 * claim_control
 *		Lend entry's control connection to a side query, or return NULL when
 *		it has none free: connected and healthy, or still being set up
 *		within its time (it is nearer to ready than a new one).  Never
 *		throws.
 */
static TTConn *
claim_control(TTConnEntry *entry)
{
	TTConn	   *c = entry->control;

	if (c == NULL || entry->control_lent)
		return NULL;
	if (c->parked)
		unpark_control(c);
	if (c->connecting)
	{
		if (GetCurrentTimestamp() >= c->connect_deadline)
		{
			drop_conn(c);
			return NULL;
		}
		/* claimed by the cache while it is set up: the side query drives it */
		entry->control_lent = true;
		return c;
	}
	if (!conn_is_healthy(c))
	{
		drop_conn(c);
		return NULL;
	}
	entry->control_lent = true;
	c->claimed = true;
	c->reused = true;
	c->unanswered = false;
	tt_budget_idle(entry->budget_node, false);
	return c;
}

/*
 * side_query_start
 *		Start running sql (simple protocol, may hold several statements) over
 *		a connection of the same key as like that is not like itself: the
 *		key's control connection, an idle cached one or a new one.  Used to act on a node while like is
 *		busy, e.g. to pg_cancel_backend() its remote backend, which avoids
 *		libpq 15's blocking PQcancel.  The caller drives it with
 *		tt_side_query_advance() and ends it with tt_side_query_finish().
 *		No catalog access (works in the abort path); never throws but on
 *		out-of-memory.  When no connection can be had, q->done is set and
 *		q->ok is false at once.
 */
static void
side_query_start(TTSideQuery *q, TTConn *like, const char *sql, TTSlotKind kind)
{
	char	   *error = NULL;

	memset(q, 0, sizeof(*q));
	q->sql = MemoryContextStrdup(conn_cache_cxt, sql);
	tt_remote_query_start(&q->q, NULL, q->sql, false);
	if (like == NULL || like->entry == NULL || like->entry->user_name == NULL)
	{
		q->q.done = true;
		return;
	}
	q->c = claim_control(like->entry);
	if (q->c == NULL)
		q->c = claim_idle(like->entry);
	if (q->c == NULL)
		q->c = start_conn(like->entry, kind, kind != TT_SLOT_FORCE, &error);
	if (q->c == NULL)
	{
		elog(DEBUG1, "task_tracker: no side connection to %s:%d: %s",
			 like->entry->key.host, like->entry->key.port,
			 error ? error : "no slot in the node's connection budget");
		q->q.done = true;
		return;
	}
	q->q.conn = q->c->conn;
}

/*
 * tt_side_query_start
 *		side_query_start() for a cancel, a cleanup or a liveness probe: its
 *		connection counts against the node's budget but is never refused (it
 *		is short lived, and what it does frees slots or tells a dead node,
 *		which must not wait behind a saturated budget).
 */
void
tt_side_query_start(TTSideQuery *q, TTConn *like, const char *sql)
{
	side_query_start(q, like, sql, TT_SLOT_FORCE);
}


/*
 * tt_side_query_advance
 *		Move a side query forward without waiting: finish connecting, then
 *		the query itself (tt_remote_query_advance).  When it is not done
 *		afterwards, q->q.events and q->q.sock tell what to wait for.  Never
 *		throws.
 */
void
tt_side_query_advance(TTSideQuery *q)
{
	if (q->q.done)
		return;
	q->q.sock = PQsocket(q->c->conn);
	if (q->c->connecting)
	{
		int			r = tt_conncache_connect_poll(q->c);

		if (r < 0)
		{
			q->q.done = true;
			return;
		}
		if (r > 0)
		{
			q->q.events = r;
			q->q.sock = PQsocket(q->c->conn);
			return;
		}
	}
	tt_remote_query_advance(&q->q);
}

/*
 * tt_side_query_finish
 *		Give the side query's connection back: cached when the query ran to
 *		its end and the connection is idle, closed otherwise; it becomes
 *		the control connection of a key that has none.  Never throws.
 */
void
tt_side_query_finish(TTSideQuery *q)
{
	if (q->c != NULL)
	{
		TTConnEntry *entry = q->c->entry;

		/*
		 * A key without a control connection that needed a side query
		 * keeps this one as its control connection: the next cancel there
		 * needs no new backend (release_control decides whether it stays).
		 */
		if (!q->c->control && entry->control == NULL)
		{
			q->c->control = true;
			entry->control = q->c;
			entry->control_lent = true;
		}
	}
	if (q->c != NULL)
		tt_conncache_release(q->c, q->q.done && q->q.sent && !q->q.flushing);
	q->c = NULL;
	if (q->sql)
		pfree(q->sql);
	q->sql = NULL;
	q->q.done = true;
}

/* is c running a query whose backend we can name? */
static bool
conn_is_busy(TTConn *c)
{
	return c != NULL && c->conn != NULL && !c->connecting &&
		tt_conn_in_query(c->conn);
}

/*
 * cancel_many_until
 *		Ask the servers to cancel what the n connections conns[] are running
 *		(NULL entries and connections that run nothing are skipped), all at
 *		once: per node (cache key), one
 *		SELECT pg_cancel_backend(pid) FROM unnest('{...}'::int[]) AS pid
 *		with the backend pids of that node's busy connections, sent over an
 *		idle cached connection or a new one, every node in parallel in one
 *		wait that ends at deadline (a role may cancel its own backends).
 *		A node where that could not be done by then (it does not answer, or
 *		no connection could be had) gets its busy connections marked
 *		unanswered: the caller closes them rather than wait for them.
 *		Never throws but on out-of-memory; never blocks (no PQcancel); the
 *		wait is safe with interrupts held.
 */
static void
cancel_many_until(TTConn **conns, int n, TimestampTz deadline)
{
	TTConnEntry **entries;
	TTSideQuery *side;
	pgsocket   *socks;
	uint32	   *events;
	int		   *pids;
	int			nentries = 0;
	int			i,
				k;

	if (n <= 0 || conn_cache == NULL)
		return;
	entries = palloc0(sizeof(TTConnEntry *) * n);
	side = palloc0(sizeof(TTSideQuery) * n);
	socks = palloc(sizeof(pgsocket) * n);
	events = palloc(sizeof(uint32) * n);
	pids = palloc(sizeof(int) * n);

	/* one side query per node, naming all of its busy backends */
	for (i = 0; i < n; i++)
	{
		char	   *sql;
		int			npids = 0;
		bool		seen = false;

		if (!conn_is_busy(conns[i]) || conns[i]->unanswered)
			continue;
		for (k = 0; k < nentries; k++)
			if (entries[k] == conns[i]->entry)
				seen = true;
		if (seen)
			continue;

		for (k = i; k < n; k++)
		{
			if (conn_is_busy(conns[k]) && conns[k]->entry == conns[i]->entry)
				pids[npids++] = PQbackendPID(conns[k]->conn);
		}
		sql = tt_remote_cancel_sql(pids, npids);
		tt_side_query_start(&side[nentries], conns[i], sql);
		pfree(sql);
		entries[nentries++] = conns[i]->entry;
	}

	for (;;)
	{
		int			nsocks = 0;

		for (k = 0; k < nentries; k++)
		{
			tt_side_query_advance(&side[k]);
			if (side[k].q.done)
				continue;
			if (side[k].q.sock == PGINVALID_SOCKET)
				continue;
			socks[nsocks] = side[k].q.sock;
			events[nsocks++] = side[k].q.events;
		}
		if (!tt_wait_sockets_until(nsocks, socks, events, deadline, TT_WAIT_EXECUTOR))
			break;
	}

	/* where it did not work: the caller closes those connections */
	for (k = 0; k < nentries; k++)
	{
		if (!side[k].q.ok)
		{
			elog(DEBUG1, "task_tracker: could not cancel queries on %s:%d in time; closing their connections",
				 entries[k]->key.host, entries[k]->key.port);
			for (i = 0; i < n; i++)
				if (conn_is_busy(conns[i]) && conns[i]->entry == entries[k])
					conns[i]->unanswered = true;
		}
		tt_side_query_finish(&side[k]);
	}
	pfree(entries);
	pfree(side);
	pfree(socks);
	pfree(events);
	pfree(pids);
}

/*
 * tt_conncache_cancel_many
 *		cancel_many_until() with a wait of at most
 *		Min(citus.node_connection_timeout, TT_SIDE_CANCEL_TIMEOUT).  When
 *		this returns, every cancel has been delivered, or the connection is
 *		marked unanswered (c->unanswered) and is best closed; the
 *		connections stay claimed and their state is unknown until drained.
 */
void
tt_conncache_cancel_many(TTConn **conns, int n)
{
	cancel_many_until(conns, n,
					  TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  Min(node_connection_timeout,
													  TT_SIDE_CANCEL_TIMEOUT)));
}

/*
 * drain_canceled
 *		Wait for the (canceled) queries of the n claimed connections conns[]
 *		to end, all of them at once for at most timeout_ms
 *		(tt_remote_drain_until), and give back those whose query ended:
 *		kept when keep is true and their session could be reset with
 *		DISCARD ALL, closed otherwise.  Connections still connecting, broken
 *		or unanswered are closed at once.  Closing a connection only once
 *		its query has ended lets the remote backend stop that query before
 *		it notices the lost client.  Given-back entries become NULL;
 *		returns how many connections are still running their query (left
 *		in conns[]).  Never throws but on out-of-memory.
 */
static int
drain_canceled(TTConn **conns, int n, long timeout_ms, bool keep)
{
	PGconn	  **pgconns;
	int		   *index;
	TTDrainOutcome *outcome;
	int			m = 0;
	int			left;
	int			i;

	pgconns = palloc(sizeof(PGconn *) * Max(n, 1));
	index = palloc(sizeof(int) * Max(n, 1));
	outcome = palloc(sizeof(TTDrainOutcome) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		TTConn	   *c = conns[i];

		if (c == NULL)
			continue;
		if (c->connecting || c->conn == NULL || c->unanswered)
		{
			tt_conncache_release(c, false);
			conns[i] = NULL;
			continue;
		}
		pgconns[m] = c->conn;
		index[m++] = i;
	}
	left = tt_remote_drain_until(pgconns, m, keep,
								 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 timeout_ms),
								 TT_WAIT_EXECUTOR, outcome);
	for (i = 0; i < m; i++)
	{
		if (outcome[i] == TT_REMOTE_RUNNING)
			continue;
		tt_conncache_release(conns[index[i]], outcome[i] == TT_REMOTE_IDLE);
		conns[index[i]] = NULL;
	}
	pfree(pgconns);
	pfree(index);
	pfree(outcome);
	return left;
}

/*
 * tt_conncache_cancel_release
 *		Cancel the queries the n claimed connections conns[] run (NULL
 *		entries are skipped), all nodes at once (cancel_many_until), and
 *		give the connections back once their query has ended: kept (after
 *		DISCARD ALL) when keep is true and they are idle again, closed
 *		otherwise.  A cancel that reaches a backend before it has started
 *		the query is ignored by the server, so connections whose query goes
 *		on get the cancel again, up to TT_CANCEL_ROUNDS times with a growing
 *		wait; after that, or when the node did not answer the cancel in
 *		time, they are closed as they are (the remote backend stops when it
 *		notices the lost client).  Everything ends within
 *		Min(citus.node_connection_timeout, TT_SIDE_CANCEL_TIMEOUT) +
 *		TT_CANCEL_EXTRA_TIME, whatever the nodes do.  conns[] is left with
 *		NULLs.  Never throws but on out-of-memory; never blocks, and safe
 *		with interrupts held.
 */
void
tt_conncache_cancel_release(TTConn **conns, int n, bool keep)
{
	long		wait_ms = TT_CANCEL_DRAIN_MIN;
	TimestampTz deadline;
	int			round;
	int			i;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   Min(node_connection_timeout,
											   TT_SIDE_CANCEL_TIMEOUT) +
										   TT_CANCEL_EXTRA_TIME);
	for (round = 0; round < TT_CANCEL_ROUNDS; round++)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz cancel_by;
		long		left;

		cancel_by = TimestampTzPlusMilliseconds(now, Min(node_connection_timeout,
														 TT_SIDE_CANCEL_TIMEOUT));
		if (cancel_by > deadline)
			cancel_by = deadline;
		if (now >= deadline)
			break;
		cancel_many_until(conns, n, cancel_by);
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (drain_canceled(conns, n, Min(wait_ms, left), keep) == 0)
			return;
		wait_ms *= 2;
	}
	for (i = 0; i < n; i++)
	{
		if (conns[i] != NULL)
			tt_conncache_release(conns[i], false);
		conns[i] = NULL;
	}
}

/*
 * tt_conncache_control_open
 *		Make sure the key of like (a connection a job uses) has a control
 *		connection (see the file header): an idle healthy connection of the
 *		key becomes it, else one is started, as an extra connection of the
 *		node's budget (never waits; when the budget has no room the key has
 *		none and a cancel connects as it did).  Asked once per job (asker):
 *		a refused one is not asked for again and again by the same job.
 *		Starts nothing while an attempt of the session holds a connect turn
 *		(the job's own first connections go first; ask again later) or while
 *		any attempt to the node is in flight or waits for a turn
 *		(tt_budget_connect_quiet); the control attempt itself takes no turn,
 *		so it never holds one up.
 *		Never throws but on out-of-memory.
 */
void
tt_conncache_control_open(TTConn *like, uint64 asker)
{
	TTConnEntry *entry;
	ListCell   *lc;
	TTConn	   *c;
	char	   *error;

	if (like == NULL || like->entry == NULL)
		return;
	entry = like->entry;
	if (entry->control != NULL || entry->control_asker == asker ||
		entry->user_name == NULL)
		return;
	if (tt_budget_turns_held() > 0)
		return;

	/* an idle connection the job left: no new one needed */
	foreach(lc, entry->conns)
	{
		c = (TTConn *) lfirst(lc);
		if (!c->claimed && conn_is_healthy(c))
		{
			c->control = true;
			entry->control = c;
			return;
		}
	}

	/*
	 * A new one only while no attempt to the node is in flight or waits for
	 * its turn (ask again at the job's next wait): when many sessions start
	 * at once, control attempts made beside their first connections slowed
	 * those down until they timed out (64 real-time sessions of bench row
	 * 10: jobs failed with "could not connect to node: timeout expired").
	 */
	if (!tt_budget_connect_quiet(entry->budget_node))
		return;
	entry->control_asker = asker;

	/*
	 * Not paced (no connect turn): an attempt holding a turn would hold up
	 * the job's own first connections (the real-time executor starts one
	 * only while the session holds no turn), and it is made only while
	 * nobody waits for a slot on the node, once per job and key.
	 */
	c = start_conn(entry, TT_SLOT_EXTRA, false, &error);
	if (c == NULL)
	{
		elog(DEBUG1, "task_tracker: no control connection to %s:%d: %s",
			 entry->key.host, entry->key.port,
			 error ? error : "no slot free in the node's connection budget");
		return;
	}
	/* claimed by the cache itself until it is set up */
	c->control = true;
	entry->control = c;
	entry->control_lent = false;
	control_connecting = true;
}

/*
 * tt_conncache_control_pending
 *		An upper bound of the control connections being set up, whose
 *		sockets the executors' wait adds (tt_conncache_control_sockets);
 *		0 almost always, at no cost.
 */
int
tt_conncache_control_pending(void)
{
	if (!control_connecting || conn_cache == NULL)
		return 0;
	return (int) hash_get_num_entries(conn_cache);
}

/*
 * tt_conncache_control_sockets
 *		Put the sockets of the control connections being set up (at most
 *		max) into socks[] with the events to wait for, lower *timeout_ms
 *		(-1: none) to their nearest deadline, and return how many.  Never
 *		throws.
 */
int
tt_conncache_control_sockets(pgsocket *socks, uint32 *events, int max,
							 long *timeout_ms)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;
	int			n = 0;
	bool		any = false;

	if (!control_connecting || conn_cache == NULL)
		return 0;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		TTConn	   *c = entry->control;
		long		left;

		if (c == NULL || !c->connecting || entry->control_lent)
			continue;
		if (c->parked)
			unpark_control(c);
		any = true;
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
											   c->connect_deadline);
		if (*timeout_ms < 0 || left < *timeout_ms)
			*timeout_ms = left;
		if (n < max && PQsocket(c->conn) != PGINVALID_SOCKET)
		{
			socks[n] = PQsocket(c->conn);
			events[n++] = tt_poll_wait_events(c->poll);
		}
		else
			*timeout_ms = 0;
	}
	control_connecting = any;
	return n;
}

/*
 * tt_conncache_control_advance
 *		After a wait: move the control connections being set up forward.
 *		One that is ready goes idle into the cache when the budget keeps
 *		idle connections now, else it is closed; one that failed or ran out
 *		of time is closed (the key has none; a cancel connects as before).
 *		Never throws.
 */
void
tt_conncache_control_advance(void)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;

	if (!control_connecting || conn_cache == NULL)
		return;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		TTConn	   *c = entry->control;
		int			r;

		if (c == NULL || !c->connecting || entry->control_lent || c->parked)
			continue;
		r = tt_conncache_connect_poll(c);
		if (r > 0)
			continue;
		if (r < 0)
		{
			elog(DEBUG1, "task_tracker: control connection to %s:%d failed: %s",
				 entry->key.host, entry->key.port, PQerrorMessage(c->conn));
			drop_conn(c);
			continue;
		}
		if (tt_budget_keep_idle(entry->budget_node, 0, INT_MAX))
		{
			c->claimed = false;
			tt_budget_idle(entry->budget_node, true);
		}
		else
			drop_conn(c);
	}
}

/*
 * tt_conncache_control_park
 *		A job ended (tt_job_unregister, and the abort of the transaction):
 *		nobody drives a control connection still being set up until the
 *		next job waits.  So it counts as idle in
 *		the budget (a session waiting for the node has it closed, as any
 *		idle connection) and waits, parked, for the next job, which goes on
 *		with it under a new deadline (unpark_control); the worker's
 *		authentication_timeout ends it meanwhile at worst.  A job shorter
 *		than a connection set-up thus costs no new attempt per job.  While
 *		sessions wait for the node it is closed at once.  Never throws.
 */
void
tt_conncache_control_park(void)
{
	HASH_SEQ_STATUS seq;
	TTConnEntry *entry;

	if (!control_connecting || conn_cache == NULL)
		return;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		TTConn	   *c = entry->control;

		if (c == NULL || !c->connecting || entry->control_lent || c->parked)
			continue;
		if (!tt_budget_keep_idle(entry->budget_node, 0, INT_MAX))
		{
			drop_conn(c);
			continue;
		}
		connect_ended(c);
		c->parked = true;
		c->claimed = false;
		tt_budget_idle(entry->budget_node, true);
	}
}
