/*-------------------------------------------------------------------------
 *
 * coordinator_api.c
 *	  The coordinator's SQL entry points: run_job() and run_on_workers().
 *
 * Design
 *	  docs/architecture.md, "A job from start to end"; run_on_workers:
 *	  README, "Run a command on every worker".
 *
 * Locking
 *	  None beyond what SPI takes to read the task list and the registry.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "common/tt_settings.h"
#include "common/tt_conn_auth.h"
#include "coordinator/tt_executor.h"
#include "coordinator/tt_node_registry.h"

PG_FUNCTION_INFO_V1(task_tracker_run_job);
PG_FUNCTION_INFO_V1(task_tracker_run_on_workers);

/*
 * Saved plans of the task lists run last in this backend, in a small ring.
 * Applications tend to run the same task list again and again; parsing and
 * planning it every time cost more than the rest of run_job for a one-task
 * job.  The plan cache revalidates a saved plan after DDL, a search_path or
 * role change, as for any prepared statement.
 */
#define TT_TASK_LIST_PLANS	8

typedef struct TaskListPlan
{
	char	   *text;			/* the task list query, or NULL */
	SPIPlanPtr	plan;			/* its saved plan */
} TaskListPlan;

static TaskListPlan task_list_plans[TT_TASK_LIST_PLANS];
static int	task_list_next;		/* slot the next new plan replaces */

/*
 * task_list_plan
 *		The saved plan of task_list, prepared and saved on first use.
 *		Caller is connected to SPI.
 */
static SPIPlanPtr
task_list_plan(const char *task_list)
{
	TaskListPlan *slot;
	SPIPlanPtr	plan;

	for (int i = 0; i < TT_TASK_LIST_PLANS; i++)
	{
		if (task_list_plans[i].text != NULL &&
			strcmp(task_list_plans[i].text, task_list) == 0)
			return task_list_plans[i].plan;
	}

	plan = SPI_prepare(task_list, 0, NULL);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task_list must be a query that returns rows"),
				 errdetail("SPI_prepare failed: %s.", SPI_result_code_string(SPI_result))));

	slot = &task_list_plans[task_list_next];
	task_list_next = (task_list_next + 1) % TT_TASK_LIST_PLANS;
	if (slot->text != NULL)
	{
		SPI_freeplan(slot->plan);
		pfree(slot->text);
		slot->text = NULL;
	}
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	slot->plan = plan;
	slot->text = MemoryContextStrdup(TopMemoryContext, task_list);
	return plan;
}

/* index of node (host, port) in job->nodes, adding it if new */
static int
job_node_index(TTJob *job, const char *host, int port, int *maxnodes)
{
	int			i;
	TTNode	   *node;

	for (i = 0; i < job->nnodes; i++)
		if (job->nodes[i].port == port && strcmp(job->nodes[i].host, host) == 0)
			return i;
	if (job->nnodes == *maxnodes)
	{
		*maxnodes *= 2;
		job->nodes = repalloc(job->nodes, sizeof(TTNode) * *maxnodes);
	}
	node = &job->nodes[job->nnodes];
	memset(node, 0, sizeof(TTNode));
	node->index = job->nnodes;
	node->host = pstrdup(host);
	node->port = port;
	if (strchr(host, ':') != NULL)
		node->name = psprintf("[%s]:%d", host, port);
	else
		node->name = psprintf("%s:%d", host, port);
	return job->nnodes++;
}

/*
 * read_task_list
 *		Run the task list query and fill job->tasks and job->nodes, checking
 *		every placement.  Caller's memory context is job->cxt.
 */
