
# cleanup_job of a task the tracker holds without a session: its
# connection was refused for a transient reason (the role's connection
# limit, 53300), so the tracker waits to connect again.  The cancel stops
# it at once (handle_cancels -> stop_running_task, which frees the running
# task).  Issue 9, defect 2: the tracker read the freed task's key to mark
# it canceled; the task stayed cancel_requested and cleanup_job never
# returned.  (Freed memory keeps its bytes in a production build, so the
# tracker overwrites what it frees, free_running_task: a use after the free
# fails here in every build.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('cancel_refused', conf => "citus.node_connection_timeout = '120s'\n");
tt_create_role($node, 'bob');
tt_sql($node, q{
CREATE TABLE public.ran (task int PRIMARY KEY);
GRANT INSERT ON public.ran TO bob;
ALTER ROLE bob CONNECTION LIMIT 0;
});
my $tracker_pid = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

# bob may not log in (limit 0): the tracker is refused, transiently
tt_sql($node, q{SET ROLE bob; SELECT task_tracker.assign_tasks(140, '{0,1}', ARRAY[
	'INSERT INTO public.ran VALUES (0)', 'INSERT INTO public.ran VALUES (1)'])});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 140
		    AND status = 'scheduled' AND error LIKE '%too many connections for role%'}, '2'),
	'both tasks wait to connect again after a refusal');

# cleanup_job must return (bounded here by statement_timeout)
my ($rc, $out, $err) = tt_psql($node,
	q{SET ROLE bob; SET statement_timeout = '30s'; SELECT task_tracker.cleanup_job(140)});
is($rc, 0, 'cleanup_job of the waiting tasks returns')
  or diag($err . tt_sql($node, 'SELECT task_id, status FROM task_tracker.tasks'));
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 140'),
	'0', 'no task of the job is left (none stays cancel_requested)');
is(tt_sql($node, 'SELECT count(*) FROM public.ran'), '0', 'neither task ran');

# the job id is usable again at once, and the tracker is the same process
tt_sql($node, 'ALTER ROLE bob CONNECTION LIMIT -1');
tt_sql($node, q{SELECT task_tracker.assign_task(140, 0, 'INSERT INTO public.ran VALUES (140)')},
	user => 'bob');
tt_wait_job($node, 140, user => 'bob', tasks => 1);
is(tt_sql($node, 'SELECT task_tracker.task_status(140, 0)', user => 'bob'),
	'succeeded', 'a new task of the same job id runs');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker_pid,
	'the tracker kept its pid');

# a running statement canceled: the SIGINT path (a backend of this server)
tt_sql($node, q{SELECT task_tracker.assign_task(141, 0, 'SELECT pg_sleep(600)')}, user => 'bob');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		    AND query LIKE '%pg_sleep(600)%' AND state = 'active'}, '1'),
	'a long statement runs');
($rc, $out, $err) = tt_psql($node,
	q{SET statement_timeout = '30s'; SELECT task_tracker.cleanup_job(141)}, user => 'bob');
is($rc, 0, 'cleanup_job of a running statement returns') or diag($err);
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%'
		    AND pid <> pg_backend_pid()}, '0'),
	'its statement is stopped');

tt_cleanup_and_check($node, [ [ 140, 'bob', 'postgres' ] ]);
$node->stop;
done_testing();
