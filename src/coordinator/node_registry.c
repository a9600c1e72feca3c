/*-------------------------------------------------------------------------
 *
 * node_registry.c
 *	  The registry of worker nodes on the coordinator: add_node(),
 *	  remove_node(), set_node_active(), and the lookups the executors do.
 *
 * Design
 *	  docs/architecture.md, "Node registry".
 *
 * Locking
 *	  The table is read under MVCC like any other; add_node() and
 *	  remove_node() rely on its unique constraint.  The backend-local copy
 *	  and the resolved addresses need no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "coordinator/tt_node_registry.h"

PG_FUNCTION_INFO_V1(task_tracker_add_node);
PG_FUNCTION_INFO_V1(task_tracker_remove_node);
PG_FUNCTION_INFO_V1(task_tracker_set_node_active);
PG_FUNCTION_INFO_V1(task_tracker_node_registry_changed);

/* backend-local copy of the registry */
static MemoryContext registry_cxt = NULL;	/* holds registry_nodes */
static MemoryContext registry_load_cxt = NULL;	/* a load in progress */
static TTRegisteredNode *registry_nodes = NULL;
static int	registry_count = 0;
static bool registry_valid = false; /* a complete load, not invalidated */
static bool registry_inval_seen = false;	/* invalidation during a load */
static bool registry_callback_registered = false;
static Oid	registry_relid = InvalidOid;

/* a node name is resolved again when its addresses are older than this, ms */
#define TT_ADDRESS_TTL			60000
/* addresses of one name passed to libpq at most */
#define TT_MAX_ADDRESSES		8
/* longest node name (check_node_args) plus its NUL */
#define TT_NODE_NAME_LEN		256

/* the numeric addresses of one node name */
typedef struct NodeAddress
{
	char		name[TT_NODE_NAME_LEN];	/* hash key: the node name */
	TimestampTz resolved_at;	/* when it last resolved, 0: never */
	char	   *hosts;			/* the name once per address, comma separated */
	char	   *addrs;			/* the addresses, comma separated, or NULL */
} NodeAddress;

static HTAB *node_addresses = NULL;

static Oid
get_registry_relid(void)
{
	Oid			nsp = get_namespace_oid("task_tracker", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("node_registry", nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension task_tracker is not installed in this database"),
				 errhint("Run CREATE EXTENSION task_tracker.")));
	return relid;
}

static void
registry_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == registry_relid)
	{
		registry_valid = false;
		registry_inval_seen = true;
	}
}

/*
 * registry_load
 *		(Re)load the backend-local copy of the registry if it is stale.
 *
 * The new copy is built in registry_load_cxt and replaces the old one only
 * when the read succeeded; an error or a cancel during the read (a lock
 * wait on the table) throws with the copy still invalid, so the next call
 * reads again.  A copy during whose read an invalidation arrived is used
 * by this call but not marked valid.
 */
