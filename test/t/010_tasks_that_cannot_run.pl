
# Tasks that cannot be queued or cannot run, and the library not preloaded
# (SPEC §7): a full task table, a role that cannot log in or lacks CONNECT,
# a role or database dropped while its tasks are queued.  Every case gets a
# clear error with a SQLSTATE and the tracker keeps working.  (Where results
# are kept, and job expiry: 009_result_storage.pl.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('bad', conf => "citus.max_tracked_tasks_per_node = 8\n"
	  . "citus.max_tracked_tasks_per_user = 8\n"
	  . "citus.task_max_attempts = 2\n");
tt_create_role($node, 'alice');
my ($rc, $out, $err);

# --- task table full
is(tt_sql($node, 'SELECT tasks_capacity FROM task_tracker.tracker'), '8', 'capacity 8');
tt_sql($node, q{SELECT task_tracker.assign_tasks(100, array_agg(i), array_agg('SELECT ' || i)) FROM generate_series(0, 6) i},
	user => 'alice');
($rc, $out, $err) = tt_psql($node,
	q{SELECT task_tracker.assign_tasks(101, '{0,1}', '{"SELECT 1","SELECT 2"}')},
	user => 'alice', verbose => 1);
like($err, qr/53400/, 'a batch that does not fit: 53400');
like($err, qr/citus\.max_tracked_tasks_per_node/, '... naming the setting');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 101'),
	'0', '... and nothing of the batch was added');
tt_sql($node, q{SELECT task_tracker.assign_task(101, 0, 'SELECT 1')}, user => 'alice');
($rc, $out, $err) = tt_psql($node, q{SELECT task_tracker.assign_task(101, 1, 'SELECT 1')},
	user => 'alice', verbose => 1);
like($err, qr/53400/, 'one task too many: 53400');
like($err, qr/citus\.max_tracked_tasks_per_node/, '... naming the setting');
tt_wait_job($node, 100, user => 'alice', tasks => 7);
tt_wait_job($node, 101, user => 'alice', tasks => 1);
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE status = 'succeeded'"),
	'8', 'the tasks already queued all ran');
tt_sql($node, 'SELECT task_tracker.cleanup_job(100)', user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(101, 1, 'SELECT 1')}, user => 'alice');
tt_wait_job($node, 101, user => 'alice', tasks => 2);
pass('after a cleanup there is room again');
tt_sql($node, 'SELECT task_tracker.cleanup_job(101)', user => 'alice');

# --- a role that cannot log in (assigning through SET ROLE)
tt_sql($node, 'CREATE ROLE nologin_role NOLOGIN');
tt_sql($node, q{SET ROLE nologin_role; SELECT task_tracker.assign_task(110, 0, 'SELECT 1')});
tt_wait_job($node, 110, tasks => 1);
is( tt_sql($node, q{SELECT status, attempts, error_sqlstate, error ~ 'not permitted to log in' FROM task_tracker.tasks WHERE job_id = 110}),
	'permanently_failed|2|08001|t',
	'a role without LOGIN: the task fails (08001) with the login error, after citus.task_max_attempts attempts');

# --- a role without CONNECT on the task's database (it had it, and lost it
# before its task ran: the tracker must not connect on its behalf)
tt_sql($node, 'CREATE DATABASE private; REVOKE CONNECT ON DATABASE private FROM PUBLIC;'
	  . ' GRANT CONNECT ON DATABASE private TO alice');
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'private');
tt_sql($node, 'REVOKE CONNECT ON DATABASE private FROM alice');
tt_sql($node, q{SET ROLE alice; SELECT task_tracker.assign_task(111, 0, 'SELECT 1')},
	dbname => 'private');
tt_wait_job($node, 111, tasks => 1);
is( tt_sql($node, q{SELECT status, database_name, error_sqlstate, error ~ 'permission denied for database' FROM task_tracker.tasks WHERE job_id = 111}),
	'permanently_failed|private|08001|t', 'a role without CONNECT: the task fails (08001) with the server message');
