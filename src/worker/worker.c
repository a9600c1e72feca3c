/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The worker side's citus.* settings and the registration of the task
 *	  tracker background worker.
 *
 *	  See docs/architecture.md, "The house", for what runs where.
 *
 * Locking
 *	  None: settings are set by the GUC machinery only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

#include "worker/tt_worker.h"

/* settings */
int			max_tracked_tasks_per_node = 1024;
int			max_tracked_tasks_per_user = -1;
int			max_running_tasks_per_node = 8;
int			task_tracker_delay = 200;
int			max_task_query_size = 1024 * 1024;
int			task_max_attempts = 3;
int			task_tracker_job_expiry = 3600;
bool		task_tracker_reuse_connections = true;
bool		task_tracker_use_background_workers = false;
int			task_tracker_idle_connection_timeout = 2000;
char	   *task_tracker_host = NULL;
int			task_result_inline_size = 16 * 1024;
int			task_result_memory = 64 * 1024;

/*
 * tt_worker_define_settings
 *		Define the worker side's citus.* settings (called from _PG_init).
 *		The capacity of the task table sizes shared memory, so it exists
 *		only when the library is preloaded.
 */
void
tt_worker_define_settings(void)
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

/*
 * tt_worker_register_tracker
 *		Register the task tracker background worker (src/worker/tracker.c);
 *		called from _PG_init while preloading.
 */
void
tt_worker_register_tracker(void)
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
