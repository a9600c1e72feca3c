/*-------------------------------------------------------------------------
 *
 * tt_tracker.h
 *	  What the tracker background worker (src/worker/tracker.c) offers to
 *	  other processes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_TRACKER_H
#define TT_TRACKER_H

/* ask the tracker to close its idle sessions, and wait (DROP DATABASE) */
extern void tt_close_idle_sessions(void);

/* the running limit the tracker's file descriptors allow */
extern int	tt_running_limit_budget(void);

#endif							/* TT_TRACKER_H */
