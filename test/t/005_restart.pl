
# pg_ctl stop (fast and smart) and start with queued and running tasks: the
# task table is saved and restored, tasks that were running go back to the
# queue with the attempt counted, and every task does its work exactly once.
#
# Tasks are held back by a row lock of a prepared transaction, which
# survives the restart: the test decides when they may finish.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('restart', conf => "citus.max_running_tasks_per_node = 2\n");
tt_create_role($node, 'alice');
tt_sql($node, q{
CREATE TABLE public.gate (id int);
INSERT INTO public.gate VALUES (1);
CREATE TABLE public.done (job bigint, v int);
GRANT SELECT, UPDATE ON public.gate TO alice;
GRANT SELECT, INSERT ON public.done TO alice;
});

my $blocked = q{SELECT count(*) FROM pg_stat_activity
	WHERE application_name = 'task_tracker' AND wait_event_type = 'Lock'};

# A finished job whose results must survive both restarts.
tt_sql($node, q{SELECT task_tracker.assign_task(50, 0, 'SELECT ''kept'' AS v, 50 AS n')},
	user => 'alice');
tt_wait_job($node, 50, user => 'alice', tasks => 1);

sub run_case
{
	my ($mode, $job) = @_;
	my $n = 10;

	tt_sql($node, q{BEGIN; UPDATE public.gate SET id = id; PREPARE TRANSACTION 'gate';});
	tt_sql($node, qq{SELECT task_tracker.assign_tasks($job, array_agg(i),
		array_agg(format('WITH g AS (SELECT 1 FROM public.gate FOR SHARE) INSERT INTO public.done SELECT $job, %s FROM g', i)))
		FROM generate_series(1, $n) i}, user => 'alice');

	ok($node->poll_query_until('postgres', $blocked, '2'),
		"$mode: two tasks running, blocked on the gate");
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND status = 'running'", '2'),
		"$mode: tasks view shows two running");
	my $running = tt_sql($node,
		"SELECT string_agg(task_id::text, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = $job AND status = 'running'");

	my $logpos = tt_log_position($node);
	local $ENV{PGCTLTIMEOUT} = 60;
	if (!$node->stop($mode, fail_ok => 1))
	{
		fail("$mode: pg_ctl stop -m $mode finished");
		$node->stop('immediate');
		$node->start;
		tt_sql($node, q{COMMIT PREPARED 'gate'});
		return;
	}
	pass("$mode: pg_ctl stop -m $mode finished");
	$node->start;

	is( tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job"),
		"$n", "$mode: all $n tasks restored");
	is( tt_sql($node,
			"SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND status IN ('succeeded', 'permanently_failed', 'canceled')"),
		'0', "$mode: none finished while the gate is closed");
	is(tt_sql($node, 'SELECT count(*) FROM public.done WHERE job = ' . $job),
		'0', "$mode: no task did its work yet");
	ok($node->poll_query_until('postgres', $blocked, '2'),
		"$mode: after start, two tasks run again");

	tt_sql($node, q{COMMIT PREPARED 'gate'});
	tt_wait_job($node, $job, user => 'alice', tasks => $n);

	is( tt_sql($node,
			"SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND status = 'succeeded'"),
		"$n", "$mode: all tasks succeeded");
	is( tt_sql($node, "SELECT count(*), count(DISTINCT v), min(v), max(v) FROM public.done WHERE job = $job"),
		"$n|$n|1|$n", "$mode: every task did its work exactly once");
	is( tt_sql($node,
			"SELECT string_agg(task_id::text, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = $job AND attempts >= 2"),
		$running, "$mode: the tasks running at stop had their attempt counted");
	is( tt_sql($node,
			"SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND attempts = 1"),
		$n - 2, "$mode: the others ran once");
	is( tt_sql($node,
			'SELECT v, n FROM task_tracker.task_result(50, 0) AS t(v text, n int)',
			user => 'alice'),
		'kept|50', "$mode: results of a finished job survive");
	is(tt_sql($node, 'SELECT task_tracker.task_status(50, 0)', user => 'alice'),
		'succeeded', "$mode: finished task still succeeded");
	ok(!$node->log_contains('task table starts empty after a crash', $logpos),
		"$mode: a clean stop is not treated as a crash");
	return;
}

run_case('fast', 51);
run_case('smart', 52);

# pg_ctl restart with nothing gated: queued work simply continues
tt_sql($node, q{SELECT task_tracker.assign_tasks(53, '{1,2,3}', ARRAY[
	'INSERT INTO public.done VALUES (53, 1)',
	'INSERT INTO public.done VALUES (53, 2)',
	'INSERT INTO public.done VALUES (53, 3)'])}, user => 'alice');
$node->restart;
tt_wait_job($node, 53, user => 'alice', tasks => 3);
is(tt_sql($node, 'SELECT count(*), count(DISTINCT v) FROM public.done WHERE job = 53'),
	'3|3', 'pg_ctl restart: three tasks, each ran once');

tt_cleanup_and_check($node,
	[ [ 50, 'alice' ], [ 51, 'alice' ], [ 52, 'alice' ], [ 53, 'alice' ] ]);

# a clean stop with an empty table followed by a start keeps it empty
$node->restart;
tt_check_no_leftovers($node, 'after another restart');
$node->stop;
done_testing();
