/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The tracker's shared state: task table, job table, pending queue and
 *	  the dynamic area for query and error texts.
 *
 * Design
 *	  docs/architecture.md, "Shared state and its lock".
 *
 * Locking
 *	  See tt_shmem.h for the rule, field by field.  Every function below
 *	  that changes a TTTrackedTask or TTTrackedJob expects the caller to hold
 *	  TTShared->lock exclusively; the wake and statistics functions need
 *	  no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "common/tt_settings.h"
#include "worker/tt_result_file.h"
#include "worker/tt_shmem.h"
#include "worker/tt_worker.h"

TTShared   *tt_shared = NULL;
HTAB	   *tt_task_hash = NULL;
HTAB	   *tt_job_hash = NULL;
HTAB	   *tt_user_hash = NULL;

/* Size of the first, in-place DSA segment (more segments come as needed). */
#define TT_AREA_INITIAL_SIZE	(1024 * 1024)

static void *tt_area_place = NULL;	/* in the main segment */
static dsa_area *tt_area = NULL;	/* this process's attachment */
static Size tt_area_limit_set = 0;	/* the limit this process last set */

/* job_cv slots with an event to broadcast (tt_job_wake_pending) */
static uint64 pending_wakes = 0;

StaticAssertDecl(TT_JOB_CV_SLOTS <= 64, "pending_wakes has one bit per slot");

/*
 * Query and error texts may take this much of the area beyond the results'
 * citus.task_result_memory: 16 kB per task of citus.max_tracked_tasks_per_node,
 * at least 16 MB (with the defaults, 16 MB).
 */
#define TT_TEXT_ALLOWANCE_PER_TASK	(16 * 1024)
#define TT_TEXT_ALLOWANCE_MIN		((Size) 16 * 1024 * 1024)

static const char *const status_names[] = {
	"assigned", "scheduled", "running", "succeeded", "failed",
	"permanently_failed", "cancel_requested", "canceled"
};

static Size
area_size(void)
{
	return dsa_minimum_size() + TT_AREA_INITIAL_SIZE;
}

/*
 * tt_shmem_size
 *		Shared memory the tracker needs.
 */
Size
tt_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(TTShared));

	size = add_size(size, hash_estimate_size(max_tracked_tasks_per_node,
											 sizeof(TTTrackedTask)));
	size = add_size(size, hash_estimate_size(max_tracked_tasks_per_node,
											 sizeof(TTTrackedJob)));
	size = add_size(size, hash_estimate_size(max_tracked_tasks_per_node,
											 sizeof(TTUser)));
	size = add_size(size, area_size());
	return size;
}

void
tt_shmem_request(void)
{
	RequestAddinShmemSpace(tt_shmem_size());
	RequestNamedLWLockTranche("task_tracker", 2);
}

/*
 * tt_shmem_init
 *		Create or attach to the shared state (shmem_startup_hook).
 */
