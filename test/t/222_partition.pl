
# Network partition between the coordinator and a worker, under both
# executors.
#
# Worker 1 runs inside a network namespace `tt_w1` that this test creates,
# linked to the host by a veth pair (10.200.0.1/30 on the host side,
# 10.200.0.2/30 inside — addresses of this test's own namespace, nothing
# else is touched), and listens on 10.200.0.2; the coordinator registers
# 10.200.0.2:<port>.  Worker 2 and the coordinator stay in the host
# namespace (the test itself reaches every node over its Unix socket).
# In the middle of a job of 16 pg_sleep(0.5) tasks the link is cut
# (`ip -n tt_w1 link set tt_w1n down`: no FIN, no RST — the worker simply
# stops answering).  The namespace's side goes down, not the host's: the
# host keeps its route to 10.200.0.0/30 (marked linkdown), so packets to the
# worker vanish; with the host's side down that route would go and the
# packets would follow the default route, where a gateway may answer (on
# the CI machine an HTTP proxy does, which libpq reports as "received
# invalid response to SSL negotiation: H").  Expected, with small citus.node_connection_timeout and
# citus.node_reconnect_timeout: the job ends in bounded time with all its
# rows by failover to worker 2 (no task has sent rows before the cut, so
# every task may move; README "A node that stops answering") — never by
# statement_timeout, and never with an error.  The link is restored and
# worker 1's leftovers of the job (tasks, task queries, sessions of the
# coordinator) go away in bounded time (job expiry 2 s, TCP keepalives and
# client_connection_check_interval on the worker), and the coordinator runs
# jobs on worker 1 again.
#
# Creating a network namespace needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)
# while the TAP tests run as the unprivileged postgres OS user.  The test
# uses, in this order: the capabilities it has itself (`ip` works); the
# privileged helper scripts/test.sh installs for its run
# (/usr/local/libexec/task_tracker-test-priv through `sudo -n`: verbs
# netns-create, link-down, link-up, netns-pg-start, netns-destroy for exactly
# this namespace, veth pair and these addresses, the server started as this
# OS user); a password-less `sudo -n ip`.  It is skipped with the reason when
# it has none of them (e.g. prove run by hand).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $ns = 'tt_w1';
my $host_if = 'tt_w1h';
my $ns_if = 'tt_w1n';
my $host_addr = '10.200.0.1';
my $ns_addr = '10.200.0.2';

# ---------------------------------------------------------------- privilege
# (tt_skip_test: a skip_all plan; scripts/test.sh counts the file as skipped
# and prints the reason)
my $ip = (grep { -x $_ } qw(/usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip))[0];
tt_skip_test('iproute2 (ip) is not installed') unless $ip;
# $mode: 'direct' (ip with our own capabilities, or through sudo -n ip) or
# 'helper' (the privileged test helper of scripts/test.sh)
my ($mode, @priv);
sub quiet_ok { return system("@_ >/dev/null 2>&1") == 0; }
my ($helper, $no_helper) = tt_priv_helper();
if (quiet_ok($ip, 'netns', 'add', 'tt_probe'))
{
	quiet_ok($ip, 'netns', 'del', 'tt_probe');
	($mode, @priv) = ('direct');
}
elsif ($helper)
{
	$mode = 'helper';
}
elsif (-x '/usr/bin/sudo' && quiet_ok('/usr/bin/sudo', '-n', $ip, 'netns', 'add', 'tt_probe'))
{
	quiet_ok('/usr/bin/sudo', '-n', $ip, 'netns', 'del', 'tt_probe');
	($mode, @priv) = ('direct', '/usr/bin/sudo', '-n');
}
else
{
	tt_skip_test("creating the network namespace $ns needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): "
	  . "this test runs as the unprivileged OS user uid $<, which has neither the capabilities, "
	  . "nor the privileged test helper of scripts/test.sh ($no_helper), "
	  . "nor a password-less `sudo -n ip`");
}
note('network namespace through: ' . ($mode eq 'helper' ? "@$helper" : "@priv $ip"));

