--
-- worker_api: the worker protocol of SPEC §4.1 on one node, as the tracker
-- runs it: assign, status, wait, results, views, cleanup.
--
-- Output must be deterministic: no pids, ports or timestamps are printed.
-- Waits use task_tracker.wait_for_tasks (tt_reports below), never sleeps.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
\pset null '(null)'

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_tt_alice;
DROP ROLE IF EXISTS regress_tt_bob;
DROP ROLE IF EXISTS regress_tt_carol;
CREATE ROLE regress_tt_alice LOGIN;
CREATE ROLE regress_tt_bob LOGIN;
CREATE ROLE regress_tt_carol LOGIN;
GRANT pg_read_all_stats TO regress_tt_carol;
RESET client_min_messages;

CREATE TABLE public.tt_items (id int, name text, price numeric);
INSERT INTO public.tt_items VALUES (1, 'apple', 1.25), (2, 'pear', 2.50), (3, 'plum', NULL);
GRANT SELECT, INSERT ON public.tt_items TO regress_tt_alice;

-- tt_reports(job, n): collect the reports of wait_for_tasks until n tasks
-- of the job have been reported, sorted by task id (each final task is
-- reported exactly once).
CREATE TYPE public.tt_report AS
	(task_id int, status text, error text, sqlstate text, result_rows bigint);
CREATE FUNCTION public.tt_reports(job bigint, expected int)
RETURNS SETOF public.tt_report
LANGUAGE plpgsql AS $$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '60 s';
	acc public.tt_report[] := '{}';
	batch public.tt_report[];
BEGIN
	LOOP
		SELECT coalesce(array_agg(ROW(w.task_id, w.status, w.error, w.sqlstate,
									  w.result_rows)::public.tt_report), '{}')
		  INTO batch
		  FROM task_tracker.wait_for_tasks(job, 1000) w;
		acc := acc || batch;
		EXIT WHEN cardinality(acc) >= expected;
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'only % of % tasks of job % reported',
				cardinality(acc), expected, job;
		END IF;
	END LOOP;
	RETURN QUERY SELECT * FROM unnest(acc) u ORDER BY u.task_id;
END
$$;

-- tt_results(job, n, max_bytes, columns): the same through
-- wait_for_task_results, with the rows that came along (tabs shown as |,
-- newlines as $)
CREATE TYPE public.tt_result AS
	(task_id int, status text, sqlstate text, result_rows bigint, result text, dropped bool);
CREATE FUNCTION public.tt_results(job bigint, expected int, max_bytes int DEFAULT 65536,
								  ncols int DEFAULT NULL)
RETURNS SETOF public.tt_result
LANGUAGE plpgsql AS $$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '60 s';
	acc public.tt_result[] := '{}';
	batch public.tt_result[];
BEGIN
	LOOP
		SELECT coalesce(array_agg(ROW(w.task_id, w.status, w.sqlstate, w.result_rows,
									  translate(w.result, E'\t\n', '|$'),
									  w.dropped)::public.tt_result), '{}')
		  INTO batch
		  FROM task_tracker.wait_for_task_results(job, 1000, max_bytes, ncols) w;
		acc := acc || batch;
		EXIT WHEN cardinality(acc) >= expected;
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'only % of % tasks of job % reported',
				cardinality(acc), expected, job;
		END IF;
	END LOOP;
	RETURN QUERY SELECT * FROM unnest(acc) u ORDER BY u.task_id;
END
$$;

-- tt_try(sql): run a statement, return 'ok' or 'SQLSTATE: message'
CREATE FUNCTION public.tt_try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	d text;
	h text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
	RETURN SQLSTATE || ': ' || SQLERRM
		|| CASE WHEN d <> '' THEN ' DETAIL: ' || d ELSE '' END
		|| CASE WHEN h <> '' THEN ' HINT: ' || h ELSE '' END;
END
$$;

--
-- The objects of the worker protocol
--
SELECT task_tracker.version();
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
SELECT extversion = task_tracker.version() AS versions_match
  FROM pg_extension WHERE extname = 'task_tracker';
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result
  FROM pg_proc p
 WHERE p.pronamespace = 'task_tracker'::regnamespace
   AND p.proname IN ('assign_task', 'assign_tasks', 'task_status', 'wait_for_tasks',
                     'wait_for_task_results', 'task_result', 'task_result_copy', 'cleanup_job',
                     'version', 'task_list', 'tracker_info')
 ORDER BY 1;
