/*-------------------------------------------------------------------------
 *
 * tt_shmem.h
 *	  The tracker's shared state: the task table, the job table, the queue
 *	  of tasks waiting to run, and the area holding query and error texts.
 *
 * Locking (field by field; see docs/architecture.md, "Shared state")
 *	  TTShared->lock, one LWLock, protects:
 *	  - both hash tables (tt_task_hash, tt_job_hash) and the user hash
 *		(tt_user_hash): entering, removing and walking entries;
 *	  - every field of every TTTrackedTask (including committed and
 *		backend_local, which only the tracker changes) and every TTTrackedJob,
 *		except TTTrackedJob->last_access (below);
 *	  - TTShared's pending queue, next_seq, ready, tracker_pid,
 *		tracker_latch, close_idle_request, close_idle_done and the
 *		counters ntasks, njobs, nrunning, ndropping, ncancel, succeeded,
 *		failed, text_bytes and result_bytes;
 *	  - TTUser->ntasks.
 *	  Shared mode is enough to read any of these; changing one needs
 *	  exclusive mode.  A session that only reads (task_status, a wait that
 *	  finds nothing new, the views, the result readers) takes shared mode.
 *	  Two reads without the lock, by the tracker, as hints:
 *	  - close_idle_request against close_idle_done, once a pass (a
 *		requester bumps the request under the lock, then sets the tracker's
 *		latch, so a bump missed is seen in the next pass);
 *	  - result_bytes, of which it is the only process that adds, to decide
 *		whether a result may stay in memory (it can only have shrunk since).
 *
 *	  Atomics, no lock:
 *	  - TTTrackedJob->last_access: "someone asked about the job" is recorded by
 *		readers holding the lock in shared mode (pg_atomic_write_u64; a
 *		lost race between two readers keeps one of two nearly equal
 *		times); expiry reads it under the lock.
 *	  - TTShared->wakeups, last_wakeup and nconnections: written only by
 *		the tracker (single writer), read by the tracker view.
 *
 *	  The DSA area has its own locks; texts and results are allocated
 *	  and freed while holding TTShared->lock exclusively (the tracker may
 *	  allocate a result before, then attaches or frees it under the lock),
 *	  so a text never outlives or predates the entry pointing at it.  The
 *	  area's total size is capped (dsa_set_size_limit, see
 *	  tt_area_limit()), so no allocation grows shared memory without bound.
 *
 *	  Waking: completion and drop events go to the condition variable of
 *	  the job's slot, TTShared->job_cv[job_id % TT_JOB_CV_SLOTS]
 *	  (tt_job_cv()), and only to it: a waiter sleeps on its job's slot and
 *	  is woken by events of the jobs hashing to that slot only.  Whoever
 *	  changes a task to a final state or removes a job under the lock
 *	  marks the slot in a process-local set; tt_job_wake_pending()
 *	  broadcasts the marked slots after the lock is released.  Readiness
 *	  (the restored table) goes to TTShared->ready_cv, a served request to
 *	  close idle sessions (DROP DATABASE) to TTShared->close_idle_cv.  No libpq call and
 *	  no file-system call is ever made while holding the lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_SHMEM_H
#define TT_SHMEM_H

#include "lib/ilist.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/dsa.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

typedef enum TTTaskStatus
{
	TT_ASSIGNED,				/* queued, waiting for a slot */
	TT_SCHEDULED,				/* picked by the tracker, connecting */
	TT_RUNNING,					/* query sent, results arriving */
	TT_SUCCEEDED,				/* final: rows in the result file */
	TT_FAILED,					/* an attempt failed; queued for a retry */
	TT_PERMANENTLY_FAILED,		/* final: out of attempts, error kept */
	TT_CANCEL_REQUESTED,		/* the tracker must stop it */
	TT_CANCELED					/* final: stopped before it finished */
} TTTaskStatus;

#define TT_STATUS_IS_FINAL(s) \
	((s) == TT_SUCCEEDED || (s) == TT_PERMANENTLY_FAILED || (s) == TT_CANCELED)
#define TT_STATUS_IS_ACTIVE(s) \
	((s) == TT_SCHEDULED || (s) == TT_RUNNING || (s) == TT_CANCEL_REQUESTED)

