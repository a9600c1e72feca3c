/*-------------------------------------------------------------------------
 *
 * tt_executor.h
 *	  What the coordinator's two executors share: a job, its tasks and the
 *	  nodes they are placed on, rows into the result, failover, and the
 *	  cleanup that runs on error, cancel and backend exit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_EXECUTOR_H
#define TT_EXECUTOR_H

#include "access/tupdesc.h"
#include "funcapi.h"
#include "libpq-fe.h"
#include "storage/latch.h"
#include "utils/tuplestore.h"

#include "coordinator/tt_connection_cache.h"
#include "coordinator/tt_coordinator.h"
#include "common/tt_remote.h"

typedef enum TTTaskState
{
	TT_TASK_PENDING = 0,		/* in its current node's queue */
	TT_TASK_RUNNING,			/* sent / assigned to its current node */
	TT_TASK_SUCCEEDED,			/* task-tracker: succeeded, rows not fetched */
	TT_TASK_FETCHING,			/* task-tracker: rows being fetched */
	TT_TASK_DONE				/* all its rows are in the result */
} TTTaskState;

typedef struct TTTask
{
	int			task_id;		/* 1..ntasks, the row number in the task list */
	char	   *query;			/* the task's SQL */
	int			nplacements;	/* length of placements[] */
	int		   *placements;		/* indexes into job->nodes, by preference */
	int			cur;			/* current placement (index into placements) */
	TTTaskState state;			/* see TTTaskState */
	int64		rows;			/* rows of this task already in the result */
	bool		retried_fresh;	/* retried once after a stale cached connection */
	bool		queued_fetch;	/* task-tracker: in its node's fetch queue */
	bool		fetch_tail;		/* task-tracker: its fetch query carries a
								 * second statement, whose rows are not the
								 * task's (see tt_job_drain) */
	bool		rows_ended;		/* ... and the task's own rows have ended */
	bool		tail_failed;	/* ... and that second statement failed */
	bool		use_copy;		/* its query in flight is a COPY ... TO STDOUT
								 * whose data rows are the task's rows */
	bool		copy_chunks;	/* its query in flight returns the task's rows
								 * as one-column rows of COPY text lines
								 * (task-tracker: task_result_copy) */
	bool		copying;		/* ... and its COPY data is being read */
	bool		no_copy;		/* real-time: never fetch it with COPY */
	bool		copy_checked;	/* real-time: copy_sql was decided */
	char	   *copy_sql;		/* real-time: COPY form of query, or NULL */
	bool		has_error;		/* error below is set */
	TTRemoteError error;		/* last failure at a placement */
	int			error_node;		/* node of that failure */
} TTTask;

/* a FIFO of tasks */
typedef struct TTTaskQueue
{
	TTTask	  **items;			/* ring buffer */
	int			head;			/* index of the first item */
	int			len;			/* number of items */
	int			cap;			/* allocated length of items */
} TTTaskQueue;

struct TTRtConn;
struct TTTrackerNode;

typedef struct TTNode
{
	int			index;			/* position in job->nodes */
	char	   *host;			/* node name as registered */
	int			port;			/* node port */
	char	   *name;			/* "host:port", for messages */
	bool		down;			/* unreachable: no more tasks go here */
	TTRemoteError down_error;	/* why it is down */
	TTTaskQueue pending;		/* tasks waiting to be sent here */
	struct TTRtConn *rt;		/* real-time: connection slots */
	int			nrt;			/* real-time: length of rt[] */
	struct TTTrackerNode *tn;	/* task-tracker: per-node state */
	TimestampTz heard_at;		/* real-time: last input from its busy
								 * connections (or last task started) */
	bool		probing;		/* real-time: liveness probe running */
	TTSideQuery probe;			/* real-time: ... its SELECT 1 */
	TimestampTz probe_deadline; /* real-time: ... dead if not done by then */
	TimestampTz connect_after;	/* no new connection before this (backoff
								 * after a refused or slow one) */
	int			backoff_ms;		/* ... the last backoff */
	TimestampTz extra_after;	/* real-time: slow start: no extra
								 * connection before this */
	TimestampTz refused_since;	/* first refusal or timeout while the job had
								 * no connection there, 0 if none
								 * (tt_connect_retry) */
	bool		auth_failed;	/* a connection attempt failed to
								 * authenticate: no use trying again */
} TTNode;

