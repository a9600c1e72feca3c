--
-- Coordinator API: node registry, run_job with both executors,
-- run_on_workers, the jobs view, settings, and their errors.
-- The regression instance registers itself as its only worker node (over
-- its Unix socket); node names and ports are masked in the output.
--
\set VERBOSITY terse
SELECT current_setting('unix_socket_directories') AS sockdir,
       current_setting('port') AS port \gset
SELECT :'sockdir' || ':' || :'port' AS self \gset

-- run a statement, report its outcome with SQLSTATE; mask node names
CREATE FUNCTION pg_temp.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' ||
        replace(replace(SQLERRM, current_setting('unix_socket_directories'), 'SOCKDIR'),
                current_setting('port'), 'PORT');
END $$;

-- a task list of one task, placed on this node
CREATE FUNCTION pg_temp.one_task(query text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('SELECT %L::text AS query, ARRAY[%L] AS placements', query,
                  current_setting('unix_socket_directories') || ':' || current_setting('port'))
$$;

-- settings
SHOW citus.task_executor;
SHOW citus.max_assign_task_batch_size;
SHOW citus.max_connections_per_node;
SET citus.task_executor = 'no-such-executor';
SET citus.max_assign_task_batch_size = 0;
SET citus.unknown_setting_of_ours = 1;

-- node registry
SELECT task_tracker.add_node(:'sockdir', :port) > 0 AS added;
SELECT node_name = :'sockdir' AS name_ok, node_port = :port AS port_ok, is_active
FROM task_tracker.nodes;
SELECT pg_temp.try(format('SELECT task_tracker.add_node(%L, %s)', :'sockdir', :port));
SELECT task_tracker.add_node(NULL, 5432);
SELECT task_tracker.add_node('h', NULL);
SELECT task_tracker.add_node('', 5432);
SELECT task_tracker.add_node('h', 0);
SELECT task_tracker.add_node('h', 70000);
SELECT task_tracker.remove_node('no-such-host', 5432);
SELECT task_tracker.set_node_active('no-such-host', 5432, false);
SELECT task_tracker.add_node('other-host') > 0 AS added_with_default_port;
SELECT node_name, node_port, is_active FROM task_tracker.nodes WHERE node_name = 'other-host';
SELECT task_tracker.remove_node('other-host');
SELECT count(*) FROM task_tracker.nodes;

-- only superusers change the registry; everyone may read it
CREATE ROLE tt_coord_user LOGIN;
SET ROLE tt_coord_user;
SELECT task_tracker.add_node('h', 5432);
SELECT task_tracker.remove_node('h', 5432);
SELECT count(*) FROM task_tracker.nodes;
RESET ROLE;

-- run_job: bad input is refused before any work starts
SELECT * FROM task_tracker.run_job(NULL) AS t(n int);
SELECT task_tracker.run_job('SELECT 1');
SELECT * FROM task_tracker.run_job('SELECT 1 AS query') AS t(n int);
SELECT * FROM task_tracker.run_job('CREATE TEMP TABLE x (a int)') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{a}''::varchar[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT NULL::text AS query, ''{a:1}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''  ''::text AS query, ''{a:1}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, NULL::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{nohostport}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{h:99999}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{unregistered-host:5432}''::text[] AS placements') AS t(n int);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ARRAY[NULL]::text[] AS placements') AS t(n int);
-- an empty task list is an empty result
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ''{}''::text[] AS placements WHERE false') AS t(n int);

-- jobs on this node, both executors, the same rows
CREATE TABLE tt_tasks AS
SELECT format($q$SELECT %s::int AS n, %L::text AS t, %s::numeric(8,2) AS x,
              %s::bytea AS b, NULLIF(%s, 3)::int AS maybe$q$,
              s, E'row ' || s || E'\ttab\nnewline\\backslash', s * 1.25,
              quote_literal('\x' || lpad(to_hex(s), 4, '0')), s) AS query,
       ARRAY[:'self'] AS placements
FROM generate_series(1, 6) s;

SET citus.task_executor = 'real-time';
SELECT * FROM task_tracker.run_job('SELECT * FROM tt_tasks')
    AS t(n int, t text, x numeric(8,2), b bytea, maybe int) ORDER BY n;
SET citus.task_executor = 'task-tracker';
SELECT * FROM task_tracker.run_job('SELECT * FROM tt_tasks')
    AS t(n int, t text, x numeric(8,2), b bytea, maybe int) ORDER BY n;

-- a second placement that is down: tasks fail over to the next one
SELECT task_tracker.add_node('localhost', 1) > 0 AS added_dead_node;
SET citus.node_connection_timeout = '2s';
SET citus.task_executor = 'real-time';
SELECT sum(n) FROM task_tracker.run_job(format(
    'SELECT ''SELECT 1''::text AS query, ARRAY[''localhost:1'', %L] AS placements FROM generate_series(1, 4)',
    :'self')) AS t(n int);
SET citus.task_executor = 'task-tracker';
SELECT sum(n) FROM task_tracker.run_job(format(
    'SELECT ''SELECT 1''::text AS query, ARRAY[''localhost:1'', %L] AS placements FROM generate_series(1, 4)',
    :'self')) AS t(n int);
-- no placement left: the job fails with the connection error
SELECT pg_temp.try('SELECT * FROM task_tracker.run_job(''SELECT ''''SELECT 1''''::text AS query, ARRAY[''''localhost:1''''] AS placements'') AS t(n int)') ~ '^08' AS connection_error;
-- an inactive node may not be targeted
SELECT task_tracker.set_node_active('localhost', 1, false);
SELECT * FROM task_tracker.run_job('SELECT ''SELECT 1''::text AS query, ARRAY[''localhost:1''] AS placements') AS t(n int);
SELECT task_tracker.remove_node('localhost', 1);
RESET citus.node_connection_timeout;

-- a task that fails with an SQL error fails the job with the remote error
SET citus.task_executor = 'real-time';
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT 1/0')));
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELEKT 1')));
-- rows that do not fit the column definition list
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT 1, 2')));
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT ''abc''')));
SET citus.task_executor = 'task-tracker';
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT 1/0')));
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELEKT 1')));
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT 1, 2')));
SELECT pg_temp.try(format('SELECT * FROM task_tracker.run_job(%L) AS t(n int)',
                          pg_temp.one_task('SELECT ''abc''')));
