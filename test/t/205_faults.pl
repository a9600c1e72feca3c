
# Faults on one node:
#
# A. the job-file area is unwritable (chmod 0500 of pg_task_tracker, and of
#    an existing job directory): tasks that return rows fail with a clear
#    error (58030 / 53100) naming the file, row-less tasks still succeed,
#    and after the mode is restored the same tasks succeed;
# B. a task's backend is stopped (SIGSTOP): cleanup_job still returns in
#    bounded time, and the backend exits once it is continued;
# C. pg_ctl stop -m fast with running tasks, then start: the running tasks
#    are requeued with their attempt counted, and every task does its work
#    exactly once (a UNIQUE column and a count);
# D. kill -9 of a task backend with 200 tasks queued: crash restart, the
#    table starts empty, LOG line, job directories gone, the node works;
# E. pg_ctl stop -m immediate with queued tasks: the same;
# C2. the same with a gate that dies with the stop (a commit racing it);
# F. the in-memory result budget (citus.task_result_memory) overflows to
#    files and is given back by cleanup.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

# results in files only (citus.task_result_inline_size = 0) for part A;
# A2 turns in-memory results back on
my $node = tt_node('faults', restart_after_crash => 1,
	conf => "citus.max_running_tasks_per_node = 2\ncitus.task_result_inline_size = 0\n");
tt_create_role($node, 'alice');
tt_sql($node, q{
CREATE TABLE public.done (v int UNIQUE);
GRANT SELECT, INSERT ON public.done TO alice;
});
my $area = $node->data_dir . '/pg_task_tracker';
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

# ---------------------------------------------------------------- A. unwritable
tt_sql($node, q{SELECT task_tracker.assign_task(10, 0, 'SELECT 10')}, user => 'alice');
tt_wait_job($node, 10, user => 'alice', tasks => 1);
ok(-d "$area/job_10", 'A: job 10 has its directory');

chmod(0500, $area) or die "chmod $area: $!";
chmod(0500, "$area/job_10") or die "chmod $area/job_10: $!";
tt_sql($node, q{SELECT task_tracker.assign_tasks(11, '{0,1,2,3}', ARRAY[
	'SELECT g FROM generate_series(1, 10) g',
	'INSERT INTO public.done VALUES (1)',
	'CREATE TEMP TABLE t (x int)',
	'VACUUM public.done'])}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(10, 1, 'SELECT 11')}, user => 'alice');
tt_wait_job($node, 11, user => 'alice', tasks => 4);
tt_wait_job($node, 10, user => 'alice', tasks => 2);
chmod(0700, $area);
chmod(0700, "$area/job_10");

for my $c ([ 11, 0, 'a new job in an unwritable area' ], [ 10, 1, 'an unwritable job directory' ])
{
	my ($job, $task, $what) = @$c;
	my ($status, $state, $error) = split /\|/, tt_sql($node,
		"SELECT status, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = $job AND task_id = $task",
		user => 'alice');
	is($status, 'permanently_failed', "A: $what: a task returning rows fails");
	like($state, qr/^(58030|53100)$/, "A: $what: SQLSTATE 58030 or 53100");
	like($error, qr{could not (write|create|open)[^"]*"[^"]*job_$job/task_$task\.\d+"},
		"A: $what: the error names the file") or diag($error);
	like($error, qr/Permission denied/, "A: $what: ... and says why");
}
is( tt_sql($node, q{SELECT string_agg(task_id || ':' || status || ':' || result_rows, ',' ORDER BY task_id)
	FROM task_tracker.tasks WHERE job_id = 11 AND task_id > 0}),
	'1:succeeded:1,2:succeeded:0,3:succeeded:0', 'A: row-less tasks (INSERT, DDL, VACUUM) succeed');
is(tt_sql($node, 'SELECT task_tracker.task_status(10, 0)', user => 'alice'), 'succeeded',
	'A: the finished task of job 10 is still succeeded');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(10, 0) AS t(x int)', user => 'alice'),
	'10', 'A: ... and its result still reads');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'A: tracker pid unchanged');

# mode restored: the same tasks, assigned again, succeed
tt_sql($node, q{SELECT task_tracker.assign_task(11, 0, 'SELECT g FROM generate_series(1, 10) g')}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(10, 1, 'SELECT 11')}, user => 'alice');
tt_wait_job($node, 11, user => 'alice', tasks => 4);
tt_wait_job($node, 10, user => 'alice', tasks => 2);
is(tt_sql($node, 'SELECT count(*), sum(g) FROM task_tracker.task_result(11, 0) AS t(g int)', user => 'alice'),
	'10|55', 'A: after chmod 0700, the row task of the new job succeeds');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(10, 1) AS t(x int)', user => 'alice'),
	'11', 'A: ... and the one of the old job');
