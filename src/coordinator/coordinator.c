/*-------------------------------------------------------------------------
 *
 * coordinator.c
 *	  Coordinator side: its settings, and its shared memory: the source of
 *	  job ids and the jobs progress table behind the task_tracker.jobs
 *	  view.
 *
 * Design
 *	  docs/architecture.md, "Job ids" and "The jobs progress table".
 *
 * Locking
 *	  Each slot has its own spinlock, which protects every field of the
 *	  slot; it is held only to copy a few words in or out.  Job ids need
 *	  no shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_authid_d.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "common/tt_settings.h"
#include "common/tt_conn_auth.h"
#include "coordinator/tt_coordinator.h"

/* settings */
int			task_executor = TT_EXECUTOR_REAL_TIME;
int			max_assign_task_batch_size = 64;
int			max_connections_per_node = 8;
int			node_reconnect_timeout = 10000;

static const struct config_enum_entry task_executor_options[] = {
	{"real-time", TT_EXECUTOR_REAL_TIME, false},
	{"task-tracker", TT_EXECUTOR_TASK_TRACKER, false},
	{NULL, 0, false}
};

/* one running job; every field protected by mutex */
typedef struct TTJobSlot
{
	slock_t		mutex;			/* protects the fields below */
	bool		in_use;			/* slot holds a job */
	int64		job_id;			/* the job's id */
	int			pid;			/* backend running the job */
	Oid			userid;			/* user who started it */
	TTExecutorType executor;	/* which executor runs it */
	TTJobState	state;			/* see TTJobState */
	int			tasks_total;	/* tasks in the job */
	int			tasks_done;		/* tasks whose rows are in the result */
	int			tasks_failed;	/* task attempts that failed at a placement */
	TimestampTz started_at;		/* when run_job started */
} TTJobSlot;

typedef struct TTCoordinatorShared
{
	int			nslots;			/* length of slots[] */
	TTJobSlot	slots[FLEXIBLE_ARRAY_MEMBER];	/* the progress table */
} TTCoordinatorShared;

static TTCoordinatorShared *tt_coord = NULL;

PG_FUNCTION_INFO_V1(task_tracker_job_list);

static int
job_slot_count(void)
{
	return 2 * MaxBackends;
}

/*
 * tt_coordinator_define_settings
 *		Define the coordinator's citus.* settings (called from _PG_init).
 */
