/*-------------------------------------------------------------------------
 *
 * task_tracker.c
 *	  Module initialisation: settings, shared memory hooks and the
 *	  registration of the task tracker background worker.
 *
 * Design
 *	  When loaded through shared_preload_libraries, _PG_init defines the
 *	  citus.* settings (Citus's names, so existing configuration carries
 *	  over), reserves the "citus" prefix, asks for shared memory through
 *	  shmem_request_hook, and registers one background worker, the task
 *	  tracker (src/worker/tracker.c).  Loaded any other way, only the settings are
 *	  defined and every function that needs the tracker reports that the
 *	  library must be preloaded.
 *
 *	  A ProcessUtility hook serves the commands that need a database
 *	  nobody is connected to (DROP DATABASE, ALTER DATABASE ... RENAME,
 *	  CREATE DATABASE ... TEMPLATE): before they run, it asks the tracker
 *	  to close its idle sessions (tt_close_idle_sessions), so a session
 *	  kept for reuse never makes them fail.
 *
 *	  Versions: the library serves the extension's SQL objects up to its
 *	  own version (TASK_TRACKER_VERSION, what task_tracker.version()
 *	  returns); the installed version is pg_extension.extversion.  Older
 *	  SQL objects keep working with a newer library (ALTER EXTENSION
 *	  task_tracker UPDATE not run yet); newer ones than the library serves
 *	  (updated while the server still runs the old library) make every
 *	  function that checks preloading fail with a clear error.
 *
 * Locking
 *	  None here; see src/worker/shmem.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/sinval.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "task_tracker.h"
#include "coordinator/tt_coordinator.h"
#include "worker/tt_shmem.h"

PG_MODULE_MAGIC;

/* settings */
int			max_tracked_tasks_per_node = 1024;
int			max_tracked_tasks_per_user = -1;
int			max_running_tasks_per_node = 8;
int			task_tracker_delay = 200;
int			node_connection_timeout = 5000;
int			max_task_query_size = 1024 * 1024;
int			task_max_attempts = 3;
int			task_tracker_job_expiry = 3600;
bool		task_tracker_reuse_connections = true;
bool		task_tracker_use_background_workers = false;
int			task_tracker_idle_connection_timeout = 2000;
char	   *task_tracker_host = NULL;
int			task_result_inline_size = 16 * 1024;
int			task_result_memory = 64 * 1024;

bool		tt_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

void		_PG_init(void);
PG_FUNCTION_INFO_V1(task_tracker_version);

static void tt_shmem_request(void);
static void tt_shmem_startup(void);
static void define_settings(void);
static void register_tracker(void);
static void tt_process_utility(PlannedStmt *pstmt, const char *queryString,
							   bool readOnlyTree, ProcessUtilityContext context,
							   ParamListInfo params, QueryEnvironment *queryEnv,
							   DestReceiver *dest, QueryCompletion *qc);

void
_PG_init(void)
{
	define_settings();
	tt_coordinator_define_settings();
	MarkGUCPrefixReserved("citus");

	if (!process_shared_preload_libraries_in_progress)
		return;

	tt_preloaded = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = tt_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = tt_shmem_startup;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = tt_process_utility;

	register_tracker();
}