void
tt_shmem_init(void)
{
	HASHCTL		info;
	bool		found;
	bool		area_found;
	LWLockPadded *locks;

	tt_shared = NULL;
	tt_area = NULL;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	tt_shared = ShmemInitStruct("task_tracker state", sizeof(TTShared), &found);
	tt_area_place = ShmemInitStruct("task_tracker text area", area_size(), &area_found);
	if (!found)
	{
		memset(tt_shared, 0, sizeof(TTShared));
		locks = GetNamedLWLockTranche("task_tracker");
		tt_shared->lock = &locks[0].lock;
		ConditionVariableInit(&tt_shared->ready_cv);
		ConditionVariableInit(&tt_shared->close_idle_cv);
		for (int i = 0; i < TT_JOB_CV_SLOTS; i++)
			ConditionVariableInit(&tt_shared->job_cv[i]);
		pg_atomic_init_u32(&tt_shared->nconnections, 0);
		pg_atomic_init_u64(&tt_shared->wakeups, 0);
		pg_atomic_init_u64(&tt_shared->last_wakeup, 0);
		dlist_init(&tt_shared->pending);
		tt_shared->next_seq = 1;
	}
	if (!area_found)
	{
		dsa_area   *area;

		area = dsa_create_in_place(tt_area_place, area_size(),
								   GetNamedLWLockTranche("task_tracker")[1].lock.tranche,
								   NULL);
		dsa_pin(area);
		dsa_detach(area);
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(TTTaskKey);
	info.entrysize = sizeof(TTTrackedTask);
	tt_task_hash = ShmemInitHash("task_tracker tasks",
								 max_tracked_tasks_per_node,
								 max_tracked_tasks_per_node,
								 &info, HASH_ELEM | HASH_BLOBS);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(int64);
	info.entrysize = sizeof(TTTrackedJob);
	tt_job_hash = ShmemInitHash("task_tracker jobs",
								max_tracked_tasks_per_node,
								max_tracked_tasks_per_node,
								&info, HASH_ELEM | HASH_BLOBS);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(TTUser);
	tt_user_hash = ShmemInitHash("task_tracker users",
								 max_tracked_tasks_per_node,
								 max_tracked_tasks_per_node,
								 &info, HASH_ELEM | HASH_BLOBS);

	LWLockRelease(AddinShmemInitLock);
}

/*
 * tt_shmem_check
 *		Error out unless the shared state exists (library preloaded).
 */
void
tt_shmem_check(void)
{
	tt_check_preloaded();
	if (tt_shared == NULL || tt_task_hash == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task_tracker shared memory is not initialized")));
}

/*
 * tt_area_limit
 *		The most the text and result area may take in all: its in-place
 *		segment, citus.task_result_memory for in-memory results and the
 *		allowance for query and error texts.
 */
Size
tt_area_limit(void)
{
	Size		texts = Max(TT_TEXT_ALLOWANCE_MIN,
							(Size) max_tracked_tasks_per_node * TT_TEXT_ALLOWANCE_PER_TASK);

	return area_size() + texts + (Size) task_result_memory * 1024;
}

/*
 * get_area
 *		This process's attachment to the area, with the area's size limit
 *		set from this process's settings (citus.task_result_memory can
 *		change at a reload: the limit follows at the next allocation).
 */
static dsa_area *
get_area(void)
{
	Size		limit;

	if (tt_area == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		tt_area = dsa_attach_in_place(tt_area_place, NULL);
		dsa_pin_mapping(tt_area);
		MemoryContextSwitchTo(old);
	}
	limit = tt_area_limit();
	if (limit != tt_area_limit_set)
	{
		dsa_set_size_limit(tt_area, limit);
		tt_area_limit_set = limit;
	}
	return tt_area;
}

/*
 * tt_text_store
 *		Copy len bytes of text (plus a NUL) into the area.
 *
 * With no_oom, returns InvalidDsaPointer when the area cannot grow;
 * otherwise the DSA code raises the out-of-memory error.
 */
dsa_pointer
tt_text_store(const char *text, int len, bool no_oom)
{
	dsa_area   *area = get_area();
	dsa_pointer ptr;
	char	   *dst;

	ptr = dsa_allocate_extended(area, len + 1, no_oom ? DSA_ALLOC_NO_OOM : 0);
	if (!DsaPointerIsValid(ptr))
		return ptr;
	dst = dsa_get_address(area, ptr);
	memcpy(dst, text, len);
	dst[len] = '\0';
	tt_shared->text_bytes += len + 1;
	return ptr;
}

void
tt_text_free(dsa_pointer *ptr)
{
	if (DsaPointerIsValid(*ptr))
	{
		dsa_area   *area = get_area();

		tt_shared->text_bytes -= strlen(dsa_get_address(area, *ptr)) + 1;
		dsa_free(area, *ptr);
		*ptr = InvalidDsaPointer;
	}
}

/*
 * tt_text_get
 *		Address of a stored text, valid while the caller holds the lock and
 *		the owning entry exists; NULL for an invalid pointer.
 */
char *
tt_text_get(dsa_pointer ptr)
{
	if (!DsaPointerIsValid(ptr))
		return NULL;
	return dsa_get_address(get_area(), ptr);
}

/*
 * tt_blob_store
 *		Copy a task's small result into the area.  Needs no table lock (the
 *		area has its own); returns InvalidDsaPointer when out of memory.
 *		The caller keeps in-memory results within citus.task_result_memory
 *		(TTShared->result_bytes); the area's size limit makes that bound
 *		hard even if an allocation takes more than it asked for.
 */
dsa_pointer
tt_blob_store(const char *data, Size len)
{
	dsa_area   *area = get_area();
	dsa_pointer ptr = dsa_allocate_extended(area, Max(len, 1), DSA_ALLOC_NO_OOM);

	if (DsaPointerIsValid(ptr))
		memcpy(dsa_get_address(area, ptr), data, len);
	return ptr;
}

void
tt_blob_free(dsa_pointer ptr)
{
	if (DsaPointerIsValid(ptr))
		dsa_free(get_area(), ptr);
}

/*
 * tt_task_set_result / tt_task_free_result
 *		Attach a stored blob as the task's in-memory result, or free it.
 *		Caller holds the lock exclusively.
 */
void
tt_task_set_result(TTTrackedTask *task, dsa_pointer blob, uint32 size)
{
	tt_task_free_result(task);
	task->result = blob;
	task->result_size = size;
	tt_shared->result_bytes += size;
}

void
tt_task_free_result(TTTrackedTask *task)
{
	if (DsaPointerIsValid(task->result))
	{
		tt_shared->result_bytes -= task->result_size;
		dsa_free(get_area(), task->result);
	}
	task->result = InvalidDsaPointer;
	task->result_size = 0;
}

/*
 * tt_job_lookup
 *		Find a job, creating it (owned by owner) when create is true.
 *		Returns NULL when it does not exist and create is false.
 */
TTTrackedJob *
tt_job_lookup(int64 job_id, bool create, Oid owner)
{
	TTTrackedJob	   *job;
	bool		found;

	job = hash_search(tt_job_hash, &job_id, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (job == NULL)
	{
		if (create)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("task tracker's job table is full"),
					 errhint("Increase citus.max_tracked_tasks_per_node.")));
		return NULL;
	}
	if (!found)
	{
		job->owner = owner;
		job->ntasks = 0;
		job->nactive = 0;
		job->dropping = false;
		pg_atomic_init_u64(&job->last_access, (uint64) GetCurrentTimestamp());
		dlist_init(&job->tasks);
		dlist_init(&job->done);
		job->final_seq = 0;
		job->incarnation = tt_shared->next_seq++;
		tt_shared->njobs++;
	}
	return job;
}

TTTrackedTask *
tt_task_lookup(int64 job_id, int32 task_id)
{
	TTTaskKey	key;

	memset(&key, 0, sizeof(key));
	key.job_id = job_id;
	key.task_id = task_id;
	return hash_search(tt_task_hash, &key, HASH_FIND, NULL);
}

/*
 * tt_user_task_limit
 *		How many tasks one user may have in the table:
 *		citus.max_tracked_tasks_per_user, or when it is -1 (the default)
 *		three quarters of citus.max_tracked_tasks_per_node.  Superusers are
 *		held to the node's capacity only (the caller checks).
 */
int
tt_user_task_limit(void)
{
	if (max_tracked_tasks_per_user >= 0)
		return Min(max_tracked_tasks_per_user, max_tracked_tasks_per_node);
	return Max(1, max_tracked_tasks_per_node / 4 * 3);
}

/*
 * tt_user_task_count
 *		Tasks owner has in the table.  Caller holds the lock.
 */
int
tt_user_task_count(Oid owner)
{
	TTUser	   *user = hash_search(tt_user_hash, &owner, HASH_FIND, NULL);

	return user ? user->ntasks : 0;
}

/*
 * user_count_add
 *		Count a task in or out of its owner's share.  The user hash has room
 *		for as many entries as the task hash, and a user without tasks has
 *		none, so entering cannot fail while the task hash has room.
 */
static void
user_count_add(Oid owner, int delta)
{
	TTUser	   *user;
	bool		found;

	user = hash_search(tt_user_hash, &owner, delta > 0 ? HASH_ENTER_NULL : HASH_FIND,
					   &found);
	if (user == NULL)
	{
		if (delta > 0)
			elog(ERROR, "task tracker's user table is full");
		return;
	}
	if (delta > 0 && !found)
		user->ntasks = 0;
	user->ntasks += delta;
	if (user->ntasks <= 0)
		hash_search(tt_user_hash, &owner, HASH_REMOVE, NULL);
}

/*
 * tt_task_insert
 *		Add a new, empty task of owner to job.  The caller checked the
 *		capacity (the node's and the owner's share) and that the key is
 *		free.  The owner of a task never changes while it is in the table.
 */
TTTrackedTask *
tt_task_insert(TTTrackedJob *job, int64 job_id, int32 task_id, Oid owner)
{
	TTTaskKey	key;
	TTTrackedTask	   *task;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.job_id = job_id;
	key.task_id = task_id;
	user_count_add(owner, 1);
	task = hash_search(tt_task_hash, &key, HASH_ENTER_NULL, &found);
	if (task == NULL)
	{
		user_count_add(owner, -1);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("task table is full"),
				 errhint("Increase citus.max_tracked_tasks_per_node.")));
	}
	Assert(!found);
	memset(((char *) task) + sizeof(TTTaskKey), 0, sizeof(TTTrackedTask) - sizeof(TTTaskKey));
	task->status = TT_ASSIGNED;
	task->query = InvalidDsaPointer;
	task->error = InvalidDsaPointer;
	task->result = InvalidDsaPointer;
	task->result_rows = -1;
	task->owner = owner;
	dlist_push_tail(&job->tasks, &task->job_node);
	job->ntasks++;
	tt_shared->ntasks++;
	return task;
}