static void
read_task_list(TTJob *job, const char *task_list)
{
	int			ret;
	int			qcol,
				pcol;
	TupleDesc	desc;
	uint64		i;
	int			maxnodes = 4;
	MemoryContext jobcxt = CurrentMemoryContext;

	SPI_connect();
	ret = SPI_execute_plan(task_list_plan(task_list), NULL, NULL, false, 0);
	if (ret < 0 || SPI_tuptable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task_list must be a query that returns rows"),
				 errdetail("It returns one row per task, with columns query text and placements text[].")));
	desc = SPI_tuptable->tupdesc;
	qcol = SPI_fnumber(desc, "query");
	pcol = SPI_fnumber(desc, "placements");
	if (qcol <= 0 || pcol <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("task_list must return the columns query and placements")));
	if (SPI_gettypeid(desc, pcol) != TEXTARRAYOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column placements of task_list must be of type text[]")));
	if (SPI_processed > (uint64) PG_INT32_MAX - 1)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many tasks in task_list")));

	MemoryContextSwitchTo(jobcxt);
	job->ntasks = (int) SPI_processed;
	job->tasks = palloc0(sizeof(TTTask) * Max(job->ntasks, 1));
	job->nodes = palloc0(sizeof(TTNode) * maxnodes);

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TTTask	   *task = &job->tasks[i];
		bool		isnull;
		Datum		d;
		ArrayType  *arr;
		Datum	   *elems;
		bool	   *elemnulls;
		int			nelems;
		int			k;
		char	   *query;
		char	   *inactive;

		task->task_id = (int) i + 1;
		query = SPI_getvalue(tup, desc, qcol);
		if (query == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("task %d has a NULL query", task->task_id)));
		if (query[strspn(query, " \t\r\n\f\v")] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task %d has an empty query", task->task_id)));
		task->query = query;

		d = SPI_getbinval(tup, desc, pcol, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("task %d has NULL placements", task->task_id)));
		arr = DatumGetArrayTypeP(d);
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elemnulls, &nelems);
		if (nelems == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task %d has no placements", task->task_id)));
		task->placements = palloc(sizeof(int) * nelems);
		task->nplacements = 0;
		inactive = NULL;
		for (k = 0; k < nelems; k++)
		{
			char	   *placement;
			char	   *host;
			int			port;
			const TTRegisteredNode *reg;

			if (elemnulls[k])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("task %d has a NULL placement", task->task_id)));
			placement = TextDatumGetCString(elems[k]);
			tt_parse_placement(placement, &host, &port);
			reg = tt_registry_find(host, port);
			if (reg == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("node %s is not registered", placement),
						 errdetail("Task %d is placed on it.", task->task_id),
						 errhint("A superuser registers worker nodes with task_tracker.add_node().")));
			/* an inactive node is not used: the task runs on the others */
			if (!reg->is_active)
			{
				if (inactive == NULL)
					inactive = placement;
				continue;
			}
			task->placements[task->nplacements++] =
				job_node_index(job, host, port, &maxnodes);
		}
		if (task->nplacements == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("node %s is not active", inactive),
					 errdetail("Task %d is placed on it.", task->task_id),
					 errhint("A task runs only on the active nodes among its placements; this one has none.")));
		task->state = TT_TASK_PENDING;
	}
	SPI_finish();
	MemoryContextSwitchTo(jobcxt);
}

/*
 * column_definitions
 *		"c1 text, c2 text, ..." for task_result's column definition list.
 *		Every column is fetched as text: the stored values are the remote's
 *		own text output, so text passes them through unchanged and the
 *		coordinator converts each value once, with its column type's input
 *		function, exactly as the real-time executor does.  (Asking for the
 *		real types would make the worker parse and print every value again,
 *		and need the types to exist there.)
 */
static char *
column_definitions(TupleDesc desc)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < desc->natts; i++)
		appendStringInfo(&buf, "%sc%d text", i > 0 ? ", " : "", i + 1);
	return buf.data;
}

/*
 * task_tracker_run_job
 *		SQL: run_job(task_list text) RETURNS SETOF record
 *		Run every task of the task list on its nodes and return the union of
 *		their rows (the caller gives a column definition list).
 */