/* longest error text kept per task (bytes), longer ones are truncated */
#define TT_MAX_ERROR_LEN		(64 * 1024)

typedef struct TTTaskKey
{
	int64		job_id;
	int32		task_id;
	int32		pad;			/* always zero: keys are hashed as blobs */
} TTTaskKey;

/* One tracked task: an entry of the shared task hash. */
typedef struct TTTrackedTask
{
	TTTaskKey	key;			/* hash key; must be first */
	TTTaskStatus status;		/* see TTTaskStatus */
	Oid			owner;			/* role that assigned it (GetUserId()) */
	Oid			dbid;			/* database it was assigned in */
	int			encoding;		/* that database's encoding */
	NameData	user_name;		/* owner's name, to log in as */
	NameData	database_name;	/* database's name, to connect to */
	dsa_pointer query;			/* query text (NUL-terminated) */
	dsa_pointer error;			/* last error text, or InvalidDsaPointer */
	dsa_pointer result;			/* small result kept in memory, or invalid */
	uint32		result_size;	/* bytes at result */
	char		sqlstate[6];	/* last error's SQLSTATE, or "" */
	int32		attempts;		/* attempts started so far */
	int32		backend_pid;	/* pid of the session running it, or 0 */
	bool		backend_local;	/* backend_pid is a backend of this server
								 * (tracker.c may signal it) */
	bool		committed;		/* this attempt's statement completed (in
								 * autocommit: committed); never run again */
	int32		copy_len;		/* >0: run query[0..copy_len) as COPY (...)
								 * TO STDOUT; 0: run the query as it is */
	uint64		seq;			/* assignment order (stable tie-break) */
	int64		result_rows;	/* rows produced / affected, or -1 */
	TimestampTz assigned_at;	/* when (re)assigned */
	TimestampTz started_at;		/* when the last attempt started, or 0 */
	TimestampTz finished_at;	/* when it reached a final state, or 0 */
	bool		queued;			/* linked into TTShared->pending */
	bool		in_done;		/* final, linked into its job's done list */
	bool		has_file;		/* a result file exists for it (COPY text,
								 * see tt_result_file.h) */
	uint64		final_seq;		/* its place in the job's done list */
	uint64		assigner;		/* stamp of the session that assigned it
								 * (worker_api.c), 0 = none: only that
								 * session may drop it once it reported it
								 * with its rows (wait_for_task_results) */
	dlist_node	queue_node;		/* link in TTShared->pending */
	dlist_node	job_node;		/* link in TTTrackedJob->tasks */
	dlist_node	done_node;		/* link in TTTrackedJob->done */
} TTTrackedTask;

/* One job: an entry of the shared job hash, owning its tasks. */
typedef struct TTTrackedJob
{
	int64		job_id;			/* hash key */
	Oid			owner;			/* role that assigned its first task */
	int32		ntasks;			/* tasks in the tasks list */
	int32		nactive;		/* tasks in TT_STATUS_IS_ACTIVE states */
	bool		dropping;		/* cleanup requested; tracker finishes it */
	pg_atomic_uint64 last_access;	/* TimestampTz: last time its owner
									 * asked about it (atomic, see above) */
	dlist_head	tasks;			/* all its TTTasks (job_node) */
	dlist_head	done;			/* final tasks, in the order they finished */
	uint64		final_seq;		/* last final_seq handed out */
	uint64		incarnation;	/* unique per creation of this job id */
} TTTrackedJob;

/* Tasks one user has in the table: an entry of the shared user hash. */
typedef struct TTUser
{
	Oid			owner;			/* hash key: the role */
	int32		ntasks;			/* its tasks in the task hash */
} TTUser;

/* condition variables completion and drop events are spread over */
#define TT_JOB_CV_SLOTS		64