sub net
{
	my @cmd = (@priv, $ip, @_);
	note("running: @cmd");
	system(@cmd) == 0 or BAIL_OUT("failed: @cmd");
	return;
}

sub helper
{
	tt_priv(@_) or BAIL_OUT("failed: task_tracker-test-priv @_");
	return;
}

sub net_teardown
{
	if ($mode eq 'helper')
	{
		tt_priv('netns-destroy');
		return;
	}
	quiet_ok(@priv, $ip, 'link', 'del', $host_if);
	quiet_ok(@priv, $ip, 'netns', 'del', $ns);
	return;
}

# set_link('up' | 'down'): the namespace's side of the veth pair
sub set_link
{
	my ($state) = @_;
	return helper("link-$state") if $mode eq 'helper';
	return net('-n', $ns, 'link', 'set', $ns_if, $state);
}

# a namespace left by an earlier, killed run
net_teardown();
my $created = 1;
my $worker1;
END
{
	# never leave the namespace or a server inside it behind (and keep the
	# test's exit status)
	local $?;
	if ($created)
	{
		if ($worker1 && defined $worker1->{_pid})
		{
			eval { $worker1->stop('immediate'); };
		}
		net_teardown();
	}
}
if ($mode eq 'helper')
{
	# the same namespace, veth pair and addresses, fixed in the helper
	helper('netns-create');
}
else
{
	net('netns', 'add', $ns);
	net('link', 'add', $host_if, 'type', 'veth', 'peer', 'name', $ns_if);
	net('link', 'set', $ns_if, 'netns', $ns);
	net('addr', 'add', "$host_addr/30", 'dev', $host_if);
	net('link', 'set', $host_if, 'up');
	net('-n', $ns, 'addr', 'add', "$ns_addr/30", 'dev', $ns_if);
	net('-n', $ns, 'link', 'set', $ns_if, 'up');
	net('-n', $ns, 'link', 'set', 'lo', 'up');
}

# ---------------------------------------------------------------- nodes
my $worker_conf = qq{
citus.task_tracker_job_expiry = '2s'
citus.max_running_tasks_per_node = 2
client_connection_check_interval = '500ms'
tcp_keepalives_idle = 1
tcp_keepalives_interval = 1
tcp_keepalives_count = 2
tcp_user_timeout = 3000
};
my $coord = tt_node('coordinator', quiet => 1);
$worker1 = tt_node('worker1', quiet => 1, no_start => 1,
	conf => $worker_conf . "listen_addresses = '$ns_addr'\n");
$worker1->append_conf('pg_hba.conf', "host all all $host_addr/32 trust\n");
my $worker2 = tt_node('worker2', quiet => 1, conf => $worker_conf);
my @workers = ($worker1, $worker2);

