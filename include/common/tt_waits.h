/*-------------------------------------------------------------------------
 *
 * tt_waits.h
 *	  Every wait of task_tracker, named in one place.
 *
 * PostgreSQL 15 shows all of them as "Extension" in pg_stat_activity;
 * the distinct names document which wait is which and are ready for the
 * named custom wait events of PostgreSQL 17.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_WAITS_H
#define TT_WAITS_H

#include "utils/wait_event.h"

#define TT_WAIT_TRACKER_MAIN	PG_WAIT_EXTENSION	/* tracker: latch + sockets */
#define TT_WAIT_READY			PG_WAIT_EXTENSION	/* backend: tracker start-up */
#define TT_WAIT_TASKS			PG_WAIT_EXTENSION	/* wait_for_tasks */
#define TT_WAIT_CLEANUP			PG_WAIT_EXTENSION	/* cleanup_job */
#define TT_WAIT_EXECUTOR		PG_WAIT_EXTENSION	/* coordinator executors */
#define TT_WAIT_CLOSE_IDLE		PG_WAIT_EXTENSION	/* backend: tracker closes
													 * idle sessions (DROP
													 * DATABASE) */
#define TT_WAIT_ORPHANS			PG_WAIT_EXTENSION	/* tracker: old backends of
													 * its tasks exit */

#endif							/* TT_WAITS_H */
