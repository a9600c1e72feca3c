
# Issue 9, defect 5: a task runs as the role that assigned it, in the
# database it was assigned in, by OID, not by name.  Tasks are queued
# behind a blocked one (citus.max_running_tasks_per_node = 1); meanwhile
# their role is renamed and a new role takes its name, and a database is
# renamed and a new one takes its name.  The tracker logs in by name, so
# before the fix the tasks ran as the new role and in the new database.
# Now a new session's identity query finds the OIDs differ and the task
# fails permanently: 28000 for the role, 3D000 for the database.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('identity', conf => "citus.max_running_tasks_per_node = 1\n");
tt_create_role($node, 'alice');
tt_sql($node, q{
CREATE TABLE public.ran (task int PRIMARY KEY, who name);
GRANT INSERT ON public.ran TO PUBLIC;
CREATE DATABASE d16;
});
tt_sql($node, 'CREATE TABLE public.ran (task int PRIMARY KEY, who name)', dbname => 'd16');
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'd16');

# the one slot is taken by a task blocked on an advisory lock
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(1616)');
tt_sql($node, q{SELECT task_tracker.assign_task(169, 0, 'SELECT pg_advisory_xact_lock_shared(1616)')});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'the tracker\'s only slot is taken by a blocked task');

tt_sql($node, q{SELECT task_tracker.assign_task(160, 0, 'INSERT INTO public.ran VALUES (160, current_user)')},
	user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(161, 0, 'INSERT INTO public.ran VALUES (161, current_user)')},
	dbname => 'd16');
is(tt_sql($node, q{SELECT string_agg(status, ',' ORDER BY job_id) FROM task_tracker.tasks WHERE job_id IN (160, 161)}),
	'assigned,assigned', 'both tasks are queued');

# the role and the database change hands under the same names
tt_sql($node, q{
ALTER ROLE alice RENAME TO alice_old;
CREATE ROLE alice LOGIN;
ALTER DATABASE d16 RENAME TO d16_old;
CREATE DATABASE d16;
});
tt_sql($node, 'CREATE TABLE public.ran (task int PRIMARY KEY, who name); GRANT INSERT ON public.ran TO PUBLIC',
	dbname => 'd16');

$gate->query_safe('SELECT pg_advisory_unlock(1616)');
tt_wait_job($node, 169, tasks => 1);
tt_wait_job($node, 160, user => 'alice_old', tasks => 1);
tt_wait_job($node, 161, tasks => 1);

is(tt_sql($node, q{SELECT status || ' ' || attempts || ' ' || error_sqlstate FROM task_tracker.tasks WHERE job_id = 160}),
	'permanently_failed 1 28000', 'role: the task failed permanently with 28000, after one attempt');
like(tt_sql($node, q{SELECT error FROM task_tracker.tasks WHERE job_id = 160}),
	qr/^role "alice" is not the role that assigned the task \(OID \d+, now \d+\)/,
	'role: the error says so');
is(tt_sql($node, q{SELECT status || ' ' || attempts || ' ' || error_sqlstate FROM task_tracker.tasks WHERE job_id = 161}),
	'permanently_failed 1 3D000', 'database: the task failed permanently with 3D000, after one attempt');
like(tt_sql($node, q{SELECT error FROM task_tracker.tasks WHERE job_id = 161}),
	qr/^database "d16" is not the database the task was assigned in/,
	'database: the error says so');
is(tt_sql($node, 'SELECT count(*) FROM public.ran'), '0', 'the new role ran nothing');
is(tt_sql($node, 'SELECT count(*) FROM public.ran', dbname => 'd16'), '0',
	'nothing ran in the new database');

# a task of the new role runs as it, on a new session (not one of the old role)
tt_sql($node, q{SELECT task_tracker.assign_task(162, 0, 'INSERT INTO public.ran VALUES (162, current_user)')},
	user => 'alice');
tt_wait_job($node, 162, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT who FROM public.ran WHERE task = 162'), 'alice',
	'a task of the new role runs as the new role');

$gate->quit;
tt_cleanup_and_check($node, [
	[ 160, 'alice_old', 'postgres' ], [ 161, 'postgres', 'postgres' ],
	[ 162, 'alice', 'postgres' ], [ 169, 'postgres', 'postgres' ] ]);
$node->stop;
done_testing();
