/* task_tracker--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION task_tracker UPDATE TO '1.1'" to load this file. \quit

-- A succeeded task's stored result as COPY text, in chunks of whole lines,
-- after its first skip_rows rows; with columns given, the result must have
-- that many columns.  Owner or superuser only (checked in C, like
-- task_result).  The coordinator's task-tracker executor fetches with it.
-- Not STRICT: a NULL id is an error, never a silent no-op.
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
-- Not STRICT: a NULL id is an error, never a silent no-op.
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
