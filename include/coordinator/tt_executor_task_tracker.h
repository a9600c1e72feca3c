/*-------------------------------------------------------------------------
 *
 * tt_executor_task_tracker.h
 *	  The task-tracker executor's per-node state, shared by its two files:
 *	  executor_task_tracker.c (the job) and executor_task_tracker_cleanup.c
 *	  (the cleanup at its end).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_EXECUTOR_TASK_TRACKER_H
#define TT_EXECUTOR_TASK_TRACKER_H

#include "coordinator/tt_executor.h"

typedef enum TNPhase
{
	TN_NOCONN = 0,				/* no connection */
	TN_RETRY,					/* connection lost; reconnect at retry_at */
	TN_CONNECTING,				/* connection being set up */
	TN_SHOW,					/* TT_NODE_INFO_QUERY in flight */
	TN_RECOVER,					/* reading task_tracker.tasks after reconnecting */
	TN_READY,					/* connected, nothing in flight */
	TN_ASSIGN,					/* assign_tasks in flight */
	TN_ASSIGN_WAIT,				/* assign_tasks + the wait in flight */
	TN_WAIT,					/* wait_for_task_results / wait_for_tasks in
								 * flight */
	TN_FETCH,					/* task_result_copy / task_result in flight */
	TN_PURGE					/* cleanup_job in flight to free the table */
} TNPhase;

typedef struct TTTrackerNode
{
	int64		job_id;			/* the job's id on this node: job->job_id,
								 * or a new one when another user took that
								 * one here first (assign_failed) */
	int			id_retries;		/* new ids taken for this node */
	TTConn	   *c;				/* the node's connection, or NULL */
	TNPhase		phase;			/* see TNPhase */
	bool		flushing;		/* query not completely sent yet */
	bool		needs_recover;	/* reconnected after a loss: check tasks */
	bool		used;			/* tasks were assigned: clean up at the end */
	bool		no_pipeline;	/* do not send assign and wait together */
	int			capacity;		/* our tasks its table may hold at once */
	int			tracked;		/* our tasks in its table now (dropped ones
								 * are not) */
	int			outstanding;	/* assigned, not final yet */
	TTTask	  **batch;			/* tasks of the assign in flight */
	int			nbatch;			/* length of batch */
	int			batch_size;		/* allocated length of batch */
	TTTaskQueue fetchq;			/* succeeded tasks whose rows are to fetch */
	TTTask	   *fetching;		/* task whose rows are being fetched */
	bool		fetch_chunks;	/* ... with task_result_copy */
	PGresult   *res;			/* last result of a protocol query */
	TTRemoteError err;			/* error of the query in flight */
	TimestampTz lost_at;		/* start of the current outage, or 0 */
	TimestampTz retry_at;		/* next connection attempt */
	TimestampTz heard_at;		/* query sent or input received last */
	int			retry_delay;	/* ms before the attempt after that */
	int			nresults;		/* results of the query in flight read so far */
	bool		inline_cleaned; /* a fetch's cleanup_job dropped all of ours */
	/* cleanup */
	TTSideQuery side;			/* cancel (+ cleanup_job) over a spare connection */
	bool		side_active;	/* side is running */
	bool		side_cleanup;	/* side also runs cleanup_job */
	bool		recleanup;		/* ... but an assign may have raced it */
	bool		drain_only;		/* cleanup done; only drain c, until drain_until */
	TimestampTz drain_until;	/* give up draining c then (it gets closed) */
	bool		canceled;		/* a cancel was sent for c's query */
	bool		cleanup_sent;	/* cleanup_job sent */
	bool		cleanup_done;	/* cleanup finished (ok or not) */
	bool		cleanup_ok;		/* cleanup_job succeeded */
	bool		answered;		/* the node showed signs of life */
	char	   *cleanup_error;	/* why it did not */
	char	   *cleanup_sql;	/* cleanup_job(job_id) */
} TTTrackerNode;

static inline void
tn_clear_result(TTTrackerNode *tn)
{
	if (tn->res)
		PQclear(tn->res);
	tn->res = NULL;
}

/* src/coordinator/executor_task_tracker_cleanup.c */
extern void tt_task_tracker_cleanup(TTJob *job, bool failed);

#endif							/* TT_EXECUTOR_TASK_TRACKER_H */
