/* task_tracker--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION task_tracker" to load this file. \quit

--
-- Worker protocol (every node).  See README "SQL reference".
--

CREATE FUNCTION task_tracker.version()
RETURNS text
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'task_tracker_version';

-- Not STRICT: a NULL argument is an error, never a silent no-op.
CREATE FUNCTION task_tracker.assign_task(job_id bigint, task_id integer, query text)
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_assign_task';

CREATE FUNCTION task_tracker.assign_tasks(job_id bigint, task_ids integer[], queries text[])
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_assign_tasks';

CREATE FUNCTION task_tracker.task_status(job_id bigint, task_id integer)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_task_status';

CREATE FUNCTION task_tracker.wait_for_tasks(job_id bigint, timeout_ms integer,
                                            OUT task_id integer, OUT status text,
                                            OUT error text, OUT sqlstate text,
                                            OUT result_rows bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_wait_for_tasks';

CREATE FUNCTION task_tracker.task_result(job_id bigint, task_id integer)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_task_result';

CREATE FUNCTION task_tracker.cleanup_job(job_id bigint)
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_cleanup_job';

CREATE FUNCTION task_tracker.task_list(
    OUT job_id bigint, OUT task_id integer, OUT status text, OUT user_name name,
    OUT database_name name, OUT query text, OUT attempts integer,
    OUT assigned_at timestamptz, OUT started_at timestamptz,
    OUT finished_at timestamptz, OUT backend_pid integer, OUT error text,
    OUT result_rows bigint, OUT error_sqlstate text)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_task_list';

CREATE VIEW task_tracker.tasks AS
    SELECT job_id, task_id, status, user_name, database_name, query, attempts,
           assigned_at, started_at, finished_at, backend_pid, error, result_rows,
           error_sqlstate
    FROM task_tracker.task_list();

CREATE FUNCTION task_tracker.tracker_info(
    OUT pid integer, OUT tasks_tracked integer, OUT tasks_capacity integer,
    OUT tasks_running integer, OUT running_limit integer,
    OUT tasks_succeeded bigint, OUT tasks_failed bigint,
    OUT open_connections integer, OUT last_wakeup timestamptz,
    OUT wakeups bigint, OUT shared_memory_bytes bigint, OUT query_text_bytes bigint)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_tracker_info';

CREATE VIEW task_tracker.tracker AS
    SELECT * FROM task_tracker.tracker_info();

GRANT USAGE ON SCHEMA task_tracker TO PUBLIC;
GRANT SELECT ON task_tracker.tasks, task_tracker.tracker TO PUBLIC;

--
-- Coordinator (node registry, executors, jobs view) follows below.
--
