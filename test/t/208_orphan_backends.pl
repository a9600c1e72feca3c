
# Issue 9, defect 1 (the restart side): a tracker that starts again makes
# sure the backend of each task it was running is gone before it requeues
# the task, so a statement never runs twice at the same time.
#
# A task's INSERT waits on an advisory lock; its backend is stopped with
# SIGSTOP, so that it cannot act on a SIGTERM.  The tracker is terminated
# (SIGTERM): it terminates the statement, which cannot end in
# the 2 s it waits, and exits.  Before the fix the task was requeued at once
# and the new tracker ran the INSERT again beside the stopped one.  Now the
# new tracker leaves the task running, terminates the old backend and waits
# for it to exit (it cannot until it is continued); once it is continued and
# gone, the task runs again, and its INSERT happens once.  A stop while
# the new tracker waits ends the wait at once and leaves the task to the
# next tracker.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('orphan_backends');
tt_create_role($node, 'alice');
tt_sql($node, q{CREATE TABLE public.ran (task int PRIMARY KEY); GRANT INSERT ON public.ran TO alice});

my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(2080)');
tt_sql($node, q{SELECT task_tracker.assign_task(208, 0,
	'INSERT INTO public.ran SELECT 208 FROM pg_advisory_xact_lock_shared(2080)')}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'the task\'s INSERT waits on the gate');
my $old = tt_sql($node, 'SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 208');
ok(kill('STOP', $old), "its backend ($old) is stopped");

my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $log = tt_log_position($node);
# (SIGTERM, what pg_terminate_backend sends; the tracker of the old code
# was no backend that function could signal)
ok(kill('TERM', $tracker), 'the tracker is terminated');
# the new tracker either waits for the old backend (which it logs before it
# is ready) or, as before the fix, starts at once
$node->wait_for_log(
	qr/task tracker terminated 1 backends of tasks it no longer runs|task tracker started/, $log);
ok($node->log_contains(
		qr/task tracker terminated 1 backends of tasks it no longer runs, and waits for them to exit before it requeues their tasks/,
		$log),
	'the new tracker terminated the old backend and waits for it');
isnt(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'a new tracker runs');
is(tt_sql($node, 'SELECT status || \' \' || attempts || \' \' || backend_pid FROM task_tracker.tasks WHERE job_id = 208'),
	"running 1 $old", 'the task is not requeued while its old backend exists');
is(tt_sql($node, q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
	AND query LIKE '%pg_advisory_xact_lock_shared(2080)%'}), '1',
	'no second run of the INSERT has started');

# A stop while the new tracker waits for the old backend ends the wait at
# once, leaving the task to the next tracker (before: the stop waited for
# the 30 s wait to run out, and the task failed with 40003 on the way).
my $tracker2 = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
$log = tt_log_position($node);
ok(kill('TERM', $tracker2), 'the waiting tracker is terminated');
$node->wait_for_log(
	qr/task tracker terminated 1 backends of tasks it no longer runs, and waits for them to exit/, $log);
isnt(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker2, 'a third tracker runs');
is(tt_sql($node, 'SELECT status || \' \' || attempts || \' \' || backend_pid FROM task_tracker.tasks WHERE job_id = 208'),
	"running 1 $old", 'the task was left running, and the third tracker waits for its backend');

ok(kill('CONT', $old), 'the old backend is continued');
ok( $node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $old", '0'),
	'and exits (the SIGTERM)');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'then the task runs again');
$gate->query_safe('SELECT pg_advisory_unlock(2080)');
tt_wait_job($node, 208, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT status || \' \' || attempts FROM task_tracker.tasks WHERE job_id = 208'),
	'succeeded 2', 'it succeeded at its second attempt');
is(tt_sql($node, 'SELECT count(*) FROM public.ran'), '1', 'the INSERT happened once');

$gate->quit;
tt_cleanup_and_check($node, [ [ 208, 'alice', 'postgres' ] ]);
$node->stop;
done_testing();
