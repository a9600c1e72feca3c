/*-------------------------------------------------------------------------
 *
 * tt_coordinator.h
 *	  The coordinator's settings, the hooks through which module
 *	  initialisation reaches the coordinator side, job ids and the jobs
 *	  progress table (src/coordinator/coordinator.c).  The coordinator's
 *	  files: docs/architecture.md, "The house".
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_COORDINATOR_H
#define TT_COORDINATOR_H

#include "datatype/timestamp.h"

/* values of citus.task_executor */
typedef enum TTExecutorType
{
	TT_EXECUTOR_REAL_TIME = 0,
	TT_EXECUTOR_TASK_TRACKER = 1
} TTExecutorType;

/* states of a job in task_tracker.jobs */
typedef enum TTJobState
{
	TT_JOB_STARTING = 0,		/* reading the task list, connecting */
	TT_JOB_RUNNING,				/* tasks running */
	TT_JOB_CLEANING_UP,			/* removing the job from the workers */
	TT_JOB_FAILING				/* cleaning up after an error or cancel */
} TTJobState;

/* settings (defined in src/coordinator/coordinator.c) */
extern int	task_executor;		/* citus.task_executor */
extern int	max_assign_task_batch_size; /* tasks per assign_tasks call */
extern int	max_connections_per_node;	/* real-time connections per node */
extern int	node_reconnect_timeout; /* ms to get a lost node back */

/* called from _PG_init: define the coordinator's citus.* settings */
extern void tt_coordinator_define_settings(void);

/* shared memory of the coordinator (jobs progress table) */
extern Size tt_coordinator_shmem_size(void);
extern void tt_coordinator_shmem_request(void);
extern void tt_coordinator_shmem_init(void);

/* jobs progress table (src/coordinator/coordinator.c) */
extern int64 tt_new_job_id(void);
extern int	tt_job_slot_acquire(int64 *job_id, TTExecutorType executor,
								int tasks_total);
extern void tt_job_slot_update(int slot, TTJobState state, int tasks_done,
							   int tasks_failed);
extern void tt_job_slot_release(int slot);

#endif							/* TT_COORDINATOR_H */