tt_sql($node, 'SELECT task_tracker.cleanup_job(10); SELECT task_tracker.cleanup_job(11)', user => 'alice');
tt_sql($node, 'TRUNCATE public.done');

# A2. with in-memory results (the default), a small result needs no file:
# it succeeds in an unwritable area; a result over the inline size fails
tt_sql($node, q{ALTER SYSTEM SET citus.task_result_inline_size = '16kB'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT current_setting('citus.task_result_inline_size') <> '0'}),
	'A2: in-memory results on');
chmod(0500, $area) or die "chmod $area: $!";
tt_sql($node, q{SELECT task_tracker.assign_tasks(12, '{0,1}', ARRAY[
	'SELECT g FROM generate_series(1, 10) g',
	'SELECT repeat(''x'', 70000)'])}, user => 'alice');
tt_wait_job($node, 12, user => 'alice', tasks => 2);
chmod(0700, $area);
is(tt_sql($node, 'SELECT count(*), sum(g) FROM task_tracker.task_result(12, 0) AS t(g int)', user => 'alice'),
	'10|55', 'A2: a small result is kept in memory although the area is unwritable');
is( tt_sql($node, q{SELECT status, error_sqlstate, error ~ 'job_12/task_1\.\d+' FROM task_tracker.tasks WHERE job_id = 12 AND task_id = 1}),
	'permanently_failed|58030|t', 'A2: a result over the inline size fails with 58030 naming the file');
tt_sql($node, 'SELECT task_tracker.cleanup_job(12)', user => 'alice');

# ---------------------------------------------------------------- B. SIGSTOP
tt_sql($node, q{SELECT task_tracker.assign_tasks(20, '{0,1}', ARRAY['SELECT pg_sleep(600)', 'SELECT 1'])},
	user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT backend_pid IS NOT NULL FROM task_tracker.tasks WHERE job_id = 20 AND task_id = 0 AND status = 'running'}),
	'B: the long task runs');
my $stopped = tt_sql($node, 'SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 20 AND task_id = 0');
is(kill('STOP', $stopped), 1, "B: SIGSTOP to the task backend $stopped");
my $t0 = time();
my ($rc, $out, $err) = tt_psql($node,
	"SET statement_timeout = '30s'; SELECT task_tracker.cleanup_job(20)", user => 'alice', verbose => 1);
my $took = time() - $t0;
is($rc, 0, 'B: cleanup_job of a job whose backend is stopped returns') or diag($err);
cmp_ok($took, '<', 10, sprintf('B: ... within bounded time (%.2f s)', $took));
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 20'), '0', 'B: the job is gone');
ok(!-e "$area/job_20", 'B: its directory is gone');
is(kill('CONT', $stopped), 1, 'B: SIGCONT');
ok( $node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $stopped", '0'),
	'B: the continued backend exits');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'B: tracker pid unchanged');

