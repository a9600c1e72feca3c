# Copyright: task_tracker authors.
#
# Databases other than the UTF8 default:
#
# * a LATIN1 database (basic; encoding conversions are tested elsewhere):
#   the extension installs there, its tasks run in it (server_encoding
#   LATIN1) and their rows come back;
# * pg_dump / pg_restore of a database with the extension (custom format,
#   and a plain dump through psql): no errors, the extension comes back at
#   its version with the registered nodes (a configuration table), and both
#   the worker protocol and run_job work in the restored database.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('databases');
tt_create_role($node, 'alice');

# ---------------------------------------------------------------- LATIN1
tt_sql($node, q{CREATE DATABASE lat1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
tt_sql($node, 'CREATE EXTENSION task_tracker; GRANT CREATE ON SCHEMA public TO alice', dbname => 'lat1');
tt_sql($node, q{SELECT task_tracker.assign_tasks(1, '{0,1}', ARRAY[
	'SELECT current_setting(''server_encoding''), current_database()',
	'SELECT g, md5(g::text) FROM generate_series(1, 1000) g'])}, user => 'alice', dbname => 'lat1');
tt_wait_job($node, 1, user => 'alice', dbname => 'lat1', tasks => 2);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(1, 0) AS t(e text, d name)', user => 'alice', dbname => 'lat1'),
	'LATIN1|lat1', 'a task of a LATIN1 database runs in that database');
is( tt_sql($node, q{SELECT count(*), sum(g), bool_and(m = md5(g::text))
	FROM task_tracker.task_result(1, 1) AS t(g int, m text)}, user => 'alice', dbname => 'lat1'),
	'1000|500500|t', '... and its rows come back');
is(tt_sql($node, q{SELECT database_name FROM task_tracker.tasks WHERE job_id = 1 LIMIT 1}), 'lat1',
	'the tasks view (from another database) names it');
tt_sql($node, 'SELECT task_tracker.cleanup_job(1)', user => 'alice', dbname => 'lat1');

# ---------------------------------------------------------------- pg_dump / restore
tt_sql($node, 'CREATE DATABASE src');
tt_sql($node, q{CREATE EXTENSION task_tracker;
	CREATE TABLE public.events (id int PRIMARY KEY, v text);
	INSERT INTO public.events SELECT g, 'v' || g FROM generate_series(1, 100) g;
	GRANT SELECT ON public.events TO alice;}, dbname => 'src');
tt_sql($node, sprintf('SELECT task_tracker.add_node(%s, %d)', tt_quote_literal($node->host), $node->port),
	dbname => 'src');
my $version = tt_sql($node, q{SELECT extversion FROM pg_extension WHERE extname = 'task_tracker'}, dbname => 'src');
my $nodes = tt_sql($node, 'SELECT node_id, node_name, node_port, is_active FROM task_tracker.nodes ORDER BY 1',
	dbname => 'src');
my $dump = $node->basedir . '/src.dump';

my ($out, $err) = ('', '');
IPC::Run::run([ $node->installed_command('pg_dump'), '-Fc', '-f', $dump, '-d', $node->connstr('src') ],
	'>', \$out, '2>', \$err);
is($?, 0, 'pg_dump -Fc of a database with the extension');
is($err, '', '... without a message') or diag($err);

sub check_restored
{
	my ($db, $how) = @_;
	is(tt_sql($node, q{SELECT extversion FROM pg_extension WHERE extname = 'task_tracker'}, dbname => $db),
		$version, "$how: the extension is back at version $version");
	is(tt_sql($node, 'SELECT node_id, node_name, node_port, is_active FROM task_tracker.nodes ORDER BY 1', dbname => $db),
		$nodes, "$how: with its registered nodes");
	tt_sql($node, q{SELECT task_tracker.assign_task(7, 0, 'SELECT count(*) FROM public.events')},
		user => 'alice', dbname => $db);
	tt_wait_job($node, 7, user => 'alice', dbname => $db, tasks => 1);
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(7, 0) AS t(n bigint)', user => 'alice', dbname => $db),
		'100', "$how: tasks run in the restored database");
	tt_sql($node, 'SELECT task_tracker.cleanup_job(7)', user => 'alice', dbname => $db);
	for my $executor ('real-time', 'task-tracker')
	{
		is( tt_sql($node, sprintf(q{SET citus.task_executor = '%s';
			SELECT count(*), sum(n) FROM task_tracker.run_job($$
				SELECT format('SELECT count(*) FROM public.events WHERE id %%%% 4 = %%s', s) AS query,
				       ARRAY['%s:%d'] AS placements FROM generate_series(0, 3) s$$) AS t(n bigint)},
				$executor, $node->host, $node->port), user => 'alice', dbname => $db),
			'4|100', "$how: $executor run_job works in the restored database");
	}
	return;
}

tt_sql($node, 'CREATE DATABASE dst1');
($out, $err) = ('', '');
IPC::Run::run([ $node->installed_command('pg_restore'), '--exit-on-error', '-d', $node->connstr('dst1'), $dump ],
	'>', \$out, '2>', \$err);
is($?, 0, 'pg_restore into a new database');
is($err, '', '... without an error or warning') or diag($err);
check_restored('dst1', 'pg_restore');

# a plain dump replayed with psql, stopping at the first error
tt_sql($node, 'CREATE DATABASE dst2');
my $plain = $node->basedir . '/src.sql';
IPC::Run::run([ $node->installed_command('pg_dump'), '-f', $plain, '-d', $node->connstr('src') ], '2>', \$err);
($out, $err) = ('', '');
IPC::Run::run([ $node->installed_command('psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('dst2'),
		'-f', $plain ], '>', \$out, '2>', \$err);
is($?, 0, 'a plain dump replays with psql (ON_ERROR_STOP)');
is($err, '', '... without an error or warning') or diag($err);
check_restored('dst2', 'plain dump');

tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
