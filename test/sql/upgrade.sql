--
-- upgrade: task_tracker installed at 1.0 and updated to 1.1 has exactly the
-- objects of a fresh 1.1 install, and updated on to 1.2 those of a fresh 1.2
-- install (functions with their signatures, views with their columns,
-- tables, triggers, grants and REVOKEs, extension membership); the library
-- serves the older SQL objects and refuses newer ones with a clear error.
-- Runs in a database of its own.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT current_database() AS regress_db \gset
SET client_min_messages = warning;
DROP DATABASE IF EXISTS regress_tt_upgrade;
RESET client_min_messages;
CREATE DATABASE regress_tt_upgrade;
\c regress_tt_upgrade

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

-- Every object of the extension as text, one line per property that an
-- install script decides.
CREATE FUNCTION public.tt_objects() RETURNS SETOF text
LANGUAGE sql AS $$
	WITH ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'task_tracker')
	-- membership
	SELECT 'member: ' || pg_describe_object(d.classid, d.objid, d.objsubid)
	  FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
	UNION ALL
	-- the extension itself: schema, configuration tables
	SELECT format('extension: schema %s, relocatable %s, config %s, conditions %s',
				  e.extnamespace::regnamespace, e.extrelocatable,
				  (SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
				     FROM unnest(e.extconfig) c),
				  array_to_string(e.extcondition, ','))
	  FROM pg_extension e WHERE e.extname = 'task_tracker'
	UNION ALL
	SELECT format('schema %s: acl %s, owner is superuser %s', n.nspname, n.nspacl,
				  (SELECT rolsuper FROM pg_roles WHERE oid = n.nspowner))
	  FROM pg_namespace n, ext WHERE n.oid = ext.extnamespace
	UNION ALL
	-- functions: signature with defaults, result, properties, body, acl
	SELECT format('function %s(%s) returns %s: kind %s, volatile %s, strict %s, retset %s, '
				  'secdef %s, parallel %s, cost %s, rows %s, language %s, src %s, bin %s, '
				  'config %s, acl %s',
				  p.oid::regproc, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
				  p.prokind, p.provolatile, p.proisstrict, p.proretset, p.prosecdef,
				  p.proparallel, p.procost, p.prorows, l.lanname, p.prosrc, p.probin,
				  p.proconfig, p.proacl)
	  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang, ext
	 WHERE p.pronamespace = ext.extnamespace
	UNION ALL
	-- relations: kind, options, acl
	SELECT format('relation %s: kind %s, persistence %s, options %s, acl %s',
				  c.oid::regclass, c.relkind, c.relpersistence, c.reloptions, c.relacl)
	  FROM pg_class c, ext WHERE c.relnamespace = ext.extnamespace
	UNION ALL
	-- their columns, in order, with types, defaults and acls
	SELECT format('column %s.%s #%s: %s, not null %s, default %s, acl %s',
				  c.oid::regclass, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
				  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attacl)
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
	       LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum, ext
	 WHERE c.relnamespace = ext.extnamespace AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
	  FROM pg_class c, ext WHERE c.relnamespace = ext.extnamespace AND c.relkind = 'v'
	UNION ALL
	SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass,
				  pg_get_constraintdef(co.oid))
	  FROM pg_constraint co, ext WHERE co.connamespace = ext.extnamespace
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid, ext
	 WHERE c.relnamespace = ext.extnamespace
	UNION ALL
	SELECT format('trigger %s', pg_get_triggerdef(t.oid))
	  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, ext
	 WHERE c.relnamespace = ext.extnamespace AND NOT t.tgisinternal
	UNION ALL
	SELECT format('sequence %s: %s %s %s %s %s %s', s.seqrelid::regclass, s.seqtypid::regtype,
				  s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle)
	  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid, ext
	 WHERE c.relnamespace = ext.extnamespace
	UNION ALL
	SELECT format('comment on %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid),
				  d.description)
	  FROM pg_description d JOIN pg_depend dep ON dep.classid = d.classoid AND dep.objid = d.objoid, ext
	 WHERE dep.refclassid = 'pg_extension'::regclass AND dep.refobjid = ext.oid AND dep.deptype = 'e'
$$;

--
-- 1.0, as a server that had it before this library was installed
--
CREATE EXTENSION task_tracker VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
-- version() is the library's: the newest SQL version it serves
SELECT task_tracker.version();
SELECT count(*) AS task_result_copy_exists FROM pg_proc WHERE proname = 'task_result_copy';
SELECT count(*) AS wait_for_task_results_exists FROM pg_proc WHERE proname = 'wait_for_task_results';