tt_sql($node, 'SELECT task_tracker.cleanup_job(110); SELECT task_tracker.cleanup_job(111)');

# --- a role and a database dropped while their tasks are queued
tt_sql($node, 'ALTER SYSTEM SET citus.max_running_tasks_per_node = 1');
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SELECT running_limit FROM task_tracker.tracker', '1'),
	'limit 1');
tt_create_role($node, 'dave');
tt_sql($node, 'CREATE DATABASE doomed');
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'doomed');

my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(12)');
tt_sql($node, q{SELECT task_tracker.assign_task(120, 0, 'SELECT pg_advisory_xact_lock_shared(12)')},
	user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker' AND wait_event_type = 'Lock'}, '1'),
	'the only slot is taken');
tt_sql($node, q{SELECT task_tracker.assign_task(121, 0, 'SELECT current_user')}, user => 'dave');
tt_sql($node, q{SELECT task_tracker.assign_task(122, 0, 'SELECT current_database()')}, user => 'alice',
	dbname => 'doomed');
tt_sql($node, q{SELECT task_tracker.assign_task(123, 0, 'SELECT 123')}, user => 'alice');
is( tt_sql($node, 'SELECT job_id, status, database_name FROM task_tracker.tasks WHERE job_id IN (121, 122) ORDER BY 1'),
	"121|assigned|postgres\n122|assigned|doomed", "dave's task and the task in doomed are queued");
tt_sql($node, 'DROP ROLE dave');
tt_sql($node, 'DROP DATABASE doomed');
$gate->query_safe('SELECT pg_advisory_unlock(12)');
$gate->quit;

tt_wait_job($node, 120, user => 'alice', tasks => 1);
tt_wait_job($node, 121, tasks => 1);
tt_wait_job($node, 122, tasks => 1);
tt_wait_job($node, 123, user => 'alice', tasks => 1);
is( tt_sql($node, q{SELECT status, error_sqlstate, error ~ 'role "dave" does not exist' FROM task_tracker.tasks WHERE job_id = 121}),
	'permanently_failed|08001|t', 'dropped role: its queued task fails with the login error, naming the role');
is( tt_sql($node, q{SELECT status, error_sqlstate, error ~ 'database "doomed" does not exist' FROM task_tracker.tasks WHERE job_id = 122}),
	'permanently_failed|08001|t', 'dropped database: its queued task fails with the server message, naming the database');
is(tt_sql($node, 'SELECT x FROM task_tracker.task_result(123, 0) AS t(x int)', user => 'alice'),
	'123', 'the tracker keeps working');
is( tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id IN (120, 123) AND status = 'succeeded'"),
	'2', "other users' tasks succeeded");

tt_sql($node, 'SELECT task_tracker.cleanup_job(j) FROM unnest(ARRAY[120, 121, 122, 123]) j');
tt_sql($node, 'ALTER SYSTEM RESET citus.max_running_tasks_per_node');
tt_check_no_leftovers($node);
tt_sql($node, 'DROP DATABASE private');
$node->stop;

# --- the library not preloaded
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
($rc, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION task_tracker');
is($rc, 0, 'not preloaded: CREATE EXTENSION works') or diag($err);
($rc, $out, $err) = $plain->psql('postgres', q{\set VERBOSITY verbose
SELECT task_tracker.assign_task(1, 0, 'SELECT 1')});
isnt($rc, 0, 'not preloaded: assign_task fails');
like($err, qr/55000: task_tracker must be loaded via shared_preload_libraries/,
	'... with 55000, naming shared_preload_libraries');
like($err, qr/HINT:  Add task_tracker to shared_preload_libraries and restart the server/,
	'... telling what to do');
($rc, $out, $err) = $plain->psql('postgres', q{\set VERBOSITY verbose
SELECT * FROM task_tracker.tasks});
like($err, qr/must be loaded via shared_preload_libraries/, 'not preloaded: the tasks view says so too');
unlike($err, qr/FATAL|connection to server was lost/, 'not preloaded: no session is lost');
$plain->stop;

done_testing();