static void
registry_load(void)
{
	uint64		i;
	MemoryContext old;
	MemoryContext swap;
	TTRegisteredNode *nodes;
	int			count;

	if (!registry_callback_registered)
	{
		CacheRegisterRelcacheCallback(registry_invalidate, (Datum) 0);
		registry_callback_registered = true;
	}
	if (registry_valid)
		return;

	registry_relid = get_registry_relid();
	if (registry_cxt == NULL)
	{
		registry_cxt = AllocSetContextCreate(TopMemoryContext,
											 "task_tracker node registry",
											 ALLOCSET_SMALL_SIZES);
		registry_load_cxt = AllocSetContextCreate(TopMemoryContext,
												  "task_tracker node registry",
												  ALLOCSET_SMALL_SIZES);
	}
	MemoryContextReset(registry_load_cxt);
	registry_inval_seen = false;

	SPI_connect();
	if (SPI_execute("SELECT node_id, node_name, node_port, is_active "
					"FROM task_tracker.node_registry ORDER BY node_id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read task_tracker.node_registry");

	old = MemoryContextSwitchTo(registry_load_cxt);
	count = (int) SPI_processed;
	nodes = palloc0(sizeof(TTRegisteredNode) * Max(count, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		nodes[i].node_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		nodes[i].node_name = SPI_getvalue(tup, desc, 2);
		nodes[i].node_port = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		nodes[i].is_active = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	}
	MemoryContextSwitchTo(old);
	SPI_finish();

	/* complete: it replaces the old copy */
	swap = registry_cxt;
	registry_cxt = registry_load_cxt;
	registry_load_cxt = swap;
	MemoryContextReset(registry_load_cxt);
	registry_nodes = nodes;
	registry_count = count;
	registry_valid = !registry_inval_seen;
}

/*
 * tt_registry_find
 *		The registered node (node_name, node_port), or NULL.  The result
 *		stays valid until the next invalidation is processed.
 */
const TTRegisteredNode *
tt_registry_find(const char *node_name, int node_port)
{
	int			i;

	registry_load();
	for (i = 0; i < registry_count; i++)
	{
		if (registry_nodes[i].node_port == node_port &&
			strcmp(registry_nodes[i].node_name, node_name) == 0)
			return &registry_nodes[i];
	}
	return NULL;
}

/*
 * tt_registry_active_nodes
 *		A list of palloc'd copies of the active nodes, ordered by name, port.
 */
List *
tt_registry_active_nodes(void)
{
	List	   *result = NIL;
	int			i;

	registry_load();
	for (i = 0; i < registry_count; i++)
	{
		TTRegisteredNode *n;

		if (!registry_nodes[i].is_active)
			continue;
		n = palloc(sizeof(TTRegisteredNode));
		*n = registry_nodes[i];
		n->node_name = pstrdup(n->node_name);
		result = lappend(result, n);
	}
	return result;
}

/*
 * tt_node_resolve
 *		Resolve the node name host (for port) to its numeric addresses,
 *		unless that was done less than TT_ADDRESS_TTL ago, and remember
 *		them for tt_node_address.  Socket directories (an absolute path, or
 *		'@' for an abstract socket) and names with a comma (already a libpq
 *		host list) are left alone.
 *
 *		May block in getaddrinfo(): call it where a wait without interrupts
 *		is acceptable (before a job starts), never with interrupts held.  A
 *		name that has never resolved is left to libpq (which will try and
 *		report why); one that resolved before keeps its last addresses and
 *		is tried again at the next call.  Throws only on out-of-memory.
 */
void
tt_node_resolve(const char *host, int port)
{
	NodeAddress *entry;
	bool		found;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	char		portstr[16];
	StringInfoData hosts;
	StringInfoData addrs;
	int			naddrs = 0;
	char		seen[TT_MAX_ADDRESSES][NI_MAXHOST];
	TimestampTz now = GetCurrentTimestamp();

	if (host[0] == '/' || host[0] == '@' || strchr(host, ',') != NULL ||
		strlen(host) >= TT_NODE_NAME_LEN)
		return;
	if (node_addresses == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = TT_NODE_NAME_LEN;
		ctl.entrysize = sizeof(NodeAddress);
		ctl.hcxt = TopMemoryContext;
		node_addresses = hash_create("task_tracker node addresses", 16, &ctl,
									 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	entry = hash_search(node_addresses, host, HASH_ENTER, &found);
	if (!found)
	{
		entry->resolved_at = 0;
		entry->hosts = NULL;
		entry->addrs = NULL;
	}
	else if (entry->addrs != NULL &&
			 !TimestampDifferenceExceeds(entry->resolved_at, now, TT_ADDRESS_TTL))
		return;

	/* the lookup libpq would do: any family, stream sockets */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%d", port);
	initStringInfo(&hosts);
	initStringInfo(&addrs);
	if (getaddrinfo(host, portstr, &hints, &res) == 0)
	{
		for (ai = res; ai != NULL && naddrs < TT_MAX_ADDRESSES; ai = ai->ai_next)
		{
			char	   *buf = seen[naddrs];
			bool		dup = false;
			int			k;

			if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
				getnameinfo(ai->ai_addr, ai->ai_addrlen, buf, NI_MAXHOST,
							NULL, 0, NI_NUMERICHOST) != 0 ||
				strchr(buf, ',') != NULL)
				continue;
			/* the same address may come once per protocol */
			for (k = 0; k < naddrs; k++)
				dup = dup || strcmp(seen[k], buf) == 0;
			if (dup)
				continue;
			appendStringInfo(&hosts, "%s%s", naddrs > 0 ? "," : "", host);
			appendStringInfo(&addrs, "%s%s", naddrs > 0 ? "," : "", buf);
			naddrs++;
		}
		freeaddrinfo(res);
	}

	/*
	 * Keep the addresses found last time when the name does not resolve now
	 * (a name server down): stale ones are better than a lookup in libpq.
	 * The next job tries again.
	 */
	if (naddrs > 0)
	{
		if (entry->hosts)
			pfree(entry->hosts);
		if (entry->addrs)
			pfree(entry->addrs);
		entry->hosts = MemoryContextStrdup(TopMemoryContext, hosts.data);
		entry->addrs = MemoryContextStrdup(TopMemoryContext, addrs.data);
		entry->resolved_at = now;
	}
	pfree(hosts.data);
	pfree(addrs.data);
}

/*
 * tt_node_address
 *		The addresses tt_node_resolve found for host: *hosts is host once per
 *		address and *addrs the addresses (libpq's host and hostaddr lists,
 *		tried in that order, as libpq tries what getaddrinfo returns).
 *		Returns false, leaving both alone, when none are known.  Only looks
 *		up what is remembered: never blocks, never throws, does no catalog
 *		access; the strings stay valid until the next tt_node_resolve.
 */
bool
tt_node_address(const char *host, const char **hosts, const char **addrs)
{
	NodeAddress *entry;

	if (node_addresses == NULL || strlen(host) >= TT_NODE_NAME_LEN)
		return false;
	entry = hash_search(node_addresses, host, HASH_FIND, NULL);
	if (entry == NULL || entry->addrs == NULL)
		return false;
	*hosts = entry->hosts;
	*addrs = entry->addrs;
	return true;
}

/*
 * tt_parse_placement
 *		Split 'host:port' (or '[ipv6]:port') into its parts.  Errors out on
 *		anything else.
 */
void
tt_parse_placement(const char *placement, char **host, int *port)
{
	const char *colon = strrchr(placement, ':');
	char	   *end;
	long		p;
	int			hostlen;
	const char *h = placement;

	if (colon == NULL || colon == placement || colon[1] == '\0')
		goto bad;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || p < 1 || p > 65535)
		goto bad;
	hostlen = colon - placement;
	if (placement[0] == '[' && colon[-1] == ']')
	{
		h = placement + 1;
		hostlen -= 2;
		if (hostlen <= 0)
			goto bad;
	}
	*host = pnstrdup(h, hostlen);
	*port = (int) p;
	return;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid placement \"%s\"", placement),
			 errdetail("A placement is written 'host:port', with the host and port of a registered node.")));
}