-- the 1.0 functions keep working with the newer library
SELECT task_tracker.assign_task(1, 0, $$SELECT 'one' AS a, E'x\ty\\z' AS b, NULL AS c$$);
SELECT task_id, status, result_rows FROM task_tracker.wait_for_tasks(1, 60000);
SELECT * FROM task_tracker.task_result(1, 0) AS t(a text, b text, c text);
SELECT task_tracker.cleanup_job(1);

--
-- the update to 1.1
--
ALTER EXTENSION task_tracker UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
CREATE TABLE public.tt_updated AS SELECT * FROM public.tt_objects() o;

--
-- a fresh 1.1 install has exactly the same objects
--
DROP EXTENSION task_tracker;
CREATE EXTENSION task_tracker VERSION '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
CREATE TABLE public.tt_fresh AS SELECT * FROM public.tt_objects() o;
SELECT count(*) > 50 AS described FROM public.tt_fresh;
SELECT 'only after update' AS "where", * FROM (TABLE public.tt_updated EXCEPT ALL TABLE public.tt_fresh) x
UNION ALL
SELECT 'only in fresh install', * FROM (TABLE public.tt_fresh EXCEPT ALL TABLE public.tt_updated) y;
-- the new functions are there, with their defaults
SELECT pg_get_function_arguments('task_tracker.task_result_copy'::regproc) AS arguments,
       pg_get_function_result('task_tracker.task_result_copy'::regproc) AS result;
SELECT pg_get_function_arguments('task_tracker.wait_for_task_results'::regproc) AS arguments,
       pg_get_function_result('task_tracker.wait_for_task_results'::regproc) AS result;
SELECT count(*) AS connection_pool_exists FROM pg_class WHERE relname = 'connection_pool';

--
-- the update from 1.1 (that came from 1.0) to 1.2, against a fresh 1.2
-- install (the default version)
--
DROP EXTENSION task_tracker;
DROP TABLE public.tt_updated, public.tt_fresh;
CREATE EXTENSION task_tracker VERSION '1.0';
ALTER EXTENSION task_tracker UPDATE TO '1.1';
ALTER EXTENSION task_tracker UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
CREATE TABLE public.tt_updated AS SELECT * FROM public.tt_objects() o;
DROP EXTENSION task_tracker;
CREATE EXTENSION task_tracker;
SELECT extversion FROM pg_extension WHERE extname = 'task_tracker';
CREATE TABLE public.tt_fresh AS SELECT * FROM public.tt_objects() o;
SELECT count(*) > 50 AS described FROM public.tt_fresh;
SELECT 'only after update' AS "where", * FROM (TABLE public.tt_updated EXCEPT ALL TABLE public.tt_fresh) x
UNION ALL
SELECT 'only in fresh install', * FROM (TABLE public.tt_fresh EXCEPT ALL TABLE public.tt_updated) y;
-- the new view, readable by everyone; this database has no node yet
\d task_tracker.connection_pool
SELECT has_table_privilege('public', 'task_tracker.connection_pool', 'SELECT') AS public_can_read;
SELECT count(*) >= 0 AS answers FROM task_tracker.connection_pool;

--
-- an installed version newer than the library serves (updated while the
-- server still runs the old library) is refused by the functions, with a
-- hint; version() still answers
--
UPDATE pg_extension SET extversion = '1.3' WHERE extname = 'task_tracker';
\c regress_tt_upgrade
SELECT task_tracker.version();
SELECT public.tt_try('SELECT task_tracker.task_status(1, 0)');
SELECT public.tt_try('SELECT count(*) FROM task_tracker.tasks');
SELECT public.tt_try($$SELECT task_tracker.assign_task(1, 0, 'SELECT 1')$$);
SELECT public.tt_try($$SELECT task_tracker.add_node('localhost', 1)$$);
SELECT public.tt_try($$SELECT count(*) FROM task_tracker.run_on_workers('SELECT 1')$$);
UPDATE pg_extension SET extversion = '1.2' WHERE extname = 'task_tracker';
\c regress_tt_upgrade
SELECT count(*) FROM task_tracker.tasks WHERE database_name = current_database();

\c :regress_db
DROP DATABASE regress_tt_upgrade WITH (FORCE);
