# Copyright: task_tracker authors.
#
# Slow is not dead: a job's first connection to a node that does not answer
# within citus.node_connection_timeout (here: the worker's postmaster
# frozen, so the connection is queued but never set up) is tried again
# after a back-off, by both executors (tt_connect_failure /
# tt_connect_retry); a node that answers the second attempt runs the job's
# tasks, and the job succeeds.  Under a connection storm (221) that is a
# worker slow to fork backends.
#
# Asserts, for each executor: the coordinator logged the retry after the
# first attempt timed out; once the postmaster runs again, the job, whose
# only placement is that worker, returns every row without an error.
# Before the fix, the task-tracker executor failed the job at the first
# time-out ("could not connect to node ...: timeout expired").
#
# A node that never answers is still given up in bounded time (210, 222).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my $worker = tt_node('worker1', quiet => 1);
my $place = $worker->host . ':' . $worker->port;
tt_add_node($coord, $worker);
my $pm = tt_postmaster_pid($worker);

for my $executor ('real-time', 'task-tracker')
{
	my $pos = tt_log_position($coord);

	kill('STOP', $pm);
	my $p = tt_start_psql($coord, [
		"SET citus.task_executor = '$executor'",
		"SET citus.node_connection_timeout = '3s'",
		"SET log_min_messages = debug1",
		sprintf(q{SELECT count(*), sum(n) FROM task_tracker.run_job(
			$$SELECT format('SELECT %%s', s) AS query, ARRAY[%s] AS placements
			  FROM generate_series(1, 4) s$$) AS t(n int)}, tt_quote_literal($place)) ],
		timeout => 60);
	my $retried = eval {
		local $PostgreSQL::Test::Utils::timeout_default = 20;
		$coord->wait_for_log(
			qr/could not connect to node \Q$place\E, retrying: could not connect to node \Q$place\E: timeout expired/,
			$pos);
		1;
	};
	kill('CONT', $pm);
	ok($retried, "$executor: first connection timed out and was retried");
	my ($rc, $out, $err) = tt_finish_psql($p);
	is($out, "4|10\n", "$executor: slow first connection: the job ran on the node")
	  or diag("stderr: $err");
	unlike($err, qr/ERROR/, "$executor: ... no error");
}

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left');
tt_check_no_leftovers($worker, 'worker 1');
$_->stop for ($coord, $worker);
done_testing();
