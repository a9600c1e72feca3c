
# citus.task_tracker_use_background_workers: on a server with scram-sha-256
# for every local and host connection and no .pgpass (no password in the
# server's environment either), tasks of two roles run in background workers
# attached as their owners: results, row counts, errors with SQLSTATE,
# DETAIL and HINT, VACUUM and CREATE INDEX CONCURRENTLY, the role's
# statement_timeout, pg_stat_activity, cancel, pg_ctl restart, the login
# rules (NOLOGIN, CONNECT), and a worker slot shortage that tasks wait out.
# Last, the same server with the setting off cannot run a task at all
# (what the old code did: a libpq session needs a password).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# launcher + tracker + two task workers: the third task waits for a slot
my $node = tt_node('bgw', conf => q{
citus.task_tracker_use_background_workers = on
max_worker_processes = 4
max_parallel_workers_per_gather = 0
citus.max_running_tasks_per_node = 4
citus.node_connection_timeout = '500ms'
});

my $su = tt_sql($node, 'SELECT current_user');
my %pw = ($su => 'su-pw-1', alice => 'alice-pw-2', bob => 'bob-pw-3', dave => 'dave-pw-4');

tt_sql($node, q{
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE dave LOGIN;
CREATE ROLE nolog NOLOGIN;
ALTER ROLE bob SET statement_timeout = '300ms';
CREATE TABLE public.items (id int, name text);
INSERT INTO public.items VALUES (1, 'tab	and\\back'), (2, NULL), (3, 'ünï');
GRANT SELECT ON public.items TO alice, bob;
CREATE TABLE public.log (x int);
ALTER TABLE public.log OWNER TO alice;
GRANT CREATE ON SCHEMA public TO alice;
CREATE DATABASE noconn;
REVOKE CONNECT ON DATABASE noconn FROM PUBLIC;
});
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'noconn');
for my $r (sort keys %pw)
{
	tt_sql($node, "ALTER ROLE " . tt_quote_ident($r) . " PASSWORD " . tt_quote_literal($pw{$r}));
}

# scram-sha-256 everywhere; the test's own clients give passwords in the
# environment of psql only, never of the server
open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die $!;
print $hba "local all all scram-sha-256\n";
print $hba "host all all 127.0.0.1/32 scram-sha-256\n";
print $hba "host all all ::1/128 scram-sha-256\n";
close($hba);
$node->reload;
$ENV{PGPASSWORD} = $pw{$su};
$ENV{PGPASSFILE} = '/nonexistent';

sub as
{
	my ($user, $sql, %o) = @_;
	local $ENV{PGPASSWORD} = $pw{$user};
	return tt_sql($node, $sql, user => $user, %o);
}

sub wait_as
{
	my ($user, $job, %o) = @_;
	local $ENV{PGPASSWORD} = $pw{$user};
	return tt_wait_job($node, $job, user => $user, %o);
}

