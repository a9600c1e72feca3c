# Copyright: task_tracker authors.
#
# Coordinator + two workers: tasks fail over to their next placement when a
# worker is down before a job or stops during it; a worker restarted in the
# middle of a task-tracker job is reconnected and the job completes with no
# duplicated or missing rows; a node that cannot be cleaned up gets a
# WARNING naming it and the command to run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;
use Time::HiRes qw(time);
use IPC::Run ();

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# 16 tasks, preferring worker 1, falling back to worker 2
sub job_sql
{
	my ($executor, $ntasks, $sleep, $placements) = @_;
	return qq{SET citus.task_executor = '$executor';
SET citus.node_reconnect_timeout = '3s';
SELECT count(*), sum(n), count(DISTINCT n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep($sleep)', s) AS query,
	         ARRAY[$placements] AS placements
	  FROM generate_series(1, $ntasks) s\$\$) AS t(n int);
};
}
my $both = "'$place[0]', '$place[1]'";
my $expect16 = '16|136|16';

# a worker that is down before the job starts
$workers[0]->stop('fast');
for my $executor ('real-time', 'task-tracker')
{
	is(tt_sql($coord, job_sql($executor, 16, 0, $both)), $expect16,
		"$executor: worker down before the job: tasks fail over");
}
my ($rc, $out, $err) = tt_psql($coord, job_sql('real-time', 1, 0, "'$place[0]'"), verbose => 1);
like($err, qr/08001|08006/, 'no placement left: the connection error fails the job');
is(tt_sql($coord, 'SELECT node_port, success, result IS NOT NULL FROM task_tracker.run_on_workers($$SELECT 1$$) ORDER BY node_port'),
	$workers[0]->port . "|f|t\n" . $workers[1]->port . "|t|t",
	'run_on_workers: a node that is down is a failed row, the others run');
$workers[0]->start;

# a worker that stops during the job
for my $executor ('real-time', 'task-tracker')
{
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/go/, "\\echo go\n" . job_sql($executor, 16, 0.4, $both));
	ok($workers[0]->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.4)%' AND pid <> pg_backend_pid()"),
		"$executor: tasks running on worker 1");
	$workers[0]->stop('fast');
	my $res = $bg->query("\\echo done");
	is($res, "$expect16\ndone", "$executor: worker stopped during the job: tasks fail over");
	if ($executor eq 'task-tracker')
	{
		like($bg->{stderr}, qr/WARNING:  could not clean up job (\d+) on node \Q$place[0]\E.*HINT:  Run SELECT task_tracker.cleanup_job\(\d+\) on node/s,
			'task-tracker: WARNING names the node that could not be cleaned up and the command');
		my ($job) = $bg->{stderr} =~ /could not clean up job (\d+)/;
		$workers[0]->start;
		# the worker restored the job's tasks; clean up as the warning says
		tt_sql($workers[0], "SELECT task_tracker.cleanup_job($job)") if $job;
	}
	else
	{
		$workers[0]->start;
	}
	$bg->quit;
}

# a worker restarted in the middle of a task-tracker job: reconnect, carry on
for my $executor ('task-tracker')
{
	# (tasks whose rows reached the coordinator are dropped from the
	# table: count successes with the tracker's counter)
	my $base = tt_sql($workers[0], 'SELECT tasks_succeeded FROM task_tracker.tracker');
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/go/, "\\echo go\n" . job_sql($executor, 40, 0.2, "'$place[0]'"));
	ok($workers[0]->poll_query_until('postgres',
			"SELECT tasks_succeeded >= $base + 8 FROM task_tracker.tracker"),
		"$executor: job under way on worker 1");
	$workers[0]->restart;
	my $res = $bg->query("\\echo done");
	is($res, "40|820|40\ndone", "$executor: worker restarted mid-job: all rows, once each");
	is($bg->{stderr}, '', "$executor: no error or warning after the restart");
	$bg->quit;
}

# a worker that crashes mid-job (its task table starts empty): tasks are
# assigned again
{
	my $base = tt_sql($workers[0], 'SELECT tasks_succeeded FROM task_tracker.tracker');
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/go/, "\\echo go\n" . job_sql('task-tracker', 40, 0.2, "'$place[0]'"));
	ok($workers[0]->poll_query_until('postgres',
			"SELECT tasks_succeeded >= $base + 8 FROM task_tracker.tracker"),
		"task-tracker: job under way on worker 1 before the crash");
	$workers[0]->stop('immediate');
	$workers[0]->start;
	my $res = $bg->query("\\echo done");
	is($res, "40|820|40\ndone", "task-tracker: worker crashed mid-job: all rows, once each");
	$bg->quit;
}

# hold_after_bytes($pid, $watch, $bytes): SIGSTOP the backend $pid once the
# backend $watch has written at least $bytes more (wchar of /proc/$watch/io:
# the coordinator's result spills to a temporary file past work_mem, so that
# is the rows it has received; socket traffic is not counted there).  True
# when $pid is stopped so, false when it ended first.
sub written_bytes
{
	my ($pid) = @_;
	my $io = eval { slurp_file("/proc/$pid/io") } // '';
	return $io =~ /^wchar: (\d+)/m ? $1 : undef;
}

