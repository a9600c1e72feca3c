/* task_tracker--1.2.sql */

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

-- A succeeded task's stored result as COPY text, in chunks of whole lines,
-- after its first skip_rows rows; with columns given, the result must have
-- that many columns.  Owner or superuser only (checked in C, like
-- task_result).  The coordinator's task-tracker executor fetches with it.
CREATE FUNCTION task_tracker.task_result_copy(job_id bigint, task_id integer,
                                              skip_rows bigint DEFAULT 0,
                                              columns integer DEFAULT NULL)
RETURNS SETOF text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_task_result_copy';

-- wait_for_tasks, and with each succeeded task reported its rows (COPY text,
-- as task_result_copy gives them) when they are kept in shared memory and,
-- all together, within max_bytes; with columns given, only results of that
-- many columns.  A task whose rows came along is dropped from the table
-- (dropped = true) when the calling session assigned it; the others are
-- fetched with task_result_copy.  Owner or superuser only (checked in C).
CREATE FUNCTION task_tracker.wait_for_task_results(job_id bigint, timeout_ms integer,
                                                   max_bytes integer DEFAULT 65536,
                                                   columns integer DEFAULT NULL,
                                                   OUT task_id integer, OUT status text,
                                                   OUT error text, OUT sqlstate text,
                                                   OUT result_rows bigint, OUT result text,
                                                   OUT dropped boolean)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_wait_for_task_results';

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

-- Registered worker nodes.  Change it with add_node / remove_node /
-- set_node_active (superuser); the trigger tells every backend to drop its
-- cached copy.
CREATE TABLE task_tracker.node_registry (
    node_id serial PRIMARY KEY,
    node_name text NOT NULL CHECK (node_name <> '' AND octet_length(node_name) < 256),
    node_port integer NOT NULL CHECK (node_port BETWEEN 1 AND 65535),
    is_active boolean NOT NULL DEFAULT true,
    UNIQUE (node_name, node_port)
);
SELECT pg_catalog.pg_extension_config_dump('task_tracker.node_registry', '');
SELECT pg_catalog.pg_extension_config_dump('task_tracker.node_registry_node_id_seq', '');
REVOKE ALL ON task_tracker.node_registry FROM PUBLIC;
GRANT SELECT ON task_tracker.node_registry TO PUBLIC;

CREATE FUNCTION task_tracker.node_registry_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'task_tracker_node_registry_changed';

CREATE TRIGGER node_registry_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON task_tracker.node_registry
    FOR EACH STATEMENT EXECUTE FUNCTION task_tracker.node_registry_changed();

CREATE VIEW task_tracker.nodes AS
    SELECT node_id, node_name, node_port, is_active
    FROM task_tracker.node_registry;

-- Not STRICT: a NULL argument is an error, never a silent no-op.
CREATE FUNCTION task_tracker.add_node(node_name text, node_port integer DEFAULT 5432)
RETURNS integer
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_add_node';

CREATE FUNCTION task_tracker.remove_node(node_name text, node_port integer DEFAULT 5432)
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_remove_node';

CREATE FUNCTION task_tracker.set_node_active(node_name text, node_port integer,
                                             is_active boolean)
RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_set_node_active';

-- The registry functions check superuser themselves (with a clear error);
-- keeping them off PUBLIC as well documents the intent.
REVOKE EXECUTE ON FUNCTION task_tracker.add_node(text, integer),
                           task_tracker.remove_node(text, integer),
                           task_tracker.set_node_active(text, integer, boolean),
                           task_tracker.node_registry_changed()
    FROM PUBLIC;

CREATE FUNCTION task_tracker.run_job(task_list text)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_run_job';

CREATE FUNCTION task_tracker.run_on_workers(command text,
                                            OUT node_name text, OUT node_port integer,
                                            OUT success boolean, OUT result text)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_run_on_workers';

CREATE FUNCTION task_tracker.job_list(
    OUT job_id bigint, OUT pid integer, OUT user_name text, OUT executor text,
    OUT state text, OUT tasks_total integer, OUT tasks_done integer,
    OUT tasks_failed integer, OUT started_at timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_job_list';

CREATE VIEW task_tracker.jobs AS
    SELECT job_id, pid, user_name, executor, state, tasks_total, tasks_done,
           tasks_failed, started_at
    FROM task_tracker.job_list();

GRANT SELECT ON task_tracker.nodes, task_tracker.jobs TO PUBLIC;

-- The coordinator's connection budget per node (citus.max_shared_pool_size):
-- the budget (NULL: no limit), slots in use over all sessions (connections
-- and slots reserved by running jobs), the idle cached connections among
-- them, and the sessions waiting for a slot.
CREATE FUNCTION task_tracker.connection_pool_list(
    OUT node_name text, OUT node_port integer, OUT budget integer,
    OUT in_use integer, OUT idle integer, OUT waiting integer)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'task_tracker_connection_pool';

CREATE VIEW task_tracker.connection_pool AS
    SELECT node_name, node_port, budget, in_use, idle, waiting
    FROM task_tracker.connection_pool_list();

GRANT SELECT ON task_tracker.connection_pool TO PUBLIC;
