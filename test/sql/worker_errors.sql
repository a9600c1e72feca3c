--
-- worker_errors: every bad input of the worker protocol gets a clear error
-- with a SQLSTATE, and nothing already queued or finished is lost (SPEC §7).
--
-- tt_try() prints "SQLSTATE: message" so that codes are part of the
-- expected output; a few errors are also shown the way psql shows them.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
\pset null '(null)'

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_tt_dave;
CREATE ROLE regress_tt_dave LOGIN;
RESET client_min_messages;

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

-- tt_wait(job): wait until every task of the job has been reported final
-- by wait_for_tasks (consuming the reports, so later output is stable)
-- tt_try_code(sql): like tt_try, without DETAIL and HINT
CREATE FUNCTION public.tt_try_code(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

CREATE FUNCTION public.tt_wait(job bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '60 s';
	expected bigint;
	got bigint := 0;
	n bigint;
BEGIN
	SELECT count(*) INTO expected FROM task_tracker.tasks t WHERE t.job_id = job;
	WHILE got < expected LOOP
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'job % did not finish', job;
		END IF;
		SELECT count(*) INTO n FROM task_tracker.wait_for_tasks(job, 1000);
		got := got + n;
	END LOOP;
END
$$;

-- something queued and finished that no error below may disturb
SET ROLE regress_tt_dave;
SELECT task_tracker.assign_task(500, 0, 'SELECT ''survivor''');
SELECT public.tt_wait(500);
RESET ROLE;

SET ROLE regress_tt_dave;

--
-- NULL arguments
--
SELECT task_tracker.assign_task(NULL, 0, 'SELECT 1');
SELECT public.tt_try($$SELECT task_tracker.assign_task(NULL, 0, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, NULL, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, NULL)$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(NULL, '{0}', '{"SELECT 1"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, NULL, '{"SELECT 1"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, '{0}', NULL)$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, '{0,NULL}', '{"SELECT 1","SELECT 2"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, '{0,1}', ARRAY['SELECT 1', NULL])$$);
SELECT public.tt_try('SELECT task_tracker.task_status(NULL, 0)');
SELECT public.tt_try('SELECT task_tracker.task_status(500, NULL)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(NULL, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(500, NULL)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(NULL, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(500, NULL)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(500, 0, NULL)');
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(NULL, 0) AS t(x text)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(NULL, 0)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(500, NULL)');
SELECT public.tt_try('SELECT task_tracker.cleanup_job(NULL)');

--
-- ids out of range
--
SELECT task_tracker.assign_task(0, 0, 'SELECT 1');
SELECT public.tt_try($$SELECT task_tracker.assign_task(0, 0, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(-1, 0, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, -1, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, '{0,-5}', '{"SELECT 1","SELECT 2"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(-501, '{0}', '{"SELECT 1"}')$$);
SELECT public.tt_try('SELECT task_tracker.task_status(0, 0)');
SELECT public.tt_try('SELECT task_tracker.task_status(-1, 0)');
SELECT public.tt_try('SELECT task_tracker.task_status(500, -1)');
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(0, 0) AS t(x text)');
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(500, -1) AS t(x text)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(-1, 0)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(500, -1)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(0, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(-9223372036854775808, 0)');
-- the edges are fine
SELECT public.tt_try($$SELECT task_tracker.assign_task(9223372036854775807, 2147483647, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(1, 0, 'SELECT 1')$$);

--
-- queries that are empty, do not parse, or are not one plain statement
--
SELECT task_tracker.assign_task(501, 0, '');
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, '')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, E'  \n\t ')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, '-- just a comment')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, ';')$$);
SELECT task_tracker.assign_task(501, 0, 'SELEC 1');
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'SELEC 1')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'SELECT (1')$$);
-- the error position points into the task's query, not the calling statement
SELECT task_tracker.assign_task(501, 0, 'SELECT (1');
SELECT task_tracker.assign_task(501, 0, E'SELECT 1 +\n\n  FROM');
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'SELECT 1; SELECT 2')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'BEGIN')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'COMMIT')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'ROLLBACK')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'START TRANSACTION')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(501, 0, 'SAVEPOINT s')$$);
-- a batch with one bad query adds nothing
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(501, '{0,1,2}', '{"SELECT 1","SELEC 2","SELECT 3"}')$$);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 501;
-- a trailing semicolon and comments are fine; so is a query the parser
-- accepts but that fails when it runs
SELECT public.tt_try($$SELECT task_tracker.assign_task(502, 0, 'SELECT 1;')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(502, 1, E'-- comment\nSELECT 2 /* more */')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_task(502, 2, 'SELECT * FROM no_such_table_here')$$);
SELECT public.tt_wait(502);
SELECT task_id, status, error, error_sqlstate FROM task_tracker.tasks WHERE job_id = 502 ORDER BY 1;

