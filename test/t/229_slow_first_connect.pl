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
# Also: a cancel whose side connection times out on such a node still
# drops the job there (the case at the end).
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

# A cancel whose side connection is not set up in time: the task-tracker
# executor cancels a job's query in flight over another connection to the
# node (pg_cancel_backend and cleanup_job), its control connection if it
# has one.  In a new session (no idle
# cached connection) with the worker's postmaster frozen, that connection
# times out; the node is alive all the same (its backends run the job's
# tasks), so the cleanup drains the job's own connection (its query, a wait
# for the tasks, ends within a second) and drops the job over it, without a
# new backend.  Before the fix the cleanup gave up at once with
# "could not reach the node to cancel the job's query", and the tasks went
# on running on a live worker (221 saw this under load).
#
# A job keeps a control connection per node for its cancel (110) when the
# budget has room; with a budget of one connection per node it has none,
# and the cancel needs a new connection, as here.
$coord->append_conf('postgresql.conf', "citus.max_shared_pool_size = 1\n");
$coord->reload;
ok($coord->poll_query_until('postgres',
		q{SELECT current_setting('citus.max_shared_pool_size') = '1'}),
	'cancel: a budget of one connection per node');
{
	my $pos = tt_log_position($coord);
	my $p = tt_start_psql($coord, [
		"SET citus.task_executor = 'task-tracker'",
		"SET citus.node_connection_timeout = '2s'",
		"SET log_min_messages = debug1",
		"SET application_name = 'tt_229_cancel'",
		sprintf(q{SELECT count(*) FROM task_tracker.run_job(
			$$SELECT 'SELECT pg_sleep(300)' AS query, ARRAY[%s] AS placements
			  FROM generate_series(1, 2) s$$) AS t(x text)}, tt_quote_literal($place)) ],
		timeout => 60);
	ok(tt_poll_until($worker,
			q{SELECT count(*) = 2 FROM task_tracker.tasks WHERE status = 'running'}, 30),
		'cancel: the job\'s tasks run on the worker');
	kill('STOP', $pm);
	tt_sql($coord, q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
					 WHERE application_name = 'tt_229_cancel'});
	my $seen = '';
	eval {
		local $PostgreSQL::Test::Utils::timeout_default = 30;
		$coord->wait_for_log(
			qr/did not reach node \Q$place\E, cleaning up over the job's connection|could not clean up job/,
			$pos);
	};
	# the job is dropped while the postmaster is still frozen
	ok(tt_poll_until($coord, q{SELECT count(*) = 0 FROM pg_stat_activity
		WHERE application_name = 'tt_229_cancel' AND state = 'active'}, 30),
		'cancel: the job ended while the worker could start no backend');
	my $log = slurp_file($coord->logfile, $pos);
	kill('CONT', $pm);
	like($log, qr/did not reach node \Q$place\E, cleaning up over the job's connection/,
		'cancel: a side connection that timed out: the cleanup goes over the job\'s connection');
	my ($rc, $out, $err) = tt_finish_psql($p);
	like($err, qr/57014|canceling statement due to user request/,
		'cancel: the job ends with the cancel');
	unlike($err, qr/WARNING|could not clean up/, 'cancel: ... and the node was cleaned up')
	  or diag("stderr: $err");
	ok(tt_poll_until($worker, 'SELECT count(*) = 0 FROM task_tracker.tasks', 20),
		'cancel: the job\'s tasks are gone from the worker');
}

$coord->append_conf('postgresql.conf', "citus.max_shared_pool_size = 0\n");
$coord->reload;

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left');
tt_check_no_leftovers($worker, 'worker 1');
$_->stop for ($coord, $worker);
done_testing();