# the server's own environment holds no password
my $environ = slurp_file("/proc/" . $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'task tracker'") . "/environ");
unlike($environ, qr/PGPASSWORD|PGPASSFILE/, 'the tracker has no password in its environment');

# --- results, row counts, errors, VACUUM, CREATE INDEX CONCURRENTLY
as('alice', q{SELECT task_tracker.assign_tasks(1, '{0,1,2,3,4,5,6,7,8}', ARRAY[
	'SELECT current_user, session_user, current_setting(''application_name'')',
	'SELECT id, name FROM public.items ORDER BY id',
	'INSERT INTO public.log VALUES (1), (2), (3)',
	'SELECT 1/0',
	$x$DO $d$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint', ERRCODE = 'P0001'; END $d$$x$,
	'VACUUM public.log',
	'CREATE INDEX CONCURRENTLY log_x ON public.log (x)',
	'SHOW search_path',
	'INSERT INTO public.log VALUES (7) RETURNING x * 2'])});
as('bob', q{SELECT task_tracker.assign_tasks(2, '{0,1}', ARRAY[
	'SELECT current_user, current_setting(''statement_timeout'')',
	'SELECT pg_sleep(5)'])});
# Waited for with short statements (poll_query_until), not one long wait:
# CREATE INDEX CONCURRENTLY waits for every transaction holding an older
# snapshot, and a waiting statement holds one until the job is done.
ok($node->poll_query_until('postgres',
		"SELECT count(*) FILTER (WHERE status IN $TaskTrackerTest::FINAL) = 9 FROM task_tracker.tasks WHERE job_id = 1"),
	'job 1 finished');
# (waited for by the superuser: bob's statement_timeout would end the wait)
tt_wait_job($node, 2, tasks => 2);

is(as('alice', 'SELECT a, b, c FROM task_tracker.task_result(1, 0) AS t(a name, b name, c text)'),
	'alice|alice|task_tracker', "alice's task runs as alice, application_name task_tracker");
is(as('alice', 'SELECT id, coalesce(name, \'<null>\') FROM task_tracker.task_result(1, 1) AS t(id int, name text)'),
	"1|tab\tand\\back\n2|<null>\n3|ünï", 'rows come back as they are');
is(as('alice', 'SELECT string_agg(c, \'\') FROM task_tracker.task_result_copy(1, 1) AS c'),
	"1\ttab\\tand\\\\back\n2\t\\N\n3\tünï\n", 'stored as COPY text, byte for byte');
is(as('alice', 'SELECT task_id, status, result_rows, error_sqlstate FROM task_tracker.tasks WHERE job_id = 1 ORDER BY 1'),
	"0|succeeded|1|\n1|succeeded|3|\n2|succeeded|3|\n3|permanently_failed||22012\n4|permanently_failed||P0001\n5|succeeded|0|\n6|succeeded|0|\n7|succeeded|1|\n8|succeeded|1|",
	'statuses, row counts and SQLSTATEs');
is(as('alice', 'SELECT error FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 4'),
	"boom\nDETAIL:  the detail\nHINT:  the hint", 'an error keeps its DETAIL and HINT');
is(as('alice', 'SELECT error FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 3'),
	'division by zero', 'the error message as a session gets it');
is(tt_sql($node, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.log_x'::regclass"),
	't', 'CREATE INDEX CONCURRENTLY ran (outside a transaction block)');
is(as('alice', 'SELECT v FROM task_tracker.task_result(1, 7) AS t(v text)'),
	'"$user", public', 'a statement that cannot run as COPY returns its rows');
is(as('alice', 'SELECT v FROM task_tracker.task_result(1, 8) AS t(v int)'),
	'14', 'INSERT ... RETURNING');
is(as('bob', 'SELECT u, t FROM task_tracker.task_result(2, 0) AS r(u name, t text)'),
	'bob|300ms', "bob's task has bob's settings");
is(as('bob', 'SELECT status, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = 2 AND task_id = 1'),
	'permanently_failed|57014|canceling statement due to statement timeout',
	"the role's statement_timeout applies");
as('alice', 'SELECT task_tracker.cleanup_job(1)');
as('bob', 'SELECT task_tracker.cleanup_job(2)');

# --- pg_stat_activity, then cancel
as('alice', q{SELECT task_tracker.assign_task(3, 0, 'SELECT pg_sleep(60)')});
ok($node->poll_query_until('postgres', q{
	SELECT usename = 'alice' AND datname = 'postgres' AND application_name = 'task_tracker'
	  AND query LIKE '%pg_sleep(60)%' AND state = 'active'
	FROM pg_stat_activity WHERE backend_type = 'task tracker worker'}),
	'the running task shows in pg_stat_activity as its owner');
my $t0 = time;
as('alice', 'SELECT task_tracker.cleanup_job(3)');
ok(time - $t0 < 10, 'cleanup_job of a running task returns at once');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'task tracker worker'"),
	'the canceled task worker is gone');

# --- pg_ctl restart: results persist, a running task runs again, once
as('alice', q{SELECT task_tracker.assign_tasks(4, '{0,1}', ARRAY['SELECT 42',
	'INSERT INTO public.log SELECT 100 FROM pg_sleep(2)'])});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'task tracker worker' AND query LIKE '%pg_sleep(2)%'}),
	'the slow task runs');
{
	local $ENV{PGPASSWORD};
	delete $ENV{PGPASSWORD};
	tt_restart_fast($node);
}
wait_as('alice', 4, tasks => 2);
is(as('alice', 'SELECT n FROM task_tracker.task_result(4, 0) AS t(n int)'),
	'42', 'a result survives pg_ctl restart');