void
tt_coordinator_define_settings(void)
{
	DefineCustomEnumVariable("citus.task_executor",
							 "Executor that runs the tasks of task_tracker.run_job().",
							 "real-time runs tasks over pooled asynchronous connections; "
							 "task-tracker hands them to the workers' task trackers.",
							 &task_executor,
							 TT_EXECUTOR_REAL_TIME,
							 task_executor_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("citus.max_assign_task_batch_size",
							"Tasks the task-tracker executor assigns to a node per round trip.",
							NULL,
							&max_assign_task_batch_size,
							64, 1, 100000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.max_connections_per_node",
							"Connections one real-time job opens to one node.",
							"It opens them by slow start, within the coordinator's budget per node (citus.max_shared_pool_size).",
							&max_connections_per_node,
							8, 1, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("citus.node_reconnect_timeout",
							"How long the task-tracker executor keeps trying to reach a node whose connection broke during a job.",
							"After this time the node's unfinished tasks move to their next placement.",
							&node_reconnect_timeout,
							10000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

}

Size
tt_coordinator_shmem_size(void)
{
	return add_size(offsetof(TTCoordinatorShared, slots),
					mul_size(job_slot_count(), sizeof(TTJobSlot)));
}

void
tt_coordinator_shmem_request(void)
{
	RequestAddinShmemSpace(tt_coordinator_shmem_size());
}

/*
 * tt_coordinator_shmem_init
 *		Create or attach to the progress table (caller: shmem_startup_hook).
 */
void
tt_coordinator_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	tt_coord = ShmemInitStruct("task_tracker coordinator",
							   tt_coordinator_shmem_size(), &found);
	if (!found)
	{
		int			i;

		tt_coord->nslots = job_slot_count();
		for (i = 0; i < tt_coord->nslots; i++)
		{
			SpinLockInit(&tt_coord->slots[i].mutex);
			tt_coord->slots[i].in_use = false;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * tt_new_job_id
 *		A new job id: 63 random bits from pg_strong_random(), never zero, so
 *		that no other job of any coordinator is likely to have it and no one
 *		can guess it.  Throws when no random bits can be had.
 */
int64
tt_new_job_id(void)
{
	uint64		id = 0;

	while (id == 0)
	{
		if (!pg_strong_random(&id, sizeof(id)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random job id")));
		id &= UINT64CONST(0x7FFFFFFFFFFFFFFF);
	}
	return (int64) id;
}

/*
 * tt_job_slot_acquire
 *		Draw a job id and publish the job in the progress table.
 *
 * Returns the slot number for tt_job_slot_update / tt_job_slot_release.
 * Errors out if the library is not preloaded or the table is full.
 */
int
tt_job_slot_acquire(int64 *job_id, TTExecutorType executor, int tasks_total)
{
	int			start;
	int			i;

	tt_check_preloaded();
	Assert(tt_coord != NULL);

	*job_id = tt_new_job_id();
	start = (MyBackendId > 0 ? (MyBackendId - 1) * 2 : 0) % tt_coord->nslots;
	for (i = 0; i < tt_coord->nslots; i++)
	{
		int			n = (start + i) % tt_coord->nslots;
		TTJobSlot  *slot = &tt_coord->slots[n];

		SpinLockAcquire(&slot->mutex);
		if (!slot->in_use)
		{
			slot->in_use = true;
			slot->job_id = *job_id;
			slot->pid = MyProcPid;
			slot->userid = GetUserId();
			slot->executor = executor;
			slot->state = TT_JOB_STARTING;
			slot->tasks_total = tasks_total;
			slot->tasks_done = 0;
			slot->tasks_failed = 0;
			slot->started_at = GetCurrentTimestamp();
			SpinLockRelease(&slot->mutex);
			return n;
		}
		SpinLockRelease(&slot->mutex);
	}
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("too many task_tracker jobs running on this coordinator")));
	return -1;					/* keep compiler quiet */
}

/*
 * tt_job_slot_update
 *		Publish the progress of the job in slot (owner only).
 */
void
tt_job_slot_update(int slot, TTJobState state, int tasks_done, int tasks_failed)
{
	TTJobSlot  *s;

	if (slot < 0 || tt_coord == NULL)
		return;
	s = &tt_coord->slots[slot];
	SpinLockAcquire(&s->mutex);
	s->state = state;
	s->tasks_done = tasks_done;
	s->tasks_failed = tasks_failed;
	SpinLockRelease(&s->mutex);
}

/*
 * tt_job_slot_release
 *		Remove the job from the progress table (owner only; never throws).
 */
void
tt_job_slot_release(int slot)
{
	TTJobSlot  *s;

	if (slot < 0 || tt_coord == NULL)
		return;
	s = &tt_coord->slots[slot];
	SpinLockAcquire(&s->mutex);
	s->in_use = false;
	SpinLockRelease(&s->mutex);
}

static const char *
job_state_name(TTJobState state)
{
	switch (state)
	{
		case TT_JOB_STARTING:
			return "starting";
		case TT_JOB_RUNNING:
			return "running";
		case TT_JOB_CLEANING_UP:
			return "cleaning up";
		case TT_JOB_FAILING:
			return "failing";
	}
	return "unknown";
}

/*
 * task_tracker_job_list
 *		SQL: the jobs running on this coordinator (behind task_tracker.jobs).
 */
Datum
task_tracker_job_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			viewer = GetUserId();
	bool		read_all = has_privs_of_role(viewer, ROLE_PG_READ_ALL_STATS);
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (tt_coord == NULL)
		PG_RETURN_VOID();

	for (i = 0; i < tt_coord->nslots; i++)
	{
		TTJobSlot  *s = &tt_coord->slots[i];
		TTJobSlot	copy;
		Datum		values[9];
		bool		nulls[9];
		char	   *uname;

		SpinLockAcquire(&s->mutex);
		if (!s->in_use)
		{
			SpinLockRelease(&s->mutex);
			continue;
		}
		memcpy(&copy, s, sizeof(copy));
		SpinLockRelease(&s->mutex);

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum(copy.job_id);
		values[1] = Int32GetDatum(copy.pid);
		uname = GetUserNameFromId(copy.userid, true);
		if (uname)
			values[2] = CStringGetTextDatum(uname);
		else
			nulls[2] = true;
		if (read_all || has_privs_of_role(viewer, copy.userid))
		{
			values[3] = CStringGetTextDatum(copy.executor == TT_EXECUTOR_TASK_TRACKER ?
											"task-tracker" : "real-time");
			values[4] = CStringGetTextDatum(job_state_name(copy.state));
			values[5] = Int32GetDatum(copy.tasks_total);
			values[6] = Int32GetDatum(copy.tasks_done);
			values[7] = Int32GetDatum(copy.tasks_failed);
			values[8] = TimestampTzGetDatum(copy.started_at);
		}
		else
			nulls[3] = nulls[4] = nulls[5] = nulls[6] = nulls[7] = nulls[8] = true;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