static void
define_settings(void)
{
	/* a PGC_POSTMASTER setting can only be created while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("citus.max_tracked_tasks_per_node",
								"Capacity of the task tracker's task table.",
								"Each tracked task takes a fixed-size entry plus the length of its query text.",
								&max_tracked_tasks_per_node,
								1024, 8, 1000000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	DefineCustomIntVariable("citus.max_tracked_tasks_per_user",
							"Tasks one user may have in the task tracker's table.",
							"-1 means three quarters of citus.max_tracked_tasks_per_node. Superusers are held to the node's capacity only.",
							&max_tracked_tasks_per_user,
							-1, -1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.max_running_tasks_per_node",
							"Number of tasks the task tracker runs at once.",
							NULL,
							&max_running_tasks_per_node,
							8, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_tracker_delay",
							"Longest wait between the tracker's housekeeping passes while it has work.",
							"It never delays a task; a tracker without tasks or connections waits with no timeout.",
							&task_tracker_delay,
							200, 1, 100000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.node_connection_timeout",
							"Wall-clock limit on establishing a connection.",
							NULL,
							&node_connection_timeout,
							5000, 10, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.max_task_query_size",
							"Longest query text a task may have, in bytes.",
							NULL,
							&max_task_query_size,
							1024 * 1024, 64, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_max_attempts",
							"Attempts the tracker makes at a task before it is permanently_failed.",
							NULL,
							&task_max_attempts,
							3, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_tracker_job_expiry",
							"Time after which a job nobody has asked about is cleaned up by the tracker.",
							"Zero disables expiry.",
							&task_tracker_job_expiry,
							3600, 0, INT_MAX / 1000,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	/* a PGC_POSTMASTER setting can only be created while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomBoolVariable("citus.task_tracker_use_background_workers",
								 "Whether the tracker runs each task in a background worker attached as the task's owner.",
								 "Off: each task runs over a libpq session logged in as its owner (needs pg_hba.conf and credentials). "
								 "On: a dynamic background worker per running task, no authentication; size max_worker_processes for it.",
								 &task_tracker_use_background_workers,
								 false,
								 PGC_POSTMASTER, 0,
								 NULL, NULL, NULL);

	DefineCustomBoolVariable("citus.task_tracker_reuse_connections",
							 "Whether the tracker reuses a session for later tasks of the same user and database.",
							 "Sessions are reset with DISCARD ALL between tasks and never shared between users.",
							 &task_tracker_reuse_connections,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_tracker_idle_connection_timeout",
							"How long the tracker keeps an idle reusable session open.",
							"DROP DATABASE has the tracker close its idle sessions first, so any value works.",
							&task_tracker_idle_connection_timeout,
							2000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_result_inline_size",
							"Largest task result the tracker keeps in shared memory instead of a file.",
							"Results up to this size never touch the disk; larger ones go to a result file.",
							&task_result_inline_size,
							16 * 1024, 0, 64 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_result_memory",
							"Shared memory all in-memory task results may take together.",
							"Beyond it, results go to files whatever their size.",
							&task_result_memory,
							64 * 1024, 0, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("citus.task_tracker_host",
							   "Host or socket directory the tracker connects to to run tasks.",
							   "Empty means the first of unix_socket_directories, or localhost.",
							   &task_tracker_host,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
}

static void
register_tracker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	/* a database connection (to none): see tt_tracker_main */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "task_tracker");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tt_tracker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "task tracker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "task tracker");
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
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
 * tt_process_utility
 *		Close the tracker's idle sessions before a command that needs a
 *		database nobody is connected to (see the file header); then run the
 *		command as usual.
 */
static void
tt_process_utility(PlannedStmt *pstmt, const char *queryString,
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

static void
tt_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	tt_shmem_request_space();
	tt_coordinator_shmem_request();
}

static void
tt_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	tt_shmem_init();
	tt_coordinator_shmem_init();
}

/*
 * tt_check_preloaded
 *		Error out unless the library was loaded at server start, or when the
 *		installed SQL objects are newer than it serves.
 */
void
tt_check_preloaded(void)
{
	if (!tt_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task_tracker must be loaded via shared_preload_libraries"),
				 errhint("Add task_tracker to shared_preload_libraries and restart the server.")));
	tt_check_sql_version();
}

/*
 * version_number
 *		"major.minor" as major * 1000 + minor; -1 when it is not that.
 */
static int
version_number(const char *version)
{
	char	   *end;
	long		major;
	long		minor;

	major = strtol(version, &end, 10);
	if (end == version || *end != '.' || major < 0 || major > 1000)
		return -1;
	version = end + 1;
	minor = strtol(version, &end, 10);
	if (end == version || *end != '\0' || minor < 0 || minor >= 1000)
		return -1;
	return major * 1000 + minor;
}

/*
 * installed_version
 *		The version of task_tracker installed in the current database
 *		(palloc'd), or NULL when it is not installed.
 */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("task_tracker"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * tt_check_sql_version
 *		Error out when the extension installed in the current database is
 *		newer than this library serves: ALTER EXTENSION task_tracker UPDATE
 *		ran after a package update while the server still runs the library
 *		it loaded at start.  An older installed version is fine.
 *
 *		pg_extension is read once per backend and database, and again after
 *		this backend processed any catalog invalidation (an update of the
 *		extension always changes catalogs: its script creates or replaces
 *		objects), so the check costs nothing in the steady state.
 */
void
tt_check_sql_version(void)
{
	static bool checked = false;
	static Oid	checked_db = InvalidOid;
	static uint64 checked_at = 0;	/* SharedInvalidMessageCounter then */
	uint64		counter = SharedInvalidMessageCounter;
	char	   *installed;

	if (checked && checked_db == MyDatabaseId && checked_at == counter)
		return;
	if (!IsTransactionState() || !OidIsValid(MyDatabaseId))
		return;
	installed = installed_version();
	if (installed != NULL)
	{
		int			n = version_number(installed);

		if (n < 0 || n > version_number(TASK_TRACKER_VERSION))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension task_tracker version %s is installed, but the loaded library serves versions up to %s",
							installed, TASK_TRACKER_VERSION),
					 errdetail("The extension was updated after the server loaded its library."),
					 errhint("Restart the server to load the library of version %s; if it is not installed, install the task_tracker package of that version.",
							 installed)));
		pfree(installed);
	}
	checked = true;
	checked_db = MyDatabaseId;
	checked_at = counter;
}

/*
 * task_tracker.version()
 *		The library's version: the newest version of the extension's SQL
 *		objects it serves (see above).  It never checks the installed
 *		version, so it answers even when that is newer.
 */
Datum
task_tracker_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(TASK_TRACKER_VERSION));
}
