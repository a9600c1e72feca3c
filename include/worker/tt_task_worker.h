/*-------------------------------------------------------------------------
 *
 * tt_task_worker.h
 *	  Task workers: the dynamic background workers that run tasks when
 *	  citus.task_tracker_use_background_workers is on (src/worker/task_worker.c).
 *	  The tracker starts one per task attempt and reads what it reports as
 *	  a stream of events; see docs/architecture.md, "Task workers".
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_TASK_WORKER_H
#define TT_TASK_WORKER_H

#include "common/tt_remote.h"
#include "worker/tt_shmem.h"

/* what the tracker asks a task worker to run */
typedef struct TTTaskWorkerSpec
{
	TTTaskKey	key;			/* the task */
	Oid			owner;			/* role to run as (by OID) */
	Oid			dbid;			/* database to attach to (by OID) */
	int			encoding;		/* that database's encoding */
	int32		attempt;		/* the task's attempt number ... */
	TimestampTz started_at;		/* ... and when it was picked: the worker
								 * runs only this attempt (claim_task) */
	const char *sql;			/* statement to run */
	bool		copy_wrap;		/* sql is the tracker's COPY (...) TO STDOUT */
} TTTaskWorkerSpec;

typedef struct TTTaskWorker TTTaskWorker;	/* opaque, tracker-private */

/* what a task worker reported, one event at a time */
typedef enum TTWorkerEventKind
{
	TT_WEV_NONE,				/* nothing more for now */
	TT_WEV_ROWS,				/* a plain statement's rows begin: ncols */
	TT_WEV_COPY,				/* COPY TO STDOUT data begins: ncols */
	TT_WEV_LINE,				/* one row as a COPY text line: data, len */
	TT_WEV_COPY_DONE,			/* the COPY data ended */
	TT_WEV_COMMAND,				/* the statement committed: rows */
	TT_WEV_ERROR,				/* the worker failed: error, startup */
	TT_WEV_DONE,				/* the worker is done: encoding */
	TT_WEV_GONE					/* the worker exited (or never started) */
} TTWorkerEventKind;

typedef struct TTWorkerEvent
{
	TTWorkerEventKind kind;
	int			ncols;			/* ROWS, COPY */
	const char *data;			/* LINE: valid until the next call */
	int			len;			/* LINE */
	int64		rows;			/* COMMAND: as PQcmdTuples would read it */
	int			encoding;		/* DONE: client_encoding at the end */
	TTRemoteError error;		/* ERROR */
	bool		startup;		/* ERROR: raised before the worker was
								 * logged in (the login rules refused it) */
} TTWorkerEvent;

extern TTTaskWorker *tt_task_worker_start(const TTTaskWorkerSpec *spec,
										  bool *no_slot);
extern void tt_task_worker_next(TTTaskWorker *w, TTWorkerEvent *ev);
extern bool tt_task_worker_signal(TTTaskWorker *w, int sig);
extern void tt_task_worker_release(TTTaskWorker *w);

PGDLLEXPORT void tt_task_worker_main(Datum main_arg);

#endif							/* TT_TASK_WORKER_H */
