
# cleanup_job of a job with a running long task really stops the remote
# query: its backend disappears, and no task rows or files remain.  Queued
# tasks of the job never run.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('cancel', conf => "citus.max_running_tasks_per_node = 1\n");
tt_create_role($node, 'alice');
tt_sql($node, q{
CREATE TABLE public.ran (task int);
GRANT INSERT ON public.ran TO alice;
});

# task 0 sleeps "forever"; task 1 is queued behind it (limit 1)
tt_sql($node, q{SELECT task_tracker.assign_tasks(40, '{0,1}', ARRAY[
	'SELECT pg_sleep(600)',
	'INSERT INTO public.ran VALUES (1)'])}, user => 'alice');

ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE application_name = 'task_tracker' AND usename = 'alice'
		    AND state = 'active' AND query LIKE '%SELECT pg_sleep(600)%'}, '1'),
	'the long task runs in a backend of its own user');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'running' AND backend_pid IS NOT NULL FROM task_tracker.tasks WHERE job_id = 40 AND task_id = 0}),
	'tasks view shows it running with its backend pid');
my $pid = tt_sql($node, 'SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 40 AND task_id = 0');
# (a query that returns rows runs as COPY (<query>) TO STDOUT)
is( tt_sql($node, "SELECT query FROM pg_stat_activity WHERE pid = $pid"),
	"COPY (SELECT pg_sleep(600)\n) TO STDOUT", 'backend_pid is the remote backend');
is(tt_sql($node, 'SELECT task_tracker.task_status(40, 1)', user => 'alice'),
	'assigned', 'the second task is queued');

my $t0 = time;
tt_sql($node, 'SELECT task_tracker.cleanup_job(40)', user => 'alice');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid", '0'),
	'the remote backend is gone');
cmp_ok(time - $t0, '<', 60, 'well before the sleep would have ended');

is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 40'),
	'0', 'no task rows of the job');
my ($rc, $out, $err) = tt_psql($node, 'SELECT task_tracker.task_status(40, 0)',
	user => 'alice', verbose => 1);
like($err, qr/42704/, 'the cleaned-up task is not found');
is(tt_sql($node, 'SELECT count(*) FROM public.ran'), '0',
	'the queued task never ran');

# the tracker keeps working after a cancel
tt_sql($node, q{SELECT task_tracker.assign_task(41, 0, 'INSERT INTO public.ran VALUES (41)')},
	user => 'alice');
tt_wait_job($node, 41, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT task_tracker.task_status(41, 0)', user => 'alice'),
	'succeeded', 'a later task runs normally');
is(tt_sql($node, 'SELECT task FROM public.ran'), '41', 'and did its work once');

# cleanup of a job whose tasks are all queued (none started yet)
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4343)');
tt_sql($node, q{SELECT task_tracker.assign_tasks(42, '{0,1,2}', ARRAY[
	'SELECT pg_advisory_xact_lock_shared(4343)',
	'INSERT INTO public.ran VALUES (420)',
	'INSERT INTO public.ran VALUES (421)'])}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'job 42: first task blocked');
tt_sql($node, 'SELECT task_tracker.cleanup_job(42)', user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '0'),
	'job 42: blocked task cancelled');
$gate->query_safe('SELECT pg_advisory_unlock(4343)');
$gate->quit;
is(tt_sql($node, 'SELECT count(*) FROM public.ran WHERE task >= 420'), '0',
	'job 42: queued tasks never ran');

# cleanup_job of an unknown job is a no-op
tt_sql($node, 'SELECT task_tracker.cleanup_job(99999)', user => 'alice');
pass('cleanup_job of an unknown job is a no-op');

tt_cleanup_and_check($node, [ [ 41, 'alice' ] ]);
$node->stop;
done_testing();
