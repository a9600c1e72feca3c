# Copyright: task_tracker authors.
#
# The task-tracker executor's cleanup holds interrupts; it must end within
# 30 s whatever citus.node_connection_timeout says (issue 9, defect 10: it
# held them for node_connection_timeout + 10 s, up to an hour).
#
# The node is registered as localhost:<port> of a TCP proxy in front of the
# worker (so its name is resolved before the job and connections carry
# hostaddr).  A job runs a long task there with node_connection_timeout =
# 1h; the proxy is then stopped (SIGSTOP: connections are accepted by the
# kernel and never answered, nothing comes back) and the job is canceled.
# The cleanup gives the node up within the cap, and a pg_terminate_backend
# sent while it runs is honoured then: the backend is gone within the cap.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my $worker = tt_node('worker', quiet => 1, conf => qq{
citus.task_tracker_job_expiry = '2s'
client_connection_check_interval = '500ms'
});

# a TCP proxy on 127.0.0.1 in front of the worker's Unix socket
my $proxy_port = PostgreSQL::Test::Cluster::get_free_port();
my $worker_sock = $worker->host . '/.s.PGSQL.' . $worker->port;
my ($proxy, $proxy_pid) = tt_start_proxy(listen_port => $proxy_port, server => $worker_sock);
END { if ($proxy_pid) { kill('CONT', $proxy_pid); kill('KILL', $proxy_pid); } }

my $place = "localhost:$proxy_port";
tt_sql($coord, "SELECT task_tracker.add_node('localhost', $proxy_port)");
my $job_sql = qq{SET citus.task_executor = 'task-tracker';
SET citus.node_connection_timeout = '1h';
SELECT * FROM task_tracker.run_job(\$\$SELECT q AS query, ARRAY['$place'] AS placements
	FROM unnest(ARRAY['SELECT 1', 'SELECT 2']) q\$\$) AS t(n int) ORDER BY n};
is(tt_sql($coord, $job_sql), "1\n2", 'a job through the proxy (node name resolved, hostaddr) runs');

my $bg = $coord->background_psql('postgres', on_error_stop => 0, timeout => 120);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started\n/, "\\echo started\n" . ($job_sql =~ s/'SELECT 2'/'SELECT 2 FROM pg_sleep(300)'/r) . ";\n");
ok( $worker->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()"),
	'the long task runs on the worker');

ok(kill('STOP', $proxy_pid), 'the node stops answering (proxy stopped)');
my $t0 = time();
tt_sql($coord, "SELECT pg_cancel_backend($pid)");
ok( $coord->poll_query_until('postgres',
		"SELECT state = 'failing' FROM task_tracker.jobs WHERE pid = $pid"),
	'the canceled job is in its cleanup');
tt_sql($coord, "SELECT pg_terminate_backend($pid)");
my $gone = tt_poll_until($coord, "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid", 40);
my $took = time() - $t0;
ok($gone, 'the backend honours pg_terminate_backend after the cleanup');
cmp_ok($took, '<', 36, sprintf('... within the 30 s cap, not node_connection_timeout (%.1f s)', $took));
eval { $bg->query('SELECT 1'); };
like($bg->{stderr}, qr/canceling statement due to user request/, 'the job ended with the cancel');
like($bg->{stderr}, qr/WARNING:  could not clean up job \d+ on node \Q$place\E: the node did not answer within 30000 ms/,
	'... and a WARNING naming the node that did not answer');
eval { $bg->quit; };

# the worker reaps the orphaned job once its coordinator connections are gone
kill('CONT', $proxy_pid);
$proxy->kill_kill;
$proxy_pid = undef;
ok($worker->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.tasks'),
	'the worker reaps the job (expiry)');
tt_check_no_leftovers($worker);
$_->stop for ($coord, $worker);
done_testing();
