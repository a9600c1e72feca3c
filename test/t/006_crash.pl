
# After a crash (kill -9 of a task's backend, or of the tracker itself, both
# make the postmaster reinitialise shared memory) the task table starts
# empty, the job-file area is cleaned and the tracker logs a line saying so.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('crash', restart_after_crash => 1,
	conf => "citus.task_result_inline_size = 0\ncitus.max_running_tasks_per_node = 2\n");
tt_create_role($node, 'alice');

my $crash_line = qr/task table starts empty after a crash/;

sub setup_job
{
	my ($job) = @_;
	# a finished task (with a result file) and a long running one, plus
	# queued tasks behind it
	tt_sql($node, qq{SELECT task_tracker.assign_task($job, 0, 'SELECT 1')}, user => 'alice');
	tt_wait_job($node, $job, user => 'alice', tasks => 1);
	tt_sql($node, qq{SELECT task_tracker.assign_tasks($job, '{1,2,3,4}', ARRAY[
		'SELECT pg_sleep(600)', 'SELECT pg_sleep(600)', 'SELECT 3', 'SELECT 4'])},
		user => 'alice');
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND status = 'running' AND backend_pid IS NOT NULL",
			'2'),
		"job $job: two long tasks running");
	ok(scalar(grep { $_ eq "job_$job" } tt_job_dirs($node)),
		"job $job: job directory exists before the crash");
	return;
}

sub after_crash
{
	my ($what, $logpos, $old_tracker) = @_;
	ok($node->wait_for_log($crash_line, $logpos),
		"$what: LOG line says the task table starts empty");
	ok($node->poll_query_until('postgres', 'SELECT pid IS NOT NULL FROM task_tracker.tracker'),
		"$what: server and tracker are back");
	isnt(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'),
		$old_tracker, "$what: a new tracker process");
	is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'),
		'0', "$what: task table is empty");
	my @dirs = tt_job_dirs($node);
	is(scalar(@dirs), 0, "$what: job directories removed") or diag("left: @dirs");
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) FROM pg_stat_activity
			  WHERE query LIKE '%SELECT pg_sleep(600)%' AND pid <> pg_backend_pid()}, '0'),
		"$what: no task query survives");

	# the tracker works after the crash
	tt_sql($node, q{SELECT task_tracker.assign_task(69, 0, 'SELECT 42')}, user => 'alice');
	tt_wait_job($node, 69, user => 'alice', tasks => 1);
	is(tt_sql($node, 'SELECT x FROM task_tracker.task_result(69, 0) AS t(x int)', user => 'alice'),
		'42', "$what: new tasks run");
	tt_cleanup_and_check($node, [ [ 69, 'alice' ] ]);
	return;
}

# --- kill -9 of a task's backend
setup_job(61);
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $victim = tt_sql($node,
	"SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 61 AND status = 'running' ORDER BY task_id LIMIT 1");
my $logpos = tt_log_position($node);
is(kill('KILL', $victim), 1, "kill -9 of task backend $victim");
after_crash('task backend killed', $logpos, $tracker);

# --- kill -9 of the tracker
setup_job(62);
$tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
$logpos = tt_log_position($node);
is(kill('KILL', $tracker), 1, "kill -9 of the tracker $tracker");
after_crash('tracker killed', $logpos, $tracker);

# --- a clean restart logs no crash line
$logpos = tt_log_position($node);
$node->restart;
ok(!$node->log_contains($crash_line, $logpos), 'a clean restart logs no crash line');

$node->stop;
done_testing();