/*
 * tt_task_remove
 *		Unlink and delete a task, freeing its texts.  Its result file, if
 *		any, is the caller's business.
 */
void
tt_task_remove(TTTrackedJob *job, TTTrackedTask *task)
{
	tt_task_dequeue(task);
	if (task->in_done)
	{
		dlist_delete(&task->done_node);
		task->in_done = false;
	}
	if (TT_STATUS_IS_ACTIVE(task->status))
	{
		job->nactive--;
		tt_shared->nrunning--;
	}
	if (task->status == TT_CANCEL_REQUESTED)
		tt_shared->ncancel--;
	dlist_delete(&task->job_node);
	job->ntasks--;
	tt_text_free(&task->query);
	tt_text_free(&task->error);
	tt_task_free_result(task);
	user_count_add(task->owner, -1);
	hash_search(tt_task_hash, &task->key, HASH_REMOVE, NULL);
	tt_shared->ntasks--;
}

/*
 * tt_job_drop
 *		Drop a job (cleanup_job, job expiry): tasks that are not running are
 *		removed at once; running ones become cancel_requested, the job is
 *		marked dropping and the tracker (woken here) stops them and removes
 *		the job.  Returns true when the job is gone now; then *detached is
 *		its renamed result directory (or NULL), for the caller to remove
 *		with tt_result_remove_detached() once it released the lock.  Caller
 *		holds the lock exclusively.
 */
