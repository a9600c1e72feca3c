/*-------------------------------------------------------------------------
 *
 * tt_worker.h
 *	  The worker side's settings, its data directory, and the registration
 *	  of the tracker background worker (src/worker/worker.c).
 *
 * The C variables carry the names of the settings they back (Citus's
 * names, see README "Configuration"); only the GUC machinery writes them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_WORKER_H
#define TT_WORKER_H

/* Directory under $PGDATA holding result files and the saved task table */
#define TT_DATA_DIR				"pg_task_tracker"

/* settings (defined in src/worker/worker.c) */
extern int	max_tracked_tasks_per_node;	/* capacity of the task table */
extern int	max_tracked_tasks_per_user;	/* one user's share, -1: 3/4 of it */
extern int	max_running_tasks_per_node;	/* tasks run at once */
extern int	task_tracker_delay;		/* ms between housekeeping passes */
extern int	max_task_query_size;	/* bytes of query text per task */
extern int	task_max_attempts;		/* attempts before permanently_failed */
extern int	task_tracker_job_expiry;	/* s a job may go unasked for */
extern bool task_tracker_reuse_connections; /* keep sessions per user+db */
extern bool task_tracker_use_background_workers;	/* tasks in bgworkers */
extern int	task_tracker_idle_connection_timeout;	/* ms an idle session lives */
extern char *task_tracker_host;		/* where the tracker connects */
extern int	task_result_inline_size;	/* bytes: results kept in memory */
extern int	task_result_memory;		/* kB: all in-memory results together */

/* called from _PG_init */
extern void tt_worker_define_settings(void);
extern void tt_worker_register_tracker(void);

#endif							/* TT_WORKER_H */