Datum
task_tracker_run_job(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *task_list;
	MemoryContext jobcxt;
	MemoryContext old;
	TTJob	   *job;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_list must not be NULL")));
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (rsinfo->expectedDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("a column definition list is required for task_tracker.run_job"),
				 errhint("Call it as SELECT * FROM task_tracker.run_job('...') AS t(col type, ...).")));
	tt_check_preloaded();
	task_list = text_to_cstring(PG_GETARG_TEXT_PP(0));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	jobcxt = AllocSetContextCreate(TopMemoryContext, "task_tracker job",
								   ALLOCSET_DEFAULT_SIZES);
	job = MemoryContextAllocZero(jobcxt, sizeof(TTJob));
	job->cxt = jobcxt;
	job->slot = -1;
	job->executor = (TTExecutorType) task_executor;
	tt_job_register(job);

	PG_TRY();
	{
		old = MemoryContextSwitchTo(jobcxt);
		job->rowcxt = AllocSetContextCreate(jobcxt, "task_tracker rows",
											ALLOCSET_DEFAULT_SIZES);
		job->tupstore = rsinfo->setResult;
		job->tupdesc = rsinfo->setDesc;
		job->attinmeta = TupleDescGetAttInMetadata(job->tupdesc);
		job->values = palloc0(sizeof(char *) * Max(job->tupdesc->natts, 1));
		job->datums = palloc0(sizeof(Datum) * Max(job->tupdesc->natts, 1));
		job->nulls = palloc0(sizeof(bool) * Max(job->tupdesc->natts, 1));
		job->coldefs = column_definitions(job->tupdesc);
		job->user_name = GetUserNameFromId(GetUserId(), false);

		read_task_list(job, task_list);

		/*
		 * Resolve the nodes' names now, while a wait in getaddrinfo() can
		 * still be interrupted by nothing worse than a late cancel: the
		 * cleanup connects with interrupts held and must not look names up.
		 */
		for (i = 0; i < job->nnodes; i++)
			tt_node_resolve(job->nodes[i].host, job->nodes[i].port);

		if (job->ntasks > 0)
		{
			job->slot = tt_job_slot_acquire(&job->job_id, job->executor, job->ntasks);
			for (i = 0; i < job->ntasks; i++)
			{
				TTTask	   *task = &job->tasks[i];

				tt_queue_push(&tt_task_node(job, task)->pending, task);
			}
			MemoryContextSwitchTo(old);

			tt_job_reserve(job);
			if (job->executor == TT_EXECUTOR_TASK_TRACKER)
				tt_task_tracker_execute(job);
			else
				tt_realtime_execute(job);
		}
		else
			MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		tt_job_progress(job, TT_JOB_FAILING);
		if (!job->cleaned && job->cleanup)
			job->cleanup(job, true);
		tt_job_unregister(job);
		RESUME_INTERRUPTS();
		PG_RE_THROW();
	}
	PG_END_TRY();

	HOLD_INTERRUPTS();
	if (!job->cleaned && job->cleanup)
		job->cleanup(job, false);
	tt_job_unregister(job);
	RESUME_INTERRUPTS();
	PG_RETURN_VOID();
}

/* one node of run_on_workers */
typedef struct WorkerRun
{
	TTRegisteredNode *node;		/* the node */
	TTConn	   *c;				/* its connection while running */
	TTRemoteQuery q;			/* the command's run (src/common/remote.c) */
	bool		done;			/* outcome known */
	bool		success;		/* command succeeded */
	char	   *result;			/* value, command tag or error message */
} WorkerRun;

static void
worker_run_finish(WorkerRun *w, bool success, char *result, bool reusable)
{
	w->done = true;
	w->success = success;
	w->result = result;
	tt_conncache_release(w->c, reusable);
	w->c = NULL;
}

/*
 * connect_error_text
 *		Why w's connection could not be made, as run_on_workers reports it:
 *		libpq's message, or for an authentication failure the message,
 *		DETAIL and HINT of tt_auth_error (src/common/conn_auth.c).
 */
static char *
connect_error_text(WorkerRun *w, PGconn *conn)
{
	char	   *msg;
	const char *user_name;
	const char *dbname;
	TTRemoteError err;

	if (PQstatus(conn) != CONNECTION_BAD)
		return pstrdup("timeout expired while connecting");
	msg = tt_conn_error_message(conn);
	if (!tt_is_auth_failure(NULL, msg))
		return msg;
	tt_conncache_names(w->c, &user_name, &dbname);
	tt_auth_error(&err, msg, TT_AUTH_COORDINATOR, user_name,
				  psprintf("node %s:%d", w->node->node_name, w->node->node_port),
				  dbname);
	return tt_remote_error_text(&err);
}

static void
worker_run_advance(WorkerRun *w, const char *command)
{
	PGconn	   *conn;
	char	   *result;

	if (w->done || w->c == NULL)
		return;
	conn = w->c->conn;
	if (w->c->connecting)
	{
		int			r = tt_conncache_connect_poll(w->c);

		if (r < 0)
			worker_run_finish(w, false, connect_error_text(w, conn), false);
		if (r != 0)
			return;
	}
	if (w->q.conn == NULL)
		tt_remote_query_start(&w->q, conn, command, true);
	tt_remote_query_advance(&w->q);
	if (!w->q.done)
		return;
	if (w->q.copy)
		result = pstrdup("COPY is not supported by run_on_workers");
	else if (w->q.ok)
		result = w->q.value;
	else
		result = w->q.err.message;
	worker_run_finish(w, w->q.ok, result, !w->q.broken);
}