# ---------------------------------------------------------------- C. stop -m fast
{
	my $n = 20;
	# a finished job whose (in-memory) result must survive the stop
	tt_sql($node, q{SELECT task_tracker.assign_task(31, 0, 'SELECT ''kept''::text, 31')}, user => 'alice');
	tt_wait_job($node, 31, user => 'alice', tasks => 1);
	# the gate is a row lock of a prepared transaction: unlike a session's
	# lock it survives the stop, so no task can commit during the stop
	tt_sql($node, q{CREATE TABLE public.gate (id int); INSERT INTO public.gate VALUES (1);
		GRANT SELECT, UPDATE ON public.gate TO alice;
		BEGIN; UPDATE public.gate SET id = id; PREPARE TRANSACTION 'gate';});
	tt_sql($node, qq{SELECT task_tracker.assign_tasks(30, array_agg(i),
		array_agg(format('WITH g AS (SELECT 1 FROM public.gate FOR SHARE) INSERT INTO public.done SELECT %s FROM g', 1000 + i)))
		FROM generate_series(1, $n) i}, user => 'alice');
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 30 AND status = 'running' AND backend_pid IS NOT NULL}, '2'),
		'C: two tasks running, blocked');
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker' AND wait_event_type = 'Lock'}, '2'),
		'C: ... on the lock');
	my $running = tt_sql($node,
		q{SELECT string_agg(task_id::text, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 30 AND status = 'running'});
	my $logpos = tt_log_position($node);
	$node->stop('fast');
	$node->start;
	is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 30 AND status IN ('succeeded', 'permanently_failed')}),
		'0', 'C: after the start no task has finished while the gate is closed');
	tt_sql($node, q{COMMIT PREPARED 'gate'});
	ok(!$node->log_contains('task table starts empty', $logpos), 'C: a fast stop is not a crash');
	tt_wait_job($node, 30, user => 'alice', tasks => $n);
	is( tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 30 AND status = 'succeeded'}),
		$n, "C: all $n tasks succeeded after the restart")
	  or diag(tt_sql($node, q{SELECT task_id, status, attempts, error_sqlstate, error FROM task_tracker.tasks
		WHERE job_id = 30 AND status <> 'succeeded'}));
	is(tt_sql($node, 'SELECT count(*), count(DISTINCT v), min(v), max(v) FROM public.done'),
		"$n|$n|1001|" . (1000 + $n), 'C: every task did its work exactly once');
	is( tt_sql($node,
			q{SELECT string_agg(task_id::text, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 30 AND attempts > 1}),
		$running, 'C: the tasks running at the stop had their attempt counted');
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(31, 0) AS t(a text, b int)', user => 'alice'),
		'kept|31', 'C: the result of a finished job survives the stop');
	tt_sql($node, 'SELECT task_tracker.cleanup_job(30); SELECT task_tracker.cleanup_job(31)', user => 'alice');
}

# ---------------------------------------------------------------- C2. commit racing a fast stop
# The gate is now a session's advisory lock: the fast stop terminates that
# session, so a waiting task may get the lock and commit while the tracker
# is stopping.  The tracker must learn the outcome before it requeues the
# task: every task still runs exactly once (8 rounds; a race, so a failing
# round is a real defect even if other rounds pass).
{
	my @twice;
	tt_sql($node, 'TRUNCATE public.done');
	for my $round (1 .. 8)
	{
		my $job = 3000 + $round;
		# the gate session is busy (as an application's would be) when the
		# stop terminates it
		my $gate = $node->background_psql('postgres', on_error_stop => 0);
		$gate->query_until(qr/locked/, "SELECT pg_advisory_lock(78);\n\\echo locked\nSELECT pg_sleep(600);\n");
		tt_sql($node, qq{SELECT task_tracker.assign_tasks($job, array_agg(i),
			array_agg(format('INSERT INTO public.done SELECT %s FROM (SELECT pg_advisory_xact_lock_shared(78)) l', $job * 10 + i)))
			FROM generate_series(1, 6) i}, user => 'alice');
		$node->poll_query_until('postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker' AND wait_event_type = 'Lock'}, '2')
		  or die 'C2: tasks did not start';
		$node->stop('fast');
		eval { $gate->quit; };
		$node->start;
		tt_wait_job($node, $job, user => 'alice', tasks => 6);
		my $bad = tt_sql($node,
			"SELECT string_agg(task_id || ':' || status || ':' || coalesce(error_sqlstate, ''), ' ') FROM task_tracker.tasks WHERE job_id = $job AND status <> 'succeeded'");
		push @twice, "round $round: $bad" if $bad ne '';
		tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => 'alice');
	}
	is(tt_sql($node, 'SELECT count(*), count(DISTINCT v) FROM public.done'), '48|48',
		'C2: 48 tasks inserted 48 rows');
	is(scalar(@twice), 0, 'C2: a task whose commit raced the fast stop is not run again')
	  or diag(join("\n", @twice));
}

# ---------------------------------------------------------------- F. result memory budget
# citus.task_result_memory full: results go to files; after a cleanup the
# budget is free again (nothing leaks)
tt_sql($node, q{ALTER SYSTEM SET citus.task_result_memory = '64kB'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT current_setting('citus.task_result_memory') = '64kB'}),
	'F: result memory budget 64kB');
tt_sql($node, q{SELECT task_tracker.assign_tasks(60, array_agg(i), array_agg(format('SELECT %s, repeat(''a'', 10000)', i)))
	FROM generate_series(1, 30) i}, user => 'alice');
tt_wait_job($node, 60, user => 'alice', tasks => 30);
is( tt_sql($node, q{SELECT count(*) FILTER (WHERE status = 'succeeded') FROM task_tracker.tasks WHERE job_id = 60}),
	'30', 'F: 30 results of 10 kB with a 64 kB budget all succeed');
