
# Coordinator restart in the middle of a job, under both executors.
#
# A client runs a job of 16 pg_sleep(0.5) tasks spread over two workers
# (one task at a time per worker, so the job lasts ~4 s); once tasks run on
# both workers the coordinator gets `pg_ctl restart -m fast`.  Expected:
#
# * the client gets an error (57P01 "terminating connection due to
#   administrator command" or a lost connection), never a result;
# * the restart completes in bounded time and the coordinator then runs a
#   new job with the same executor correctly;
# * on the workers every task of the interrupted job disappears in bounded
#   time: the real-time executor's remote queries end because the
#   coordinator backend's connections close at exit; the task-tracker
#   executor's job is dropped by its abort path or reaped by the workers'
#   tracker (citus.task_tracker_job_expiry = 2s);
# * no coordinator connection or task session is left on the workers, no
#   job directory, no job in the coordinator's jobs view, no crash.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map {
	tt_node("worker$_", quiet => 1, conf => qq{
citus.task_tracker_job_expiry = '2s'
citus.max_running_tasks_per_node = 1
})
} (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# 16 tasks, odd ones preferring worker 1, even ones worker 2
sub job_sql
{
	my ($sleep) = @_;
	return qq{SELECT count(*), sum(n), count(DISTINCT n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep($sleep)', s) AS query,
	         CASE WHEN s % 2 = 1 THEN ARRAY['$place[0]', '$place[1]']
	              ELSE ARRAY['$place[1]', '$place[0]'] END AS placements
	  FROM generate_series(1, 16) s\$\$) AS t(n int)};
}

sub settings
{
	my ($executor) = @_;
	return (
		"SET citus.task_executor = '$executor'",
		"SET citus.max_connections_per_node = 1",
		"SET citus.node_connection_timeout = '2s'",
		"SET citus.node_reconnect_timeout = '3s'",
		"SET statement_timeout = '40s'");
}

my $running = q{SELECT count(*) > 0 FROM pg_stat_activity
	WHERE query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()};
my $gone = q{SELECT count(*) = 0 FROM pg_stat_activity
	WHERE query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()};

for my $executor ('real-time', 'task-tracker')
{
	my $p = tt_start_psql($coord, [ settings($executor), job_sql('0.5') ], timeout => 40);

	for my $i (0, 1)
	{
		ok(tt_poll_until($workers[$i], $running, 20),
			"$executor: tasks running on worker " . ($i + 1));
	}
	my $job = tt_sql($coord, 'SELECT job_id FROM task_tracker.jobs');
	like($job, qr/^\d+$/, "$executor: the jobs view shows the one running job");
	$job = -1 unless $job =~ /^\d+$/;
	if ($executor eq 'task-tracker')
	{
		cmp_ok(tt_sql($workers[0], "SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job"),
			'>', 0, "$executor: the job's tasks are tracked on worker 1");
	}

	my $t0 = time();
	tt_restart_fast($coord);
	my $took_restart = time() - $t0;
	cmp_ok($took_restart, '<', 15,
		sprintf('%s: pg_ctl restart -m fast completes in bounded time (%.1f s)', $executor, $took_restart));

	my ($rc, $out, $err) = tt_finish_psql($p);
	note("$executor: client got: $err");
	ok(defined $rc && $rc != 0, "$executor: the client's job fails") or diag("rc undef: $err");
	is($out, '', "$executor: ... without returning a result");
	like($err,
		qr/57P01|terminating connection due to administrator command|server closed the connection|connection to server was lost/,
		"$executor: ... with admin shutdown or a lost connection")
	  or diag($err);
	unlike($err, qr/statement timeout|57014/, "$executor: ... not by statement_timeout");

	# the coordinator is back and runs a new job correctly
	is(tt_sql($coord, join(";\n", settings($executor), job_sql('0'))), '16|136|16',
		"$executor: the restarted coordinator runs a new job");
	is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0',
		"$executor: no job left in the coordinator's jobs view");

	# the interrupted job disappears from the workers in bounded time
	for my $i (0, 1)
	{
		my $w = $workers[$i];
		my $wn = 'worker ' . ($i + 1);
		$t0 = time();
		ok(tt_poll_until($w, "SELECT count(*) = 0 FROM task_tracker.tasks WHERE job_id = $job", 15),
			"$executor: the interrupted job's tasks are gone on $wn")
		  or diag(tt_sql($w, 'SELECT job_id, task_id, status, attempts FROM task_tracker.tasks ORDER BY 1, 2'));
		ok(tt_poll_until($w, $gone, 15), "$executor: no task query left running on $wn");
		ok( tt_poll_until($w,
				q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'task_tracker%'}, 15),
			"$executor: no coordinator connection or task session left on $wn")
		  or diag(tt_sql($w, q{SELECT pid, application_name, state, query FROM pg_stat_activity
			WHERE application_name LIKE 'task_tracker%'}));
		my @dirs = tt_job_dirs($w);
		is(scalar(@dirs), 0, "$executor: no job directory on $wn") or diag("@dirs");
		note(sprintf('%s: %s clean after %.1f s', $executor, $wn, time() - $t0));
	}
}

tt_no_crash_in_log($_) for ($coord, @workers);
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], 'worker ' . ($i + 1));
}
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, @workers);
done_testing();