--
-- query text over citus.max_task_query_size
--
SELECT public.tt_try('SET citus.max_task_query_size = 64');
RESET ROLE;
SET citus.max_task_query_size = 64;
SET ROLE regress_tt_dave;
SELECT public.tt_try(format('SELECT task_tracker.assign_task(503, 0, %L)', 'SELECT ' || repeat('1+', 40) || '1'));
SELECT public.tt_try(format('SELECT task_tracker.assign_tasks(503, ''{0,1}'', ARRAY[''SELECT 1'', %L])', 'SELECT ' || repeat('1+', 40) || '1'));
-- exactly at the limit is fine
SELECT public.tt_try(format('SELECT task_tracker.assign_task(503, 0, %L)', 'SELECT ' || repeat('1', 57)));
SELECT length(query) FROM task_tracker.tasks WHERE job_id = 503;
RESET ROLE;
RESET citus.max_task_query_size;
SET ROLE regress_tt_dave;

--
-- assign_tasks: array shapes
--
SELECT task_tracker.assign_tasks(504, '{0,1}', '{"SELECT 1"}');
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(504, '{0,1}', '{"SELECT 1"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(504, '{0}', '{"SELECT 1","SELECT 2"}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(504, '{{0,1},{2,3}}', '{{"SELECT 1","SELECT 2"},{"SELECT 3","SELECT 4"}}')$$);
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(504, '{0,0}', '{"SELECT 1","SELECT 2"}')$$);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 504;
-- an empty batch does nothing
SELECT public.tt_try($$SELECT task_tracker.assign_tasks(504, '{}', '{}')$$);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 504;

--
-- duplicates
--
SELECT task_tracker.assign_task(505, 0, 'SELECT 1');
-- (its status may be assigned, running or succeeded by now: no DETAIL)
SELECT public.tt_try_code($$SELECT task_tracker.assign_task(505, 0, 'SELECT 1')$$);
SELECT public.tt_try_code($$SELECT task_tracker.assign_task(505, 0, 'SELECT 2')$$);
SELECT public.tt_wait(505);
SELECT public.tt_try($$SELECT task_tracker.assign_task(505, 0, 'SELECT 3')$$);
SELECT query, status FROM task_tracker.tasks WHERE job_id = 505;

--
-- unknown tasks and jobs
--
SELECT task_tracker.task_status(505, 7);
SELECT public.tt_try('SELECT task_tracker.task_status(505, 7)');
SELECT public.tt_try('SELECT task_tracker.task_status(999999, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(505, 7) AS t(x int)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(505, 7)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(999999, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(999999, 0)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(9223372036854775806, 2147483647)');
SELECT public.tt_try('SELECT task_tracker.cleanup_job(999999)');

--
-- wait_for_tasks: bad timeout; a timeout returns no rows
--
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_tasks(505, -1)');
SELECT count(*) FROM task_tracker.wait_for_tasks(500, 10);
-- wait_for_task_results: bad timeout, budget, column count; a timeout
-- returns no rows (and drops nothing)
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(505, -1)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(505, 0, -1)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(505, 0, -2147483648)');
SELECT public.tt_try('SELECT * FROM task_tracker.wait_for_task_results(505, 0, 0, -1)');
SELECT count(*) FROM task_tracker.wait_for_task_results(500, 10);
SELECT count(*) FROM task_tracker.tasks WHERE job_id = 500;

--
-- task_result: not succeeded, wrong column lists
--
SELECT task_tracker.assign_task(506, 0, 'SELECT 1/0');
SELECT public.tt_wait(506);
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(506, 0) AS t(x int)');
SELECT public.tt_try('SELECT task_tracker.task_result_copy(506, 0)');
SELECT * FROM task_tracker.task_result(505, 0);
SELECT public.tt_try('SELECT * FROM task_tracker.task_result(505, 0) AS t(x int, y int)');
SELECT public.tt_try($$SELECT * FROM task_tracker.task_result(505, 0) AS t(x date)$$);
SELECT * FROM task_tracker.task_result(505, 0) AS t(x int);
SELECT public.tt_try('SELECT task_tracker.task_result_copy(505, 0, 0, 2)');
SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(505, 0, 0, 1) c;

--
-- the earlier work is intact after all those errors
--
SELECT task_tracker.task_status(500, 0);
SELECT * FROM task_tracker.task_result(500, 0) AS t(s text);

SELECT task_tracker.cleanup_job(j) FROM unnest('{1,500,501,502,503,504,505,506,9223372036854775807}'::bigint[]) j;
RESET ROLE;
SELECT count(*) AS tasks_left FROM task_tracker.tasks;

DROP FUNCTION public.tt_try(text);
DROP FUNCTION public.tt_try_code(text);
DROP FUNCTION public.tt_wait(bigint);
DROP ROLE regress_tt_dave;
