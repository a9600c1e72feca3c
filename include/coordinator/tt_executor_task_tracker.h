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

/*
 * Where the cleanup of one node stands (docs/architecture.md, "Task-tracker
 * executor", has the diagram).  A phase that cannot go on waits on one
 * socket of the node.
 */
typedef enum TNCleanupPhase
{
	TC_CANCEL,					/* side query in flight: pg_cancel_backend() of
								 * c's query and cleanup_job */
	TC_SETTLE,					/* cleaned up by the side query; draining the
								 * canceled query so that c can be kept */
	TC_CONNECT,					/* c being set up (a no-op once it is) */
	TC_DRAIN,					/* draining c's canceled query before
								 * cleanup_job goes over c */
	TC_SEND,					/* cleanup_job to start over c */
	TC_READ,					/* cleanup_job in flight over c (cleanup_q) */
	TC_DONE						/* finished: cleanup_ok, or cleanup_error says
								 * why not */
} TNCleanupPhase;

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
	/* cleanup (executor_task_tracker_cleanup.c) */
	TNCleanupPhase cleanup_phase;	/* see TNCleanupPhase */
	TTSideQuery side;			/* TC_CANCEL: pg_cancel_backend() of c's query
								 * and cleanup_job over a spare connection */
	bool		clean_again;	/* TC_CANCEL: an assign_tasks may have raced
								 * that cleanup_job: send it again over c */
	TimestampTz drain_until;	/* TC_SETTLE: close c rather than drain it
								 * after this */
	bool		answered;		/* the node showed signs of life */
	bool		cleanup_ok;		/* cleanup_job succeeded, or none was needed */
	char	   *cleanup_error;	/* why it did not */
	char	   *cleanup_sql;	/* cleanup_job(job_id) */
	TTRemoteQuery cleanup_q;	/* TC_READ: cleanup_job over c */
} TTTrackerNode;

/* forget the last result of the node's protocol query */
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