sub hold_after_bytes
{
	my ($pid, $watch, $bytes) = @_;
	my $until = time() + $PostgreSQL::Test::Utils::timeout_default;
	my $start = written_bytes($watch);
	return 0 unless defined $start;
	while (time() < $until)
	{
		return 0 unless kill('STOP', $pid);
		my $written = written_bytes($watch);
		return 1 if defined $written && $written - $start >= $bytes;
		kill('CONT', $pid);
		select(undef, undef, undef, 0.005);    # a poll interval, not a wait for an outcome
	}
	kill('CONT', $pid);
	return 0;
}

# restart_releasing($node, $pid): restart $node while its backend $pid is
# stopped: once the postmaster's SIGTERM is pending for $pid
# (/proc/$pid/status, SigPnd or ShdPnd bit 15), let it go on
sub restart_releasing
{
	my ($node, $pid) = @_;
	my $stop = IPC::Run::start(
		[ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', 'stop' ],
		'>', \my $out, '2>', \my $err);
	my $until = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $until)
	{
		my $status = eval { slurp_file("/proc/$pid/status") } // '';
		my $pending = 0;
		$pending |= hex($1) while $status =~ /^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)/mg;
		last if $pending & (1 << 14) or $status eq '';
		select(undef, undef, undef, 0.005);
	}
	kill('CONT', $pid);
	$stop->finish;
	$node->_update_pid(0);
	$node->start;
	return;
}

# a worker restarted while a big result is being fetched: the fetch goes on
# where it stopped (no row twice, none missing).  Worker 1 logs its
# statements here, so that the fetches the coordinator sent show that the
# restart hit in the middle: a first task_result_copy from row 0, and after
# the restart one that skips the rows already received (0 < skip < all).
{
	tt_sql($workers[0], q{ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf()});
	my $logpos = tt_log_position($workers[0]);
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/go/, qq{\\echo go
SET citus.task_executor = 'task-tracker';
SET work_mem = '1MB';
SELECT count(*), sum(g), count(DISTINCT g) FROM task_tracker.run_job(
	\$\$SELECT 'SELECT g FROM generate_series(1, 3000000) g' AS query, ARRAY['$place[0]'] AS placements\$\$) AS t(g bigint);
});
	# the job's connection to worker 1 assigns the task, waits for it and
	# then fetches its rows
	my $job_conn = q{SELECT pid FROM pg_stat_activity
		WHERE application_name = 'task_tracker coordinator' AND state = 'active'
		  AND query LIKE '%task_tracker.%'};
	ok($workers[0]->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($job_conn) c"),
		'task-tracker: the job runs on worker 1');
	my $fetcher = '';
	my $until = time() + $PostgreSQL::Test::Utils::timeout_default;
	$fetcher = tt_sql($workers[0], $job_conn)
	  while $fetcher !~ /^\d+$/ && time() < $until;
	# Hold the fetch in its middle: stop the worker backend that sends the
	# rows once the coordinator has received at least 256 kB more of them
	# (on a fast machine the whole fetch could otherwise end before the
	# restart), then restart the worker, letting that backend go on only
	# once the shutdown's SIGTERM is pending for it, so that it ends at its
	# next row.
	my $receiver = tt_sql($coord,
		"SELECT pid FROM pg_stat_activity WHERE query LIKE '%run_job%' AND pid <> pg_backend_pid()");
	my $held = hold_after_bytes($fetcher, $receiver, 256 * 1024);
	ok($held, "task-tracker: the fetch is held after 256 kB more rows (backend $fetcher)");
	restart_releasing($workers[0], $fetcher);
	is($bg->query("\\echo done"), "3000000|4500001500000|3000000\ndone",
		'task-tracker: worker restarted during a fetch: every row once');
	$bg->quit;
	my $log = slurp_file($workers[0]->logfile, $logpos);
	my @skips = $log =~ /task_tracker\.task_result_copy\(\d+, \d+, (\d+), 1\)/g;
	note("fetches of the big result on worker 1 skipped: @skips");
	is($skips[0] // 'none', '0', 'task-tracker: the first fetch starts at row 0');
	ok(scalar(grep { $_ > 0 && $_ < 3000000 } @skips) > 0,
		'task-tracker: the restart hit mid-fetch: a later fetch skips the rows already received')
	  or diag("skips: @skips");
	tt_sql($workers[0], q{ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()});
}

# the real-time executor fails over when a worker restarts mid-job
{
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/go/, "\\echo go\n" . job_sql('real-time', 16, 0.4, $both));
	ok($workers[0]->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.4)%' AND pid <> pg_backend_pid()"),
		"real-time: tasks running on worker 1");
	$workers[0]->restart;
	is($bg->query("\\echo done"), "$expect16\ndone", 'real-time: worker restarted mid-job: tasks fail over');
	$bg->quit;
}

# connections left in the cache by those jobs still work
for my $executor ('real-time', 'task-tracker')
{
	is(tt_sql($coord, job_sql($executor, 16, 0, $both)), $expect16,
		"$executor: later job after the restarts");
}

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left');
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], "worker " . ($i + 1));
}
$_->stop for ($coord, @workers);
done_testing();
