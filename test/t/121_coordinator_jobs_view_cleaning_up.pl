# Copyright: task_tracker authors.
#
# The jobs view's last state without a test (issue 9, "the jobs view's
# states and counters"; 'starting' is in 223, 'running' and the counters
# in 120, 'failing' in 109): 'cleaning up', a task-tracker job whose tasks
# are all done while the executor removes it from the workers.
#
# Worker 1 is reached through a TCP proxy.  A job's four tasks run there
# (worker 2 is their second placement); the proxy is stopped (SIGSTOP: the
# node stops answering) while they run, the tasks fail over to worker 2 and
# finish, and the cleanup then waits for worker 1 (up to
# node_connection_timeout + node_reconnect_timeout): meanwhile the view
# says 'cleaning up', with every task done and the attempts given up at a
# placement counted.  Once the proxy goes on, the job returns every row.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1, conf => "citus.task_tracker_job_expiry = '2s'\n") } (1, 2);

my $proxy_port = PostgreSQL::Test::Cluster::get_free_port();
my ($proxy, $proxy_pid) = tt_start_proxy(listen_port => $proxy_port,
	server => $workers[0]->host . '/.s.PGSQL.' . $workers[0]->port);
END { if ($proxy_pid) { kill('CONT', $proxy_pid); kill('KILL', $proxy_pid); } }

tt_sql($coord, "SELECT task_tracker.add_node('localhost', $proxy_port)");
tt_add_node($coord, $workers[1]);
my $via_proxy = "localhost:$proxy_port";
my $w2 = $workers[1]->host . ':' . $workers[1]->port;

my $job = tt_start_psql($coord, [ "SET citus.task_executor = 'task-tracker'",
		"SET citus.node_connection_timeout = '3s'",
		"SET citus.node_reconnect_timeout = '3s'",
		qq{SELECT count(*), sum(n) FROM task_tracker.run_job(\$\$
			SELECT format('SELECT %s FROM pg_sleep(1)', s) AS query,
			       ARRAY['$via_proxy', '$w2'] AS placements
			  FROM generate_series(1, 4) s\$\$) AS t(n int)} ],
	timeout => 90);
ok( $workers[0]->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'task_tracker'
		    AND query LIKE '%pg_sleep(1)%'}),
	'the tasks run on worker 1');
ok(kill('STOP', $proxy_pid), 'worker 1 stops answering (its proxy is stopped)');

ok( $coord->poll_query_until('postgres',
		q{SELECT state = 'cleaning up' FROM task_tracker.jobs}),
	"jobs view: 'cleaning up' while the executor waits to remove the job from worker 1")
  or diag(tt_sql($coord, 'SELECT * FROM task_tracker.jobs'));
is(tt_sql($coord, q{SELECT executor, tasks_total, tasks_done, tasks_failed > 0 FROM task_tracker.jobs}),
	'task-tracker|4|4|t', '... every task done, the attempts given up at worker 1 counted');

ok(kill('CONT', $proxy_pid), 'worker 1 answers again');
my ($rc, $out, $err) = tt_finish_psql($job);
is("$rc $out", "0 4|10\n", 'the job returns every row') or diag($err);
ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.jobs'),
	'jobs view: empty after the job');

# what worker 1 still had is removed (by the cleanup, or by job expiry)
ok($workers[0]->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.tasks'),
	'worker 1 keeps no task of the job');
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], 'worker ' . ($i + 1));
}
tt_check_no_leftovers($coord, 'coordinator');
$proxy->kill_kill;
$proxy_pid = undef;
$_->stop for ($coord, @workers);
done_testing();