is( tt_sql($node, q{SELECT sum(i), sum(length(a)) FROM generate_series(1, 30) t,
	LATERAL task_tracker.task_result(60, t) AS r(i int, a text)}, user => 'alice'),
	'465|300000', 'F: ... and read back right, from memory and from files');
ok(-d "$area/job_60", 'F: the results beyond the budget went to files');
tt_sql($node, 'SELECT task_tracker.cleanup_job(60)', user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_tasks(61, '{1,2,3,4}', array_fill('SELECT repeat(''b'', 10000)'::text, ARRAY[4]))},
	user => 'alice');
tt_wait_job($node, 61, user => 'alice', tasks => 4);
ok(!-e "$area/job_61", 'F: after the cleanup the budget is free again: 40 kB of results stay in memory');
is( tt_sql($node, q{SELECT sum(length(b)) FROM generate_series(1, 4) t, LATERAL task_tracker.task_result(61, t) AS r(b text)},
		user => 'alice'),
	'40000', 'F: ... and read back');
tt_sql($node, 'SELECT task_tracker.cleanup_job(61)', user => 'alice');
tt_sql($node, q{ALTER SYSTEM RESET citus.task_result_memory; SELECT pg_reload_conf()});

# ---------------------------------------------------------------- D. kill -9
sub after_crash
{
	my ($what, $logpos, $old) = @_;
	ok($node->wait_for_log(qr/task table starts empty after a crash/, $logpos),
		"$what: LOG line: the task table starts empty");
	ok($node->poll_query_until('postgres', 'SELECT pid IS NOT NULL FROM task_tracker.tracker'),
		"$what: the tracker is back");
	isnt(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $old, "$what: a new tracker");
	is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'), '0', "$what: the task table is empty");
	my @dirs = tt_job_dirs($node);
	is(scalar(@dirs), 0, "$what: job directories removed") or diag("@dirs");
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE query ~ 'pg_sleep\(600\)' AND pid <> pg_backend_pid()}, '0'),
		"$what: no task query survives");
	tt_sql($node, q{SELECT task_tracker.assign_task(99, 0, 'SELECT 99')}, user => 'alice');
	tt_wait_job($node, 99, user => 'alice', tasks => 1);
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(99, 0) AS t(x int)', user => 'alice'),
		'99', "$what: the node runs tasks again");
	tt_sql($node, 'SELECT task_tracker.cleanup_job(99)', user => 'alice');
	return;
}

tt_sql($node, q{SELECT task_tracker.assign_task(40, 0, 'SELECT g, repeat(''x'', 100) FROM generate_series(1, 2000) g')}, user => 'alice');
tt_wait_job($node, 40, user => 'alice', tasks => 1);
tt_sql($node, q{SELECT task_tracker.assign_tasks(41, array_agg(i), array_fill('SELECT pg_sleep(600)'::text, ARRAY[200]))
	FROM generate_series(1, 200) i}, user => 'alice');
ok(-d "$area/job_40", 'D: a finished job with a result file');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 41 AND status = 'running' AND backend_pid IS NOT NULL}, '2'),
	'D: two of 200 tasks run');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 41 AND status = 'assigned'}), '198',
	'D: 198 queued');
$tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $victim = tt_sql($node, q{SELECT min(backend_pid) FROM task_tracker.tasks WHERE job_id = 41 AND status = 'running'});
my $logpos = tt_log_position($node);
is(kill('KILL', $victim), 1, "D: kill -9 of task backend $victim");
after_crash('D', $logpos, $tracker);

# ---------------------------------------------------------------- E. stop -m immediate
tt_sql($node, q{SELECT task_tracker.assign_task(50, 0, 'SELECT g, repeat(''x'', 100) FROM generate_series(1, 2000) g')}, user => 'alice');
tt_wait_job($node, 50, user => 'alice', tasks => 1);
tt_sql($node, q{SELECT task_tracker.assign_tasks(51, array_agg(i), array_fill('SELECT pg_sleep(600)'::text, ARRAY[50]))
	FROM generate_series(1, 50) i}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 51 AND status = 'running' AND backend_pid IS NOT NULL}, '2'),
	'E: tasks running and queued');
$tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
$logpos = tt_log_position($node);
$node->stop('immediate');
$node->start;
after_crash('E', $logpos, $tracker);

tt_check_no_leftovers($node);
$node->stop;
done_testing();