\d task_tracker.tasks
\d task_tracker.tracker
SELECT pid > 0 AS tracker_running, tasks_capacity, running_limit,
       open_connections >= 0 AS has_connections_count,
       shared_memory_bytes > 0 AS has_shared_memory
  FROM task_tracker.tracker;
SHOW citus.max_tracked_tasks_per_node;
SHOW citus.max_running_tasks_per_node;
SHOW citus.task_max_attempts;
SHOW citus.max_task_query_size;

--
-- A job of alice: queries, an INSERT, failing tasks
--
SET ROLE regress_tt_alice;
SELECT task_tracker.assign_task(1, 0, 'SELECT id, name, price FROM public.tt_items WHERE id <= 3 ORDER BY id');
SELECT task_tracker.assign_tasks(1, '{1,2,3,4,5}', ARRAY[
	'INSERT INTO public.tt_items VALUES (4, ''from a task'', 9.99)',
	'SELECT 1/0',
	'SELECT * FROM public.tt_items WHERE false',
	'SELECT current_user, session_user',
	'SELECT * FROM public.no_such_table']);
SELECT * FROM public.tt_reports(1, 6);
-- nothing is reported twice
SELECT * FROM task_tracker.wait_for_tasks(1, 0);
SELECT task_id, task_tracker.task_status(1, task_id) FROM generate_series(0, 5) task_id;
RESET ROLE;

SELECT job_id, task_id, status, user_name, database_name = current_database() AS this_db,
       query, attempts, error, error_sqlstate, result_rows,
       backend_pid IS NULL AS no_backend,
       assigned_at <= started_at AND started_at <= finished_at AS times_in_order
  FROM task_tracker.tasks WHERE job_id = 1 ORDER BY task_id;
SELECT * FROM public.tt_items ORDER BY id;

-- results, through a column definition list
SET ROLE regress_tt_alice;
SELECT * FROM task_tracker.task_result(1, 0) AS t(id int, name text, price numeric);
SELECT * FROM task_tracker.task_result(1, 3) AS t(id int, name text, price numeric);
SELECT * FROM task_tracker.task_result(1, 4) AS t(cu name, su name);
-- an INSERT succeeds with no rows
SELECT count(*) FROM task_tracker.task_result(1, 1) AS t(x int);
-- results can be read again
SELECT count(*) FROM task_tracker.task_result(1, 0) AS t(id int, name text, price numeric);
RESET ROLE;

--
-- Values of many types, NULLs and awkward text survive the round trip
--
SET ROLE regress_tt_alice;
SELECT task_tracker.assign_task(2, 0, $q$
	SELECT 1::int2 AS a, 2::int8 AS b, 1.5::float8 AS c, 12345678901234567890.123::numeric AS d,
	       E'tab\there\nnewline \\ backslash "quote" ''single''' AS e,
	       NULL::text AS f, '\x00ff10'::bytea AS g, ARRAY[1, NULL, 3] AS h,
	       '2024-02-29'::date AS i, '{"k": [1, "v"]}'::jsonb AS j, true AS k, '' AS l
$q$);
SELECT task_tracker.assign_task(2, 1, 'SELECT g, CASE WHEN g % 2 = 0 THEN NULL ELSE g::text END FROM generate_series(1, 6) g');
SELECT * FROM public.tt_reports(2, 2);
SELECT * FROM task_tracker.task_result(2, 0)
	AS t(a int2, b int8, c float8, d numeric, e text, f text, g bytea, h int[], i date, j jsonb, k bool, l text);
SELECT e = E'tab\there\nnewline \\ backslash "quote" ''single''' AS text_exact, f IS NULL AS null_kept,
       l = '' AS empty_not_null
  FROM task_tracker.task_result(2, 0)
	AS t(a int2, b int8, c float8, d numeric, e text, f text, g bytea, h int[], i date, j jsonb, k bool, l text);