bool
tt_job_drop(TTTrackedJob *job, char **detached)
{
	dlist_mutable_iter iter;

	*detached = NULL;
	dlist_foreach_modify(iter, &job->tasks)
	{
		TTTrackedTask	   *task = dlist_container(TTTrackedTask, job_node, iter.cur);

		if (!TT_STATUS_IS_ACTIVE(task->status))
			tt_task_remove(job, task);
		else if (task->status != TT_CANCEL_REQUESTED)
			tt_task_set_status(job, task, TT_CANCEL_REQUESTED);
	}
	if (job->nactive == 0)
	{
		*detached = tt_result_detach_job(job->job_id);
		tt_job_remove(job);
		return true;
	}
	if (!job->dropping)
		tt_shared->ndropping++;
	job->dropping = true;
	tt_wake_tracker();
	return false;
}

/*
 * tt_job_remove
 *		Delete an empty job.
 */
void
tt_job_remove(TTTrackedJob *job)
{
	Assert(job->ntasks == 0);
	if (job->dropping)
		tt_shared->ndropping--;
	/* whoever waits on it (cleanup_job, a wait) must look again */
	tt_job_mark_wake(job->job_id);
	hash_search(tt_job_hash, &job->job_id, HASH_REMOVE, NULL);
	tt_shared->njobs--;
}

void
tt_task_enqueue(TTTrackedTask *task)
{
	if (!task->queued)
	{
		dlist_push_tail(&tt_shared->pending, &task->queue_node);
		task->queued = true;
	}
}

void
tt_task_dequeue(TTTrackedTask *task)
{
	if (task->queued)
	{
		dlist_delete(&task->queue_node);
		task->queued = false;
	}
}

/*
 * tt_task_set_status
 *		Move a task to a new status, keeping every count and list in step:
 *		active counts, the cancel count, and the job's list of final tasks
 *		in the order they finished (what wait_for_tasks reports from).
 */
void
tt_task_set_status(TTTrackedJob *job, TTTrackedTask *task, TTTaskStatus status)
{
	TTTaskStatus old = task->status;

	if (TT_STATUS_IS_ACTIVE(old) && !TT_STATUS_IS_ACTIVE(status))
	{
		job->nactive--;
		tt_shared->nrunning--;
	}
	else if (!TT_STATUS_IS_ACTIVE(old) && TT_STATUS_IS_ACTIVE(status))
	{
		job->nactive++;
		tt_shared->nrunning++;
	}
	if (old == TT_CANCEL_REQUESTED)
		tt_shared->ncancel--;
	if (status == TT_CANCEL_REQUESTED)
		tt_shared->ncancel++;

	if (task->in_done)
	{
		dlist_delete(&task->done_node);
		task->in_done = false;
	}
	if (TT_STATUS_IS_FINAL(status))
	{
		/* a new final state: every waiter of the job will be told */
		dlist_push_tail(&job->done, &task->done_node);
		task->in_done = true;
		task->final_seq = ++job->final_seq;
		task->finished_at = GetCurrentTimestamp();
		task->backend_pid = 0;
		tt_job_mark_wake(job->job_id);
	}
	else
		task->finished_at = 0;

	task->status = status;
}

