/*-------------------------------------------------------------------------
 *
 * task_tracker.h
 *	  Settings and declarations shared by every part of task_tracker.
 *
 * The C variables carry the names of the settings they back (Citus's
 * names, see README "Configuration").  They are set by the GUC machinery
 * only; nothing else writes them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TASK_TRACKER_H
#define TASK_TRACKER_H

/*
 * The library's version, which task_tracker.version() returns: the newest
 * version of the extension's SQL objects (sql/task_tracker--*.sql) this
 * library serves.  It serves every older one too, so a database whose
 * extension is not updated yet keeps working; a newer one is refused
 * (tt_check_sql_version).
 */
#define TASK_TRACKER_VERSION	"1.2"

/* Directory under $PGDATA holding result files and the saved task table */
#define TT_DATA_DIR				"pg_task_tracker"

/* settings (module init: src/task_tracker.c) */
extern int	max_tracked_tasks_per_node;	/* capacity of the task table */
extern int	max_tracked_tasks_per_user;	/* one user's share, -1: 3/4 of it */
extern int	max_running_tasks_per_node;	/* tasks run at once */
extern int	task_tracker_delay;		/* ms between housekeeping passes */
extern int	node_connection_timeout;	/* ms to establish a connection */
extern int	max_task_query_size;	/* bytes of query text per task */
extern int	task_max_attempts;		/* attempts before permanently_failed */
extern int	task_tracker_job_expiry;	/* s a job may go unasked for */
extern bool task_tracker_reuse_connections; /* keep sessions per user+db */
extern bool task_tracker_use_background_workers;	/* tasks in bgworkers */
extern int	task_tracker_idle_connection_timeout;	/* ms an idle session lives */
extern char *task_tracker_host;		/* where the tracker connects */
extern int	task_result_inline_size;	/* bytes: results kept in memory */
extern int	task_result_memory;		/* kB: all in-memory results together */

/* true when loaded through shared_preload_libraries */
extern bool tt_preloaded;

extern void tt_check_preloaded(void);
extern void tt_close_idle_sessions(void);	/* src/worker/tracker.c */
extern int	tt_running_limit_budget(void);	/* src/worker/tracker.c */
extern void tt_check_sql_version(void);

#endif							/* TASK_TRACKER_H */