# start worker 1 inside the namespace, as this (unprivileged) OS user
if ($mode eq 'helper')
{
	helper('netns-pg-start', $worker1->data_dir, $worker1->logfile, 'worker1');
}
else
{
	my $gid = (split ' ', $()[0];
	my @cmd = (@priv, $ip, 'netns', 'exec', $ns,
		'setpriv', "--reuid=$<", "--regid=$gid", '--clear-groups',
		$worker1->installed_command('pg_ctl'), '-w', '-D', $worker1->data_dir,
		'-l', $worker1->logfile, '-o', '--cluster-name=worker1', 'start');
	note("running: @cmd");
	system(@cmd) == 0 or BAIL_OUT('could not start worker 1 in the namespace');
}
$worker1->_update_pid(1);
$worker1->safe_psql('postgres', 'CREATE EXTENSION task_tracker');
{
	my $pm = tt_postmaster_pid($worker1) // 0;
	my ($theirs, $ours) = (readlink("/proc/$pm/ns/net") // 'none', readlink('/proc/self/ns/net') // '?');
	isnt($theirs, $ours, "worker 1 runs in a network namespace of its own ($theirs)");
}

my $w1 = "$ns_addr:" . $worker1->port;
my $w2 = $worker2->host . ':' . $worker2->port;
tt_sql($coord, sprintf("SELECT task_tracker.add_node('%s', %d)", $ns_addr, $worker1->port));
tt_add_node($coord, $worker2);

sub job_commands
{
	my ($executor, $sleep) = @_;
	return (
		"SET citus.task_executor = '$executor'",
		"SET citus.max_connections_per_node = 2",
		"SET citus.node_connection_timeout = '1s'",
		"SET citus.node_reconnect_timeout = '2s'",
		"SET statement_timeout = '40s'",
		qq{SELECT count(*), sum(n), count(DISTINCT n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep($sleep)', s) AS query,
	         ARRAY['$w1', '$w2'] AS placements
	  FROM generate_series(1, 16) s\$\$) AS t(n int)});
}

is(tt_sql($coord, join(";\n", job_commands('real-time', 0))), '16|136|16',
	'the coordinator reaches worker 1 through the veth pair');
is(tt_sql($worker1, q{SELECT count(*) FROM task_tracker.tasks}), '0', 'worker 1 starts clean');

for my $executor ('real-time', 'task-tracker')
{
	my $p = tt_start_psql($coord, [ job_commands($executor, '0.5') ], timeout => 45);
	ok( tt_poll_until($worker1,
			q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()},
			20),
		"$executor: tasks running on worker 1");
	my $job = tt_sql($coord, 'SELECT job_id FROM task_tracker.jobs');
	$job = -1 unless $job =~ /^\d+$/;

	# cut the link: worker 1 stops answering, its connections stay open
	my $t0 = time();
	set_link('down');
	my ($rc, $out, $err) = tt_finish_psql($p);
	my $took = time() - $t0;
	chomp $out;
	note("$executor with the link cut: rc " . ($rc // 'undef') . ", out '$out', err '$err'");
	# every task has another placement and none has sent rows before the
	# cut (each sends its one row when it ends): failover is the only
	# correct outcome (README, "A node that stops answering")
	is($rc, 0, "$executor: link cut mid-job: the job succeeds") or diag("err: $err");
	is($out, '16|136|16', "$executor: ... with every row, by failover to worker 2");
	unlike($err, qr/statement timeout|57014/, "$executor: ... not ended by statement_timeout");
	# The budget, from the settings above: silence is noticed after the
	# wait_for_tasks timeout (1 s) + node_reconnect_timeout (2 s), the
	# reconnection attempts take node_reconnect_timeout (2 s), the tasks
	# left re-run on worker 2 (<= 8 x 0.5 s over 2 slots), and the cleanup
	# gives worker 1 node_connection_timeout + node_reconnect_timeout (3 s):
	# about 12 s.  30 s leaves room for a loaded machine and stays below
	# statement_timeout (40 s), which must never be what ends the job.
	cmp_ok($took, '<', 30, sprintf('%s: ... in bounded time (%.1f s)', $executor, $took));
	is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0',
		"$executor: no job left on the coordinator");

	# restore the link: worker 1's leftovers go away
	set_link('up');
	$t0 = time();
	ok(tt_poll_until($worker1, "SELECT count(*) = 0 FROM task_tracker.tasks WHERE job_id = $job", 20),
		"$executor: the job's tasks on worker 1 are reaped")
	  or diag(tt_sql($worker1, 'SELECT job_id, task_id, status, attempts FROM task_tracker.tasks ORDER BY 1, 2'));
	ok( tt_poll_until($worker1,
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()},
			20),
		"$executor: no task query left running on worker 1");
	ok( tt_poll_until($worker1,
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'task_tracker%'}, 20),
		"$executor: no coordinator connection or task session left on worker 1")
	  or diag(tt_sql($worker1, q{SELECT pid, application_name, state, query FROM pg_stat_activity
		WHERE application_name LIKE 'task_tracker%'}));
	note(sprintf('%s: worker 1 clean %.1f s after the link came back', $executor, time() - $t0));

	# and the coordinator uses worker 1 again
	is(tt_sql($coord, join(";\n", job_commands($executor, 0))), '16|136|16',
		"$executor: jobs run again after the link is back");
}

tt_no_crash_in_log($_) for ($coord, @workers);
tt_check_no_leftovers($worker1, 'worker 1');
tt_check_no_leftovers($worker2, 'worker 2');
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, @workers);
net_teardown();
done_testing();