static void
require_superuser(const char *fname)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", fname),
				 errdetail("Only superusers may change the node registry.")));
}

static void
check_node_args(FunctionCallInfo fcinfo, char **name, int *port)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("node_name and node_port must not be NULL")));
	*name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	*port = PG_GETARG_INT32(1);
	if ((*name)[0] == '\0' || strlen(*name) >= 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("node_name must be between 1 and 255 bytes long")));
	if (*port < 1 || *port > 65535)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("node_port %d is out of range", *port),
				 errdetail("A port is between 1 and 65535.")));
}

/*
 * task_tracker_add_node
 *		SQL: add_node(node_name text, node_port integer) RETURNS integer
 *		Register a worker node (superuser); returns its node_id.
 */
Datum
task_tracker_add_node(PG_FUNCTION_ARGS)
{
	char	   *name;
	int			port;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		args[2];
	int			node_id;
	bool		isnull;

	require_superuser("add_node");
	tt_check_sql_version();
	check_node_args(fcinfo, &name, &port);
	args[0] = CStringGetTextDatum(name);
	args[1] = Int32GetDatum(port);

	SPI_connect();
	if (SPI_execute_with_args("SELECT 1 FROM task_tracker.node_registry "
							  "WHERE node_name = $1 AND node_port = $2",
							  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read task_tracker.node_registry");
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("node %s:%d is already registered", name, port)));
	if (SPI_execute_with_args("INSERT INTO task_tracker.node_registry (node_name, node_port) "
							  "VALUES ($1, $2) RETURNING node_id",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not insert into task_tracker.node_registry");
	node_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	SPI_finish();
	PG_RETURN_INT32(node_id);
}

/*
 * change_registered_node
 *		Run sql (DELETE or UPDATE of task_tracker.node_registry WHERE
 *		node_name = $1 AND node_port = $2) for the node given by fcinfo's
 *		first two arguments; when arg3name is given, fcinfo's third argument
 *		(of type arg3type, not NULL) is $3.  "Not registered" (42704) when
 *		no row matched.  Superuser only.
 */
static void
change_registered_node(FunctionCallInfo fcinfo, const char *what, const char *sql,
					   int expected, const char *arg3name, Oid arg3type)
{
	char	   *name;
	int			port;
	Oid			argtypes[3] = {TEXTOID, INT4OID, arg3type};
	Datum		args[3];

	require_superuser(what);
	tt_check_sql_version();
	check_node_args(fcinfo, &name, &port);
	args[0] = CStringGetTextDatum(name);
	args[1] = Int32GetDatum(port);
	if (arg3name)
	{
		if (PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be NULL", arg3name)));
		args[2] = PG_GETARG_DATUM(2);
	}

	SPI_connect();
	if (SPI_execute_with_args(sql, arg3name ? 3 : 2, argtypes, args, NULL, false, 0) != expected)
		elog(ERROR, "could not change task_tracker.node_registry");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("node %s:%d is not registered", name, port)));
	SPI_finish();
}

/*
 * task_tracker_remove_node
 *		SQL: remove_node(node_name text, node_port integer) RETURNS void
 *		Unregister a worker node (superuser).
 */
Datum
task_tracker_remove_node(PG_FUNCTION_ARGS)
{
	change_registered_node(fcinfo, "remove_node",
						   "DELETE FROM task_tracker.node_registry "
						   "WHERE node_name = $1 AND node_port = $2",
						   SPI_OK_DELETE, NULL, InvalidOid);
	PG_RETURN_VOID();
}

/*
 * task_tracker_set_node_active
 *		SQL: set_node_active(node_name text, node_port integer, is_active
 *		boolean) RETURNS void.  An inactive node stays registered, but jobs
 *		do not use it (a task runs on its other placements) and
 *		run_on_workers() skips it (superuser).
 */
Datum
task_tracker_set_node_active(PG_FUNCTION_ARGS)
{
	change_registered_node(fcinfo, "set_node_active",
						   "UPDATE task_tracker.node_registry SET is_active = $3 "
						   "WHERE node_name = $1 AND node_port = $2",
						   SPI_OK_UPDATE, "is_active", BOOLOID);
	PG_RETURN_VOID();
}

/*
 * task_tracker_node_registry_changed
 *		Statement trigger on task_tracker.node_registry: every backend drops
 *		its copy of the registry when the change commits.
 */
Datum
task_tracker_node_registry_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "task_tracker_node_registry_changed: not called by trigger manager");
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	PG_RETURN_POINTER(NULL);
}