-- statements without rows work as tasks
SELECT count(*) FROM task_tracker.run_job(pg_temp.one_task('CREATE TABLE made_by_task (a int)')) AS t(n int);
SELECT count(*) FROM made_by_task;
DROP TABLE made_by_task;
RESET citus.task_executor;

-- run_on_workers
SELECT node_name = :'sockdir' AS is_self, success, result
FROM task_tracker.run_on_workers('SELECT 40 + 2');
SELECT success, result FROM task_tracker.run_on_workers('SELECT 1/0');
SELECT success, result FROM task_tracker.run_on_workers('CREATE TEMP TABLE rw (a int)');
SELECT task_tracker.run_on_workers(NULL);

-- a non-superuser runs jobs as itself
SELECT pg_temp.one_task('SELECT current_user::text') AS user_task \gset
SET ROLE tt_coord_user;
SET citus.task_executor = 'real-time';
SELECT * FROM task_tracker.run_job(:'user_task') AS t(u text);
SET citus.task_executor = 'task-tracker';
SELECT * FROM task_tracker.run_job(:'user_task') AS t(u text);
RESET ROLE;

-- nothing is left behind
SELECT count(*) AS jobs FROM task_tracker.jobs;
SELECT count(*) AS tasks FROM task_tracker.tasks;

DROP TABLE tt_tasks;
SELECT task_tracker.remove_node(:'sockdir', :port);
DROP ROLE tt_coord_user;