is(as('alice', 'SELECT status, attempts FROM task_tracker.tasks WHERE job_id = 4 AND task_id = 1'),
	'succeeded|2', 'the task stopped by the restart ran again');
is(tt_sql($node, 'SELECT count(*) FROM public.log WHERE x = 100'), '1',
	'its statement committed once');
as('alice', 'SELECT task_tracker.cleanup_job(4)');

# --- the login rules: a role without LOGIN, a database without CONNECT
tt_sql($node, q{SET ROLE nolog; SELECT task_tracker.assign_task(5, 0, 'SELECT 1')});
tt_wait_job($node, 5, tasks => 1);
is(tt_sql($node, 'SELECT status, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = 5'),
	'permanently_failed|28000|role "nolog" is not permitted to log in',
	'a role without LOGIN cannot run tasks');
tt_sql($node, 'SET ROLE nolog; SELECT task_tracker.cleanup_job(5)');

tt_sql($node, q{SET ROLE dave; SELECT task_tracker.assign_task(6, 0, 'SELECT 1')}, dbname => 'noconn');
tt_wait_job($node, 6, tasks => 1, dbname => 'noconn');
is(tt_sql($node, 'SELECT status, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = 6', dbname => 'noconn'),
	"permanently_failed|42501|permission denied for database \"noconn\"\nDETAIL:  User does not have CONNECT privilege.",
	'a role without CONNECT on the database cannot run tasks there');
tt_sql($node, 'SET ROLE dave; SELECT task_tracker.cleanup_job(6)', dbname => 'noconn');

# --- worker slot shortage: two slots for four tasks; the others wait, then run
my $log = tt_log_position($node);
as('alice', q{SELECT task_tracker.assign_tasks(7, '{0,1,2,3}', ARRAY[
	'SELECT 0 FROM pg_sleep(1)', 'SELECT 1 FROM pg_sleep(1)',
	'SELECT 2 FROM pg_sleep(1)', 'SELECT 3 FROM pg_sleep(1)'])});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM task_tracker.tasks WHERE job_id = 7 AND status = 'scheduled'
	AND error_sqlstate = '53000' AND error LIKE 'waiting for a background worker slot: all max_worker_processes (4) are in use'}),
	'a task waiting for a worker slot says so in the tasks view');
$node->wait_for_log(qr/task tracker waits for a background worker slot for task \(job 7/, $log);
ok(1, 'a wait that persists is logged');
wait_as('alice', 7, tasks => 4);
is(as('alice', q{SELECT string_agg(status || coalesce(error, ''), ',') FROM task_tracker.tasks WHERE job_id = 7}),
	'succeeded,succeeded,succeeded,succeeded', 'all four ran once slots were free');
as('alice', 'SELECT task_tracker.cleanup_job(7)');
tt_check_no_leftovers($node, 'background workers');

# --- the same server with libpq sessions: no password, no task
$node->append_conf('postgresql.conf', "citus.task_tracker_use_background_workers = off\ncitus.task_max_attempts = 1\n");
{
	local $ENV{PGPASSWORD};
	delete $ENV{PGPASSWORD};
	tt_restart_fast($node);
}
as('alice', q{SELECT task_tracker.assign_task(8, 0, 'SELECT 1')});
wait_as('alice', 8, tasks => 1);
like(as('alice', 'SELECT status || \' \' || error_sqlstate || \' \' || error FROM task_tracker.tasks WHERE job_id = 8'),
	qr/^permanently_failed 08001 .*password/s,
	'without background workers the tracker would need a password');
as('alice', 'SELECT task_tracker.cleanup_job(8)');
tt_check_no_leftovers($node, 'libpq sessions');

$node->stop;
done_testing();