SELECT * FROM task_tracker.task_result(2, 1) AS t(g int, s text);
-- columns may be read as text
SELECT * FROM task_tracker.task_result(2, 1) AS t(g text, s text) WHERE g::int > 4;
-- the stored result as COPY text (what the coordinator fetches): whole
-- lines, escapes and NULLs as COPY writes them (shown with tabs as | and
-- newlines as $)
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(2, 0) c;
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(2, 1) c;
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(2, 1, 4) c;
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(2, 1, 6) c;
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(2, 1, 100, 2) c;
SELECT public.tt_try('SELECT task_tracker.task_result_copy(2, 1, 0, 3)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(2, 1, -1)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(2, 1, NULL)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(0, 1)');
RESET ROLE;

--
-- Re-assigning: failed tasks of your own restart, others are duplicates
--
SET ROLE regress_tt_alice;
SELECT task_tracker.assign_task(1, 2, 'SELECT 2/1');
SELECT * FROM public.tt_reports(1, 1);
SELECT task_tracker.task_status(1, 2);
SELECT attempts, error, error_sqlstate FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 2;
SELECT * FROM task_tracker.task_result(1, 2) AS t(x int);
-- a succeeded task cannot be assigned again
SELECT task_tracker.assign_task(1, 0, 'SELECT 1');
SELECT public.tt_try($$SELECT task_tracker.assign_task(1, 0, 'SELECT 1')$$);
-- nor in a batch; the batch is all-or-nothing
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(1, '{10,0}', '{"SELECT 10","SELECT 0"}')$$);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 10;
RESET ROLE;

--
-- Other users (SPEC §8)
--
SET ROLE regress_tt_bob;
-- bob sees alice's tasks, but not their query text or errors
SELECT job_id, task_id, status, user_name, query, error
  FROM task_tracker.tasks WHERE job_id = 1 ORDER BY task_id;
