/* task_tracker--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION task_tracker UPDATE TO '1.2'" to load this file. \quit

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
