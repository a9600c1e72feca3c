
# Coordinator-side faults (the cases 102_coordinator_failover.pl does not
# cover), under both executors:
#
# * a worker frozen with SIGSTOP (postmaster and every child: the machine
#   hangs, its sockets stay open) during a job: the job ends in bounded
#   time with all its rows, by failover to the other placement — it does
#   not wait for statement_timeout.  (An error would be right only for a
#   task that had already sent rows, README "A node that stops answering";
#   these tasks send their one row when they end, so none has.)
# * a placement whose port is closed: a clear connection error naming the
#   node, or failover when there is another placement; a placement that is
#   not registered: 42704 before anything runs;
# * kill -9 of the coordinator backend running a job: the workers' tasks of
#   the orphaned job are reaped (job expiry), their remote queries stop and
#   the coordinator runs jobs again after its crash restart.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1, restart_after_crash => 1);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

sub job_sql
{
	my ($executor, $ntasks, $sleep, $placements) = @_;
	return qq{SET citus.task_executor = '$executor';
SET citus.node_connection_timeout = '2s';
SET citus.node_reconnect_timeout = '3s';
SET statement_timeout = '45s';
SELECT count(*), sum(n), count(DISTINCT n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep($sleep)', s) AS query,
	         ARRAY[$placements] AS placements
	  FROM generate_series(1, $ntasks) s\$\$) AS t(n int);
};
}
my $both = "'$place[0]', '$place[1]'";

# the state letter of process pid (T once SIGSTOP has stopped it, Z for an
# exited child not reaped yet, empty when gone)
sub proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return '';
	my $stat = <$fh>;
	close($fh);
	return $stat =~ /\)\s+(\S)/ ? $1 : '';
}

# Freeze a node the way a hung machine is: SIGSTOP its postmaster, wait
# until it is stopped (then it forks no more), and only then list and stop
# its children.  Listing first would miss a backend forked in between (the
# coordinator opens connections all the time), and that one would go on
# answering: the node would be alive to the executor, and rightly so.
# Returns every pid stopped.
sub freeze_node
{
	my ($node) = @_;
	my $pm = tt_postmaster_pid($node);
	my %stopped = ($pm => 1);
	kill('STOP', $pm);
	my $until = time() + 10;
	while (proc_state($pm) ne 'T')
	{
		die "postmaster $pm of " . $node->name . " did not stop" if time() > $until;
		select(undef, undef, undef, 0.001);
	}
	for (;;)
	{
		my @new = grep { /^\d+$/ && !$stopped{$_} } split /\s+/, `pgrep -P $pm`;
		last unless @new;
		kill('STOP', @new);
		$stopped{$_} = 1 for @new;
	}
	return keys %stopped;
}

# ---------------------------------------------------------------- frozen worker
for my $executor ('real-time', 'task-tracker')
{
	# statement_timeout 20 s is only the safety net: the job must end
	# before it, and psql gives up at 30 s
	my $bg = $coord->background_psql('postgres', on_error_stop => 0, timeout => 30);
	$bg->set_query_timer_restart();
	$bg->query_until(qr/go/, "\\echo go\n" . (job_sql($executor, 16, 0.3, $both) =~ s/'45s'/'20s'/r));
	ok( $workers[0]->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.3)%' AND pid <> pg_backend_pid()"),
		"$executor: tasks running on worker 1");
	my $t0 = time();
	my @frozen = freeze_node($workers[0]);
	my $pm = tt_postmaster_pid($workers[0]);
	is(join(' ', grep { /^\d+$/ && proc_state($_) !~ /^[TZ]?$/ } ($pm, split /\s+/, `pgrep -P $pm`)),
		'', "$executor: worker 1 frozen whole (no process left running)");
	my $res = '';
	my $died = eval { $res = $bg->query("\\echo done"); 0 } // 1;
	my $took = time() - $t0;
	my $stderr = $bg->{stderr} . ($died ? ' (no answer from the coordinator within 30 s)' : '');
	kill('CONT', @frozen);
	if ($died) { $bg->{run}->kill_kill; } else { $bg->quit; }
	note("$executor with worker 1 frozen: $res / $stderr");
	is($res, "16|136|16\ndone", "$executor: worker frozen mid-job: failover, every row")
	  or diag("stderr: $stderr");
	unlike($stderr, qr/ERROR/, "$executor: ... no error");
	cmp_ok($took, '<', 30, sprintf('%s: ... in bounded time (%.1f s)', $executor, $took));
	# the thawed worker finishes or drops what it had
	for my $w (@workers)
	{
		ok($w->poll_query_until('postgres',
				"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.3)%' AND pid <> pg_backend_pid()"),
			"$executor: no task query left on " . $w->name);
	}
	tt_sql($workers[0], 'SELECT task_tracker.cleanup_job(job_id) FROM (SELECT DISTINCT job_id FROM task_tracker.tasks) j');
}

