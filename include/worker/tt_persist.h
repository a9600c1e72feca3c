/*-------------------------------------------------------------------------
 *
 * tt_persist.h
 *	  Saving the task table at shutdown and restoring it at start
 *	  (src/worker/persist.c).
 *
 * Files under $PGDATA/pg_task_tracker: tasks.state (the saved table),
 * tasks.state.tmp (while it is written), tasks.state.lost (a save failed:
 * how many tasks were lost, and why; $PGDATA/pg_task_tracker.lost when the
 * area cannot take it), tasks.state.corrupt (a damaged state file, kept for
 * inspection).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_PERSIST_H
#define TT_PERSIST_H

extern void tt_persist_save(void);
extern void tt_persist_restore(void);
extern void tt_persist_discard(void);

#endif							/* TT_PERSIST_H */
