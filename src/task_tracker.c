/*-------------------------------------------------------------------------
 *
 * task_tracker.c
 *	  Module initialisation: _PG_init wires the common layer, the worker
 *	  side and the coordinator side together (their settings, shared
 *	  memory hooks, the tracker background worker) and installs the
 *	  ProcessUtility hook that has the tracker close its idle sessions
 *	  before a command that needs a database nobody is connected to
 *	  (DROP DATABASE, ALTER DATABASE ... RENAME, CREATE DATABASE ...
 *	  TEMPLATE).  It owns no state of its own.
 *
 *	  See docs/architecture.md, "The house": this is the only file that
 *	  may include from every folder.
 *
 * Locking
 *	  None here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "common/tt_conn_auth.h"
#include "common/tt_settings.h"
#include "coordinator/tt_connection_cache.h"
#include "coordinator/tt_coordinator.h"
#include "coordinator/tt_node_budget.h"
#include "worker/tt_shmem.h"
#include "worker/tt_tracker.h"
#include "worker/tt_worker.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

void		_PG_init(void);

static void request_shared_memory(void);
static void start_shared_memory(void);
static void run_utility_command(PlannedStmt *pstmt, const char *queryString,
								bool readOnlyTree, ProcessUtilityContext context,
								ParamListInfo params, QueryEnvironment *queryEnv,
								DestReceiver *dest, QueryCompletion *qc);

/*
 * _PG_init
 *		Define every role's settings; when preloading, also install the
 *		hooks and register the tracker.  Loaded any other way, only the
 *		settings exist and every function that needs the tracker reports
 *		that the library must be preloaded (tt_check_preloaded).
 */
void
_PG_init(void)
{
	tt_common_define_settings();
	tt_node_conninfo_define_setting();
	tt_worker_define_settings();
	tt_coordinator_define_settings();
	tt_budget_define_settings();
	tt_budget_set_cache_callbacks(tt_conncache_drop_idle, tt_conncache_close_all);
	MarkGUCPrefixReserved("citus");

	if (!process_shared_preload_libraries_in_progress)
		return;

	tt_preloaded = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shared_memory;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = start_shared_memory;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = run_utility_command;

	tt_worker_register_tracker();
}

/*
 * needs_unused_database
 *		Does the utility statement need a database nobody is connected to?
 */
static bool
needs_unused_database(Node *stmt)
{
	if (IsA(stmt, DropdbStmt))
		return true;
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		return true;
	if (IsA(stmt, CreatedbStmt))
		return true;			/* its template must be unused */
	if (IsA(stmt, AlterDatabaseStmt))
		return true;			/* SET TABLESPACE needs it unused */
	return false;
}

/*
 * run_utility_command
 *		Close the tracker's idle sessions before a command that needs a
 *		database nobody is connected to (see the file header); then run the
 *		command as usual.
 */
static void
run_utility_command(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	if (needs_unused_database(pstmt->utilityStmt))
		tt_close_idle_sessions();

	if (prev_process_utility_hook)
		prev_process_utility_hook(pstmt, queryString, readOnlyTree, context,
								  params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * request_shared_memory / start_shared_memory
 *		The shmem_request_hook and shmem_startup_hook: each role asks for,
 *		then creates or attaches to, its own shared memory.
 */
static void
request_shared_memory(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	tt_shmem_request();
	tt_coordinator_shmem_request();
	tt_budget_shmem_request();
}

static void
start_shared_memory(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	tt_shmem_init();
	tt_coordinator_shmem_init();
	tt_budget_shmem_init();
}