# ---------------------------------------------------------------- closed port, unregistered node
my $closed_port = PostgreSQL::Test::Cluster::get_free_port();
my $closed = $workers[0]->host . ":$closed_port";
my $unregistered = $workers[0]->host . ':1';
tt_add_node($coord, $workers[0], $closed_port);
for my $executor ('real-time', 'task-tracker')
{
	my $t0 = time();
	my ($rc, $out, $err) = tt_psql($coord, job_sql($executor, 2, 0, "'$closed'"), verbose => 1);
	my $took = time() - $t0;
	isnt($rc, 0, "$executor: the only placement's port is closed: the job fails");
	like($err, qr/ERROR:  (08001|08006):/, "$executor: ... with a connection error")
	  or diag($err);
	like($err, qr/\Q$closed_port\E/, "$executor: ... naming the node");
	cmp_ok($took, '<', 10, sprintf('%s: ... at once (%.1f s)', $executor, $took));
	is(tt_sql($coord, job_sql($executor, 4, 0, "'$closed', '$place[1]'")), '4|10|4',
		"$executor: a closed port with another placement: failover");
	tt_expect_error($coord, job_sql($executor, 2, 0, "'$unregistered'"), '42704',
		'node .* is not registered', "$executor: an unregistered placement");
}
tt_sql($coord, sprintf("SELECT task_tracker.remove_node(%s, %d)",
		tt_quote_literal($workers[0]->host), $closed_port));

# ---------------------------------------------------------------- kill -9 of the coordinator backend
for my $w (@workers)
{
	tt_sql($w, q{ALTER SYSTEM SET citus.task_tracker_job_expiry = '2s';
		ALTER SYSTEM SET client_connection_check_interval = '500ms';
		SELECT pg_reload_conf()});
}
for my $executor ('task-tracker', 'real-time')
{
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	my $sql = job_sql($executor, 4, 300, "'$place[0]'") =~ s/statement_timeout = '45s'/statement_timeout = 0/r;
	$bg->query_until(qr/go/, "\\echo go\n$sql");
	ok( $workers[0]->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()"),
		"$executor: long tasks running on worker 1");
	my $pid = tt_sql($coord, 'SELECT pid FROM task_tracker.jobs');
	ok($pid =~ /^\d+$/, "$executor: the jobs view shows the coordinator backend ($pid)");
	my $logpos = tt_log_position($coord);
	is(kill('KILL', $pid), 1, "$executor: kill -9 of the coordinator backend");
	eval { $bg->quit; };
	ok($coord->wait_for_log(qr/all server processes terminated; reinitializing/, $logpos),
		"$executor: the coordinator restarts after the crash");
	ok( $workers[0]->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()"),
		"$executor: the orphaned job's remote queries stop");
	ok($workers[0]->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.tasks'),
		"$executor: the orphaned job's tasks are reaped on the worker");
	ok($coord->wait_for_log(qr/database system is ready to accept connections/, $logpos),
		"$executor: the coordinator accepts connections again after the crash restart");
	is(tt_sql($coord, job_sql($executor, 16, 0, $both)), '16|136|16', "$executor: the coordinator runs jobs again");
}
for my $w (@workers)
{
	tt_sql($w, q{ALTER SYSTEM RESET citus.task_tracker_job_expiry;
		ALTER SYSTEM RESET client_connection_check_interval;
		SELECT pg_reload_conf()});
}

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left on the coordinator');
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], 'worker ' . ($i + 1));
}
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, @workers);
done_testing();