/* The fixed part of the shared state. */
typedef struct TTShared
{
	LWLock	   *lock;			/* protects what the rule above says */
	ConditionVariable ready_cv; /* the tracker became ready */
	ConditionVariable close_idle_cv;	/* the tracker served a
										 * close_idle_request */
	ConditionVariable job_cv[TT_JOB_CV_SLOTS];	/* completion and drop events,
												 * by job id, tt_job_cv() */
	pid_t		tracker_pid;	/* 0 while no tracker runs */
	Latch	   *tracker_latch;	/* the tracker's latch while it runs */
	bool		ready;			/* table restored since shmem init */
	uint64		next_seq;		/* next assignment order number */
	int32		ntasks;			/* entries in the task hash */
	int32		njobs;			/* entries in the job hash */
	int32		nrunning;		/* tasks in TT_STATUS_IS_ACTIVE states */
	pg_atomic_uint32 nconnections;	/* tracker's open sessions (tracker
									 * writes, no lock) */
	int32		ndropping;		/* jobs with dropping set */
	int32		ncancel;		/* tasks in TT_CANCEL_REQUESTED */
	uint64		succeeded;		/* tasks succeeded since start */
	uint64		failed;			/* tasks permanently failed since start */
	pg_atomic_uint64 wakeups;	/* tracker wake-ups since start (tracker
								 * writes, no lock) */
	pg_atomic_uint64 last_wakeup;	/* TimestampTz of the tracker's last
									 * wake-up (tracker writes, no lock) */
	int64		text_bytes;		/* bytes of texts in the area */
	int64		result_bytes;	/* bytes of in-memory results in the area */
	dlist_head	pending;		/* TTTasks waiting to run, oldest first */
	uint64		close_idle_request;	/* bumped by a backend that needs the
									 * tracker's idle sessions closed (DROP
									 * DATABASE, see tracker.c) */
	uint64		close_idle_done;	/* last request the tracker served */
} TTShared;

extern TTShared *tt_shared;
extern HTAB *tt_task_hash;
extern HTAB *tt_job_hash;
extern HTAB *tt_user_hash;

extern void tt_shmem_request(void);
extern void tt_shmem_init(void);
extern Size tt_shmem_size(void);
extern void tt_shmem_check(void);

/* texts (caller holds tt_shared->lock exclusively) */
extern dsa_pointer tt_text_store(const char *text, int len, bool no_oom);
extern void tt_text_free(dsa_pointer *ptr);
extern char *tt_text_get(dsa_pointer ptr);

/* in-memory results: store without the lock, attach/free with it */
extern dsa_pointer tt_blob_store(const char *data, Size len);
extern void tt_blob_free(dsa_pointer ptr);
extern void tt_task_set_result(TTTrackedTask *task, dsa_pointer blob, uint32 size);
extern void tt_task_free_result(TTTrackedTask *task);
extern Size tt_area_limit(void);

/* per-user share of the task table (caller holds the lock) */
extern int	tt_user_task_limit(void);
extern int	tt_user_task_count(Oid owner);

/* table manipulation (caller holds tt_shared->lock exclusively) */
extern TTTrackedJob *tt_job_lookup(int64 job_id, bool create, Oid owner);
extern TTTrackedTask *tt_task_lookup(int64 job_id, int32 task_id);
extern TTTrackedTask *tt_task_insert(TTTrackedJob *job, int64 job_id, int32 task_id, Oid owner);
extern void tt_task_remove(TTTrackedJob *job, TTTrackedTask *task);
extern void tt_job_remove(TTTrackedJob *job);
extern bool tt_job_drop(TTTrackedJob *job, char **detached);
extern void tt_task_enqueue(TTTrackedTask *task);
extern void tt_task_dequeue(TTTrackedTask *task);
extern void tt_task_set_status(TTTrackedJob *job, TTTrackedTask *task, TTTaskStatus status);
extern void tt_task_set_error(TTTrackedTask *task, const char *sqlstate, const char *text);
extern void tt_wake_tracker(void);
extern void tt_job_touch(TTTrackedJob *job, TimestampTz now);
extern TimestampTz tt_job_last_access(TTTrackedJob *job);

/* waking waiters (without the lock) */
extern ConditionVariable *tt_job_cv(int64 job_id);
extern void tt_job_mark_wake(int64 job_id);
extern void tt_job_wake(int64 job_id);
extern void tt_job_wake_pending(void);
extern void tt_ready_wake(void);

/* tracker statistics (the tracker writes, anyone reads; no lock) */
extern void tt_stats_wakeup(TimestampTz now);
extern void tt_stats_set_connections(int n);

extern const char *tt_status_name(TTTaskStatus status);

#endif							/* TT_SHMEM_H */