/*
 * tt_task_set_error
 *		Replace the task's kept error (text may be NULL to clear it).  At
 *		most TT_MAX_ERROR_LEN bytes are kept, so no remote error can fill
 *		shared memory.  When the area is out of memory the text is dropped
 *		(the SQLSTATE stays) rather than failing the caller.
 */
void
tt_task_set_error(TTTrackedTask *task, const char *sqlstate, const char *text)
{
	tt_text_free(&task->error);
	task->sqlstate[0] = '\0';
	if (text)
	{
		int			len = strlen(text);

		if (len > TT_MAX_ERROR_LEN)
		{
			static const char suffix[] = "... (truncated)";
			char	   *cut;
			int			keep = pg_encoding_mbcliplen(task->encoding, text, len,
												   TT_MAX_ERROR_LEN - (int) sizeof(suffix));

			cut = palloc(keep + sizeof(suffix));
			memcpy(cut, text, keep);
			memcpy(cut + keep, suffix, sizeof(suffix));
			task->error = tt_text_store(cut, strlen(cut), true);
			pfree(cut);
		}
		else
			task->error = tt_text_store(text, len, true);
		strlcpy(task->sqlstate, sqlstate ? sqlstate : "XX000", sizeof(task->sqlstate));
	}
}

/*
 * tt_wake_tracker
 *		Set the tracker's latch, if it runs.  Caller holds the lock.
 */
void
tt_wake_tracker(void)
{
	if (tt_shared->tracker_latch)
		SetLatch(tt_shared->tracker_latch);
}

/*
 * tt_job_touch / tt_job_last_access
 *		Record that the job's owner asked about it, and read that time.
 *		Caller holds the lock in either mode (the field is atomic).
 */
void
tt_job_touch(TTTrackedJob *job, TimestampTz now)
{
	pg_atomic_write_u64(&job->last_access, (uint64) now);
}

TimestampTz
tt_job_last_access(TTTrackedJob *job)
{
	return (TimestampTz) pg_atomic_read_u64(&job->last_access);
}

/*
 * tt_job_cv
 *		The condition variable events of job_id are broadcast on.
 */
ConditionVariable *
tt_job_cv(int64 job_id)
{
	return &tt_shared->job_cv[(uint64) job_id % TT_JOB_CV_SLOTS];
}

/*
 * tt_job_mark_wake
 *		Remember that waiters of job_id must be woken; done by
 *		tt_job_wake_pending() once the lock is released.
 */
void
tt_job_mark_wake(int64 job_id)
{
	pending_wakes |= UINT64CONST(1) << ((uint64) job_id % TT_JOB_CV_SLOTS);
}

/*
 * tt_job_wake
 *		Wake the sessions waiting on job_id (and on the few jobs sharing its
 *		slot) now.  Call it without holding the lock.
 */
void
tt_job_wake(int64 job_id)
{
	ConditionVariableBroadcast(tt_job_cv(job_id));
}

/*
 * tt_job_wake_pending
 *		Broadcast every slot marked since the last call.  Call it without
 *		holding the lock, after any change that made a task final or removed
 *		a job.
 */
void
tt_job_wake_pending(void)
{
	uint64		slots = pending_wakes;

	pending_wakes = 0;
	for (int i = 0; slots != 0; i++, slots >>= 1)
	{
		if (slots & 1)
			ConditionVariableBroadcast(&tt_shared->job_cv[i]);
	}
}

/*
 * tt_ready_wake
 *		The tracker is ready: wake the sessions waiting for it.
 */
void
tt_ready_wake(void)
{
	ConditionVariableBroadcast(&tt_shared->ready_cv);
}

/*
 * tt_stats_wakeup / tt_stats_set_connections
 *		The tracker's own counters: it is their only writer, so atomics
 *		without the lock suffice; readers may see them a moment old.
 */
void
tt_stats_wakeup(TimestampTz now)
{
	pg_atomic_write_u64(&tt_shared->wakeups,
						pg_atomic_read_u64(&tt_shared->wakeups) + 1);
	pg_atomic_write_u64(&tt_shared->last_wakeup, (uint64) now);
}

void
tt_stats_set_connections(int n)
{
	pg_atomic_write_u32(&tt_shared->nconnections, (uint32) n);
}

const char *
tt_status_name(TTTaskStatus status)
{
	if (status < 0 || status > TT_CANCELED)
		return "unknown";
	return status_names[status];
}
