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
 *	  tracker (src/tracker.c).  Loaded any other way, only the settings are
 *	  defined and every function that needs the tracker reports that the
 *	  library must be preloaded.
 *
 * Locking
 *	  None here; see src/shmem.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "task_tracker.h"
#include "tt_coordinator.h"
#include "tt_shmem.h"

PG_MODULE_MAGIC;

/* settings */
int			max_tracked_tasks_per_node = 1024;
int			max_running_tasks_per_node = 8;
int			task_tracker_delay = 200;
int			node_connection_timeout = 5000;
int			max_task_query_size = 1024 * 1024;
int			task_max_attempts = 3;
int			task_tracker_job_expiry = 3600;
bool		task_tracker_reuse_connections = true;
int			task_tracker_idle_connection_timeout = 2000;
char	   *task_tracker_host = NULL;
int			task_result_inline_size = 16 * 1024;
int			task_result_memory = 64 * 1024;

bool		tt_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);
PG_FUNCTION_INFO_V1(task_tracker_version);

static void tt_shmem_request(void);
static void tt_shmem_startup(void);
static void define_settings(void);
static void register_tracker(void);

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

	DefineCustomBoolVariable("citus.task_tracker_reuse_connections",
							 "Whether the tracker reuses a session for later tasks of the same user and database.",
							 "Sessions are reset with DISCARD ALL between tasks and never shared between users.",
							 &task_tracker_reuse_connections,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("citus.task_tracker_idle_connection_timeout",
							"How long the tracker keeps an idle reusable session open.",
							"Keep it under 5 s so that DROP DATABASE, which waits 5 s for other sessions, is not blocked by idle task sessions.",
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
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "task_tracker");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "tt_tracker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "task tracker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "task tracker");
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
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
 *		Error out unless the library was loaded at server start.
 */
void
tt_check_preloaded(void)
{
	if (!tt_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task_tracker must be loaded via shared_preload_libraries"),
				 errhint("Add task_tracker to shared_preload_libraries and restart the server.")));
}

Datum
task_tracker_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(TASK_TRACKER_VERSION));
}
