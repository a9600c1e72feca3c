/*-------------------------------------------------------------------------
 *
 * connection_cache.c
 *	  The coordinator's per-backend cache of connections to worker nodes.
 *
 * Design
 *	  Connections are keyed by (host, port, user, database): a connection
 *	  is always established as the current user (GetUserId()) to the
 *	  current database, through tt_conn_start() of src/remote.c (keyword /
 *	  value arrays, AcquireExternalFD, a notice receiver).  Several
 *	  connections may share a key: the real-time executor uses up to
 *	  citus.max_connections_per_node of them per node.
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
 *	  attempt.
 *
 * Locking
 *	  None: the cache is process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "task_tracker.h"
#include "tt_connection_cache.h"
#include "tt_coordinator.h"
#include "tt_remote.h"

#define TT_MAX_HOST_LEN 256

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
} TTConnEntry;

static HTAB *conn_cache = NULL;
static MemoryContext conn_cache_cxt = NULL;

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

/* close c and forget it; never throws */
static void
drop_conn(TTConn *c)
{
	TTConnEntry *entry = c->entry;

	tt_conn_finish(c->conn);
	c->conn = NULL;
	entry->conns = list_delete_ptr(entry->conns, c);
	pfree(c);
}

/* is an idle cached connection still good to lend? */
static bool
conn_is_healthy(TTConn *c)
{
	if (c->conn == NULL || c->connecting)
		return false;
	if (PQstatus(c->conn) != CONNECTION_OK)
		return false;
	/* notice a server that went away (terminate message or EOF) */
	if (!PQconsumeInput(c->conn))
		return false;
	if (PQstatus(c->conn) != CONNECTION_OK ||
		PQtransactionStatus(c->conn) != PQTRANS_IDLE || PQisBusy(c->conn))
		return false;
	return true;
}

/*
 * tt_conncache_claim
 *		Lend a connection to (host, port) as the current user to the current
 *		database: an idle healthy cached one, or a new one being set up (then
 *		c->connecting is true and the caller drives tt_conncache_connect_poll).
 *
 * Returns NULL with *error set when no connection could even be started (no
 * file descriptor left).  Throws only on out-of-memory.
 */
TTConn *
tt_conncache_claim(const char *host, int port, char **error)
{
	TTConnKey	key;
	TTConnEntry *entry;
	bool		found;
	ListCell   *lc;
	TTConnTarget target;
	TTConn	   *c;
	PGconn	   *conn;
	MemoryContext old;

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
		entry->conns = NIL;

	/* an idle cached connection? */
retry:
	foreach(lc, entry->conns)
	{
		c = (TTConn *) lfirst(lc);
		if (c->claimed)
			continue;
		if (!conn_is_healthy(c))
		{
			drop_conn(c);
			goto retry;			/* the list changed under foreach */
		}
		c->claimed = true;
		c->reused = true;
		return c;
	}

	/* no: start a new one */
	memset(&target, 0, sizeof(target));
	target.host = host;
	target.port = port;
	target.user = GetUserNameFromId(key.userid, false);
	target.dbname = get_database_name(MyDatabaseId);
	target.application_name = "task_tracker coordinator";
	if (target.dbname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("current database no longer exists")));

	conn = tt_conn_start(&target, error);
	if (conn == NULL)
		return NULL;

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
	entry->conns = lappend(entry->conns, c);
	MemoryContextSwitchTo(old);
	return c;
}

/*
 * tt_conncache_connect_poll
 *		Advance a connection being set up.
 *
 * Returns 0 once connected, the WL_SOCKET_* event to wait for while still
 * connecting, or -1 when the attempt failed or its wall-clock time ran out
 * (the connection then stays claimed and PQerrorMessage tells why; the
 * caller releases it as not reusable).
 */
int
tt_conncache_connect_poll(TTConn *c)
{
	if (!c->connecting)
		return PQstatus(c->conn) == CONNECTION_OK ? 0 : -1;

	if (PQstatus(c->conn) == CONNECTION_BAD)
	{
		c->connecting = false;
		return -1;
	}
	c->poll = PQconnectPoll(c->conn);
	switch (c->poll)
	{
		case PGRES_POLLING_OK:
			c->connecting = false;
			return 0;
		case PGRES_POLLING_FAILED:
			c->connecting = false;
			return -1;
		default:
			if (GetCurrentTimestamp() >= c->connect_deadline)
			{
				c->connecting = false;
				return -1;
			}
			return tt_poll_wait_events(c->poll);
	}
}

/*
 * tt_conncache_release
 *		Give back a claimed connection.  It stays cached only when reusable
 *		is true and it is connected, idle and outside a transaction, and the
 *		node does not already have max_connections_per_node idle ones.
 *		Never throws.
 */
void
tt_conncache_release(TTConn *c, bool reusable)
{
	if (c == NULL)
		return;
	c->claimed = false;
	if (reusable && !c->connecting && c->conn != NULL &&
		PQstatus(c->conn) == CONNECTION_OK &&
		PQtransactionStatus(c->conn) == PQTRANS_IDLE && !PQisBusy(c->conn))
	{
		ListCell   *lc;
		int			idle = 0;

		foreach(lc, c->entry->conns)
		{
			TTConn	   *o = (TTConn *) lfirst(lc);

			if (!o->claimed && o != c)
				idle++;
		}
		if (idle < max_connections_per_node)
			return;
	}
	drop_conn(c);
}

/*
 * tt_conncache_cancel
 *		Ask the server to cancel what c is running, if anything.  Blocks for
 *		as long as it takes to connect to the server and send the request
 *		(libpq 15 has no asynchronous cancel).  Never throws.
 */
void
tt_conncache_cancel(TTConn *c)
{
	PGcancel   *cancel;
	char		errbuf[256];

	if (c == NULL || c->conn == NULL || c->connecting ||
		PQstatus(c->conn) != CONNECTION_OK ||
		PQtransactionStatus(c->conn) != PQTRANS_ACTIVE)
		return;
	cancel = PQgetCancel(c->conn);
	if (cancel == NULL)
		return;
	if (!PQcancel(cancel, errbuf, sizeof(errbuf)))
		elog(DEBUG1, "task_tracker: could not send cancel request: %s", errbuf);
	PQfreeCancel(cancel);
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

	if (conn_cache == NULL)
		return;
	hash_seq_init(&seq, conn_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		ListCell   *lc;

	again:
		foreach(lc, entry->conns)
		{
			TTConn	   *c = (TTConn *) lfirst(lc);

			if (c->claimed)
			{
				tt_conncache_cancel(c);
				drop_conn(c);
				goto again;
			}
		}
	}
}
