
# The tracker as a process an operator sees and that gets out of the way:
# - it is in pg_stat_activity with its backend_type ("task tracker") and its
#   waits, connected to no database (before: not there at all);
# - DROP DATABASE while the tracker holds an idle session there succeeds at
#   once: the ProcessUtility hook asks the tracker to close its idle
#   sessions first (before: "database ... is being accessed by other users"
#   after 5 s, as long as the idle session lived);
# - canceled (pg_cancel_backend, now that it is listed): nothing happens;
#   a task running meanwhile succeeds, the tracker keeps its pid (before:
#   the cancel raised "canceling statement due to user request" in the
#   tracker, in whatever it was doing);
# - terminated (pg_terminate_backend: before, it was no backend, so this
#   did nothing), it starts again and runs the tasks that were queued and
#   the one it stopped, whose side effect happens once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $node = tt_node('tracker_process', conf => q{
citus.task_tracker_idle_connection_timeout = '1h'
citus.max_running_tasks_per_node = 1
});
tt_create_role($node, 'alice');
tt_sql($node, q{CREATE TABLE public.ran (task int PRIMARY KEY); GRANT INSERT ON public.ran TO alice});

# ---------------------------------------------------------------- pg_stat_activity
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
ok( $node->poll_query_until('postgres',
		qq{SELECT backend_type || '|' || (datname IS NULL) || '|' || wait_event_type || '|' || wait_event
		   FROM pg_stat_activity WHERE pid = $tracker},
		'task tracker|true|Extension|Extension'),
	'the tracker is in pg_stat_activity: its backend_type, no database, its wait');

# ---------------------------------------------------------------- DROP DATABASE
tt_sql($node, 'CREATE DATABASE d18');
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'd18');
tt_sql($node, q{SELECT task_tracker.assign_task(181, 0, 'SELECT 1')}, dbname => 'd18');
tt_wait_job($node, 181, tasks => 1, dbname => 'd18');
tt_sql($node, 'SELECT task_tracker.cleanup_job(181)', dbname => 'd18');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND datname = 'd18' AND state = 'idle'}, '1'),
	'the tracker holds an idle session in d18');
my $t0 = time();
my ($rc, $out, $err) = tt_psql($node, 'DROP DATABASE d18');
# before: "being accessed by other users" after 5 s (the idle session
# lives 1 h); the bound only guards against a hang on a loaded machine
is($rc, 0, 'DROP DATABASE succeeds although the idle session would live 1 h') or diag($err);
cmp_ok(time() - $t0, '<', 30, 'DROP DATABASE does not hang');

# ---------------------------------------------------------------- cancel
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(1819)');
tt_sql($node, q{SELECT task_tracker.assign_task(183, 0,
	'INSERT INTO public.ran SELECT 10 FROM pg_advisory_xact_lock_shared(1819)')}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'a task runs, blocked');
my $wakeups = tt_sql($node, 'SELECT wakeups FROM task_tracker.tracker');
my $log = tt_log_position($node);
is(tt_sql($node, "SELECT pg_cancel_backend($tracker)"), 't', 'the tracker is sent a cancel');
# a reload wakes the tracker for a pass after the cancel (SIGHUP sets its latch)
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', "SELECT wakeups > $wakeups FROM task_tracker.tracker"),
	'the tracker ran a pass after the cancel');
$gate->query_safe('SELECT pg_advisory_unlock(1819)');
tt_wait_job($node, 183, user => 'alice', tasks => 1);
is(tt_sql($node, q{SELECT status FROM task_tracker.tasks WHERE job_id = 183}),
	'succeeded', 'the running task succeeded');
unlike(slurp_file($node->logfile, $log), qr/canceling statement due to user request/,
	'the cancel raised no error in the tracker');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'the tracker kept its pid');
tt_sql($node, 'SELECT task_tracker.cleanup_job(183)', user => 'alice');

# ---------------------------------------------------------------- restart
# (idle sessions expire again, so that nothing is left at the end)
$node->append_conf('postgresql.conf', "citus.task_tracker_idle_connection_timeout = '500ms'\n");
$node->reload;
ok($node->poll_query_until('postgres',
		q{SELECT current_setting('citus.task_tracker_idle_connection_timeout') = '500ms'}),
	'idle sessions expire after 500 ms again');
$gate->query_safe('SELECT pg_advisory_lock(1818)');
tt_sql($node, q{SELECT task_tracker.assign_tasks(180, '{0,1}', ARRAY[
	'INSERT INTO public.ran SELECT 0 FROM pg_advisory_xact_lock_shared(1818)',
	'INSERT INTO public.ran VALUES (1)'])}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'task 0 runs, blocked; task 1 is queued');
$log = tt_log_position($node);
tt_sql($node, "SELECT pg_terminate_backend($tracker)");
$node->wait_for_log(qr/task tracker started/, $log);
my $tracker2 = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
isnt($tracker2, $tracker, 'the tracker started again');
$gate->query_safe('SELECT pg_advisory_unlock(1818)');
tt_wait_job($node, 180, user => 'alice', tasks => 2);
is(tt_sql($node, q{SELECT string_agg(status, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 180}),
	'succeeded,succeeded', 'both tasks succeeded after the restart');
is(tt_sql($node, 'SELECT string_agg(task::text, \',\' ORDER BY task) FROM public.ran'),
	'0,1,10', 'each ran once');
ok( $node->poll_query_until('postgres',
		qq{SELECT backend_type FROM pg_stat_activity WHERE pid = $tracker2}, 'task tracker'),
	'the new tracker is in pg_stat_activity');

$gate->quit;
tt_cleanup_and_check($node, [ [ 180, 'alice', 'postgres' ] ]);
$node->stop;
done_testing();