static int
worker_run_cmp(const void *a, const void *b)
{
	const WorkerRun *x = (const WorkerRun *) a;
	const WorkerRun *y = (const WorkerRun *) b;
	int			c = strcmp(x->node->node_name, y->node->node_name);

	if (c != 0)
		return c;
	return (x->node->node_port > y->node->node_port) - (x->node->node_port < y->node->node_port);
}

/*
 * task_tracker_run_on_workers
 *		SQL: run_on_workers(command text) RETURNS TABLE(node_name text,
 *		node_port integer, success boolean, result text)
 *		Run command on every active node at once.
 */
Datum
task_tracker_run_on_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *command;
	List	   *nodes;
	ListCell   *lc;
	WorkerRun  *runs;
	int			nruns;
	int			i;
	pgsocket   *socks;
	uint32	   *events;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("command must not be NULL")));
	tt_check_sql_version();
	command = text_to_cstring(PG_GETARG_TEXT_PP(0));
	InitMaterializedSRF(fcinfo, 0);

	nodes = tt_registry_active_nodes();
	nruns = list_length(nodes);
	runs = palloc0(sizeof(WorkerRun) * Max(nruns, 1));
	socks = palloc(sizeof(pgsocket) * Max(nruns, 1));
	events = palloc(sizeof(uint32) * Max(nruns, 1));
	i = 0;
	foreach(lc, nodes)
	{
		runs[i].node = (TTRegisteredNode *) lfirst(lc);
		/* resolved before anything runs with interrupts held (PG_CATCH) */
		tt_node_resolve(runs[i].node->node_name, runs[i].node->node_port);
		i++;
	}
	qsort(runs, nruns, sizeof(WorkerRun), worker_run_cmp);

	PG_TRY();
	{
		for (i = 0; i < nruns; i++)
		{
			char	   *error;

			runs[i].c = tt_conncache_claim(runs[i].node->node_name,
										   runs[i].node->node_port, &error);
			if (runs[i].c == NULL)
			{
				runs[i].done = true;
				runs[i].result = error;
			}
		}
		for (;;)
		{
			int			n = 0;
			long		timeout = -1;

			for (i = 0; i < nruns; i++)
				worker_run_advance(&runs[i], command);
			for (i = 0; i < nruns; i++)
			{
				WorkerRun  *w = &runs[i];
				pgsocket	sock;

				if (w->done || w->c == NULL)
					continue;
				sock = PQsocket(w->c->conn);
				if (w->c->connecting)
				{
					long		left = tt_ms_until(w->c->connect_deadline);

					if (timeout < 0 || left < timeout)
						timeout = left;
					events[n] = tt_poll_wait_events(w->c->poll);
				}
				else
					events[n] = w->q.events;
				if (sock == PGINVALID_SOCKET)
				{
					timeout = 0;
					continue;
				}
				socks[n++] = sock;
			}
			if (n == 0 && timeout < 0)
				break;
			tt_wait_sockets(n, socks, events, NULL, timeout);
		}
	}
	PG_CATCH();
	{
		TTConn	  **busy;
		int			nbusy = 0;

		HOLD_INTERRUPTS();
		busy = palloc(sizeof(TTConn *) * Max(nruns, 1));
		for (i = 0; i < nruns; i++)
			if (runs[i].c)
				busy[nbusy++] = runs[i].c;
		tt_conncache_cancel_release(busy, nbusy, false);
		for (i = 0; i < nruns; i++)
			runs[i].c = NULL;
		RESUME_INTERRUPTS();
		PG_RE_THROW();
	}
	PG_END_TRY();

	for (i = 0; i < nruns; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(runs[i].node->node_name);
		values[1] = Int32GetDatum(runs[i].node->node_port);
		values[2] = BoolGetDatum(runs[i].success);
		if (runs[i].result)
			values[3] = CStringGetTextDatum(runs[i].result);
		else
			nulls[3] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