typedef struct TTJob TTJob;

typedef struct TTJob
{
	int64		job_id;			/* unique job id (src/coordinator/coordinator.c) */
	int			slot;			/* progress table slot, -1 if none */
	TTExecutorType executor;	/* which executor runs it */
	MemoryContext cxt;			/* everything of the job but the result */
	MemoryContext rowcxt;		/* reset per converted row batch */
	int			ntasks;			/* length of tasks[] */
	TTTask	   *tasks;			/* the tasks */
	int			nnodes;			/* length of nodes[] */
	TTNode	   *nodes;			/* distinct nodes the tasks are placed on */
	int			tasks_done;		/* tasks whose rows are all in the result */
	int			tasks_failed;	/* failed attempts (placements given up) */
	Tuplestorestate *tupstore;	/* the result */
	TupleDesc	tupdesc;		/* the result's columns */
	AttInMetadata *attinmeta;	/* input functions of the columns */
	char	  **values;			/* natts text values of the row at hand */
	Datum	   *datums;			/* natts converted values of that row */
	bool	   *nulls;			/* natts null flags of that row */
	PGresult   *cur_res;		/* result being converted (cleared on error) */
	char	   *cur_copy;		/* COPY row being converted (freed on error) */
	char	   *coldefs;		/* "c1 type, c2 type" for task_result */
	char	   *user_name;		/* who runs the job, for messages */
	int		   *budget_nodes;	/* budget index of each of nodes[] */
	bool		reserved;		/* holds a slot on each (tt_job_reserve) */
	bool		cleaned;		/* cleanup already done */
	void		(*cleanup) (TTJob *job, bool failed);	/* executor's cleanup */
} TTJob;

/* results of tt_job_drain */
typedef enum TTDrainResult
{
	TT_DRAIN_BUSY = 0,			/* more input needed */
	TT_DRAIN_DONE,				/* the query completed */
	TT_DRAIN_SQL_ERROR,			/* it failed; the connection is fine */
	TT_DRAIN_CONN_ERROR			/* the connection broke */
} TTDrainResult;

/* src/coordinator/executor.c */
extern void tt_queue_push(TTTaskQueue *q, TTTask *task);
extern void tt_queue_push_front(TTTaskQueue *q, TTTask *task);
extern TTTask *tt_queue_pop(TTTaskQueue *q);
extern void tt_job_register(TTJob *job);
extern void tt_job_unregister(TTJob *job);
extern void tt_job_reserve(TTJob *job);
extern void tt_job_progress(TTJob *job, TTJobState state);
extern void tt_task_failed_at_placement(TTJob *job, TTTask *task,
										const TTRemoteError *err);
extern void tt_node_set_down(TTJob *job, TTNode *node, const TTRemoteError *err);
extern bool tt_connect_failure(TTNode *node, TTConn *c, TTRemoteError *err);
extern void tt_connect_back_off(TTNode *node);
extern bool tt_connect_retry(TTNode *node);
extern void tt_connect_succeeded(TTNode *node);
extern void tt_task_done(TTJob *job, TTTask *task);
extern void tt_raise_task_error(TTJob *job, TTTask *task) pg_attribute_noreturn();
extern void tt_job_store_copy_line(TTJob *job, TTTask *task, char *line, int len);
extern void tt_job_store_copy_text(TTJob *job, TTTask *task, char *data, int len);
extern TTDrainResult tt_job_drain(TTJob *job, PGconn *conn, TTTask *task,
								  bool store_rows, TTRemoteError *err);
extern char *tt_copy_query(const char *query);
extern void tt_wait_sockets(int n, pgsocket *socks, uint32 *events,
							bool *ready, long timeout_ms);
extern long tt_ms_until(TimestampTz deadline);
extern TTNode *tt_task_node(TTJob *job, TTTask *task);

/* src/coordinator/executor_realtime.c */
extern void tt_realtime_execute(TTJob *job);

/* src/coordinator/executor_task_tracker.c */
extern void tt_task_tracker_execute(TTJob *job);

#endif							/* TT_EXECUTOR_H */