SELECT public.tt_try('SELECT task_tracker.task_status(1, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(1, 0) AS t(id int, name text, price numeric)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(1, 0)');
SELECT public.tt_try('SELECT task_tracker.cleanup_job(1)');
SELECT public.tt_try($$SELECT task_tracker.assign_task(1, 99, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(1, 2, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(1, '{98}', '{"SELECT 1"}')$$);
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(1, 0)');
-- bob's own job works next to alice's
SELECT task_tracker.assign_task(3, 0, 'SELECT current_user');
SELECT * FROM public.tt_reports(3, 1);
SELECT * FROM task_tracker.task_result(3, 0) AS t(u name);
RESET ROLE;

-- alice cannot read bob's result; a pg_read_all_stats member sees texts
SET ROLE regress_tt_alice;
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(3, 0) AS t(u name)');
RESET ROLE;
SET ROLE regress_tt_carol;
SELECT job_id, task_id, user_name, query, error
  FROM task_tracker.tasks WHERE job_id IN (1, 3) AND task_id IN (0, 5) ORDER BY 1, 2;
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(3, 0) AS t(u name)');
RESET ROLE;

-- a superuser sees everything, may read and clean up any job
SELECT * FROM task_tracker.task_result(3, 0) AS t(u name);
SELECT task_tracker.task_status(3, 0);
SELECT task_tracker.cleanup_job(3);

--
-- wait_for_task_results: reports with the rows of small results; a task
-- whose rows came along is dropped at once (this session assigned it)
--
SET ROLE regress_tt_alice;
SELECT task_tracker.assign_tasks(4, '{0,1,2,3,4}', ARRAY[
	'SELECT id, name, price FROM public.tt_items WHERE id <= 3 ORDER BY id',
	'DO $do$ BEGIN NULL; END $do$',
	'SELECT 1/0',
	'SELECT g, repeat(''x'', 100) FROM generate_series(1, 400) g',
	$q$SELECT E'tab\there\nnewline \\ backslash' AS e, NULL::text AS f, '' AS g, '\x00ff'::bytea AS h$q$]);
SELECT * FROM public.tt_results(4, 5);
-- left in the table: the failed task and the result in a file (fetched
-- with task_result_copy), for cleanup_job
SELECT task_id, status FROM task_tracker.tasks WHERE job_id = 4 ORDER BY task_id;
SELECT count(*), sum(length(c)) FROM task_tracker.task_result_copy(4, 3) c;
SELECT public.tt_try('SELECT task_tracker.task_status(4, 0)');
-- nothing is reported twice
SELECT count(*) FROM task_tracker.wait_for_task_results(4, 0);
-- a result over the budget, or of another width than asked, is reported
-- without its rows and stays for task_result_copy (which says why)
SELECT task_tracker.assign_task(5, 0, 'SELECT repeat(''y'', 200), 2');
SELECT * FROM public.tt_results(5, 1, 100);
SELECT task_tracker.assign_task(5, 1, 'SELECT 1, 2');
SELECT * FROM public.tt_results(5, 1, 65536, 3);
SELECT public.tt_try('SELECT task_tracker.task_result_copy(5, 1, 0, 3)');
SELECT task_tracker.assign_task(5, 2, 'SELECT 1, 2');
SELECT * FROM public.tt_results(5, 1, 65536, 2);
SELECT task_id, status FROM task_tracker.tasks WHERE job_id = 5 ORDER BY task_id;
SELECT task_tracker.cleanup_job(5);
-- a job whose last task is dropped is gone, as after cleanup_job
SELECT task_tracker.assign_task(6, 0, 'SELECT 6');
SELECT * FROM public.tt_results(6, 1);
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(6, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(6, 0)');
-- ... and its id can be used again
SELECT task_tracker.assign_task(6, 0, 'SELECT 66');
SELECT * FROM public.tt_results(6, 1);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 6;
-- rows are given only when they reach the client unconverted
SELECT CASE WHEN getdatabaseencoding() = 'LATIN1' THEN 'UTF8' ELSE 'LATIN1' END AS other_encoding \gset
SET client_encoding = :'other_encoding';
SELECT task_tracker.assign_task(7, 0, 'SELECT 7');
SELECT * FROM public.tt_results(7, 1);
RESET client_encoding;
SELECT * FROM task_tracker.task_result(7, 0) AS t(x int);
SELECT task_tracker.cleanup_job(7);
RESET ROLE;
-- a task of another user in alice's job (a superuser may assign there):
-- alice learns its status, not its rows, and it is not dropped
SET ROLE regress_tt_alice;
SELECT task_tracker.assign_task(8, 0, 'SELECT ''alice''');
RESET ROLE;
SELECT task_tracker.assign_task(8, 1, 'SELECT ''superuser''');
SET ROLE regress_tt_alice;
SELECT * FROM public.tt_results(8, 2);
SELECT task_id, user_name FROM task_tracker.tasks WHERE job_id = 8;
RESET ROLE;
-- bob cannot wait for, see the rows of, or drop alice's tasks
SET ROLE regress_tt_bob;
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(4, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(8, 0)');
RESET ROLE;
SELECT task_id, status FROM task_tracker.tasks WHERE job_id IN (4, 8) ORDER BY job_id, task_id;
SET ROLE regress_tt_alice;
SELECT task_tracker.cleanup_job(4);
SELECT task_tracker.cleanup_job(8);
RESET ROLE;

--
-- cleanup_job
--
SET ROLE regress_tt_alice;
SELECT task_tracker.cleanup_job(1);
SELECT task_tracker.cleanup_job(2);
SELECT count(*) FROM task_tracker.tasks WHERE job_id IN (1, 2, 3);
SELECT public.tt_try('SELECT task_tracker.task_status(1, 0)');
-- unknown job: no-op
SELECT task_tracker.cleanup_job(424242);
-- a job id can be used again after cleanup
SELECT task_tracker.assign_task(1, 0, 'SELECT 42');
SELECT * FROM public.tt_reports(1, 1);
SELECT * FROM task_tracker.task_result(1, 0) AS t(x int);
SELECT task_tracker.cleanup_job(1);
RESET ROLE;

-- the tracker counted the work
SELECT tasks_succeeded >= 9 AS counted_successes, tasks_failed >= 2 AS counted_failures,
       tasks_tracked
  FROM task_tracker.tracker;

-- nothing left behind
SELECT count(*) AS tasks_left FROM task_tracker.tasks;
DROP FUNCTION public.tt_reports(bigint, int);
DROP FUNCTION public.tt_results(bigint, int, int, int);
DROP TYPE public.tt_result;
DROP FUNCTION public.tt_try(text);
DROP TYPE public.tt_report;
DROP TABLE public.tt_items;
DROP ROLE regress_tt_alice;
DROP ROLE regress_tt_bob;
DROP ROLE regress_tt_carol;
