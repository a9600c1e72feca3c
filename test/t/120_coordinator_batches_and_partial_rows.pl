# Copyright: task_tracker authors.
#
# Coordinator promises of README ("Run a job", "A node that stops
# answering", "Watch jobs", "Coordinator settings") that had no test:
#
# * citus.max_assign_task_batch_size: the task-tracker executor hands a
#   node its tasks in assign_tasks round trips of at most that many tasks
#   (counted in the worker's statement log);
# * real-time, a task that already sent rows when its worker backend is
#   terminated (the worker's error, 57P01) or its node stops answering
#   (08006): the job fails naming the node and the task — it neither
#   returns the partial rows nor fails over (its rows would be duplicated),
#   although another placement is there;
# * real-time, a task's remote error keeps the remote CONTEXT (the
#   PL/pgSQL function on the worker that raised it), followed by ours
#   naming the task, the node and the query (postgres_fdw's way); a
#   connection cut in the middle of a task's rows, and an error libpq makes
#   without a SQLSTATE (a proxy slips in a bad message), are connection
#   failures (08006) naming the node;
# * the jobs view while a task-tracker job runs: state 'running',
#   tasks_total, tasks_done counting finished tasks, tasks_failed counting
#   an attempt given up at a placement (failover); empty afterwards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# ---------------------------------------------------------------- batch size
tt_sql($workers[0], q{ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf()});
ok($workers[0]->poll_query_until('postgres', q{SELECT current_setting('log_statement') = 'all'}),
	'worker 1 logs its statements');

# batches($batch): run a 10-task job on worker 1 with that batch size;
# returns the task ids of each assign_tasks statement worker 1 got
sub batches
{
	my ($batch) = @_;
	my $logpos = tt_log_position($workers[0]);
	is( tt_sql($coord, qq{SET citus.task_executor = 'task-tracker';
		SET citus.max_assign_task_batch_size = $batch;
		SELECT count(*), sum(n) FROM task_tracker.run_job(\$\$
			SELECT format('SELECT %s', s) AS query, ARRAY['$place[0]'] AS placements
			  FROM generate_series(1, 10) s\$\$) AS t(n int)}),
		'10|55', "batch size $batch: the job returns every row");
	my $log = slurp_file($workers[0]->logfile, $logpos);
	# pipelined form: assign_tasks(<job>, '{ids}'::integer[], ...); with
	# parameters: "parameters: $1 = '<job>', $2 = '{ids}'"
	my @ids = ($log =~ /task_tracker\.assign_tasks\(\d+, '\{([\d,]*)\}'::integer\[\]/g,
		$log =~ /parameters: \$1 = '\d+', \$2 = '\{([\d,]*)\}'/g);
	return map { [ split /,/ ] } @ids;
}
my @b = batches(3);
note('batches of 3: ' . join(' ', map { '{' . join(',', @$_) . '}' } @b));
is(scalar(@b), 4, 'citus.max_assign_task_batch_size = 3: 10 tasks in 4 assign_tasks round trips');
is(scalar(grep { @$_ > 3 } @b), 0, '... none with more than 3 tasks');
is(eval { my $n = 0; $n += @$_ for @b; $n }, 10, '... 10 tasks in all');
@b = batches(64);
is(scalar(@b), 1, 'the default (64): 10 tasks in one assign_tasks');
is(scalar(@{ $b[0] // [] }), 10, '... with all 10 tasks');
tt_sql($workers[0], q{ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()});

# ---------------------------------------------------------------- errors after rows
# A real-time task sends 5,000 rows of 100 bytes (well past the send
# buffers: they reach the coordinator), then sleeps.  Its first placement
# then fails in two ways; it has a second placement, but a task that
# already delivered rows must not move (its rows would be duplicated), and
# the job must not return the partial rows.
my $task = q{SELECT CASE WHEN g = 5001 THEN pg_sleep(61)::text ELSE repeat('x', 100) END FROM generate_series(1, 10000) g};
my $sleeping = q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(61)%' AND pid <> pg_backend_pid()};

sub start_rows_job
{
	my ($what) = @_;
	my $p = tt_start_psql($coord, [ "SET citus.task_executor = 'real-time'",
			"SET citus.node_connection_timeout = '1s'",
			"SELECT count(*) FROM task_tracker.run_job(\$\$SELECT "
			  . tt_quote_literal($task) . " AS query, ARRAY['$place[0]', '$place[1]'] AS placements\$\$) AS t(v text)" ],
		timeout => 60);
	ok( $workers[0]->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(61)%' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()}),
		"$what: the task sent 5,000 rows and sleeps on worker 1");
	return $p;
}

sub check_failed_job
{
	my ($what, $p, $code, $msg) = @_;
	my ($rc, $out, $err) = tt_finish_psql($p);
	isnt($rc // 'timeout', 0, "$what: the job fails") or diag("out: $out");
	is($out, '', "$what: ... returning no rows (not the partial ones)");
	like($err, qr/ERROR:  $code: $msg/, "$what: ... with $code") or diag($err);
	like($err, qr/task 1 of job \d+ on node \Q$place[0]\E/, "$what: ... naming the task and the node") or diag($err);
	is(tt_sql($workers[1], $sleeping), '0', "$what: ... and the task did not move to worker 2");
	return;
}

# (a) its backend on worker 1 is terminated: the worker's own error
# (57P01, README "Run a job": a task that fails everywhere it may run fails
# the job with the worker's error and SQLSTATE)
{
	my $p = start_rows_job('terminated backend');
	is( tt_sql($workers[0],
			q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(61)%' AND pid <> pg_backend_pid()}),
		'1', 'terminated backend: pg_terminate_backend on worker 1');
	check_failed_job('terminated backend', $p, '57P01', 'terminating connection due to administrator command');
}

# (b) worker 1 stops answering (SIGSTOP of every process: the connection
# stays open, nothing arrives): README "A node that stops answering" — the
# job fails with 08006 naming the node and the task, in bounded time
{
	my $p = start_rows_job('node stops answering');
	my $pm = tt_postmaster_pid($workers[0]);
	my @frozen = ($pm, grep { /^\d+$/ } split /\s+/, `pgrep -P $pm`);
	cmp_ok(scalar(@frozen), '>', 3, 'node stops answering: worker 1 and its children (pgrep)');
	kill('STOP', @frozen);
	check_failed_job('node stops answering', $p, '08006', 'node .* stopped answering');
	kill('CONT', @frozen);
	is( tt_sql($workers[0],
			q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(61)%' AND pid <> pg_backend_pid()}),
		'1', 'node stops answering: the orphaned task query ends on worker 1');
}

# ---------------------------------------------------------------- jobs view
# 4 tasks on worker 1, two of them blocked on an advisory lock the test
# holds there; a fifth task's first placement is a closed port (an attempt
# given up at a placement), its second worker 2
{
	my $closed_port = PostgreSQL::Test::Cluster::get_free_port();
	tt_add_node($coord, $workers[0], $closed_port);
	my $closed = $workers[0]->host . ":$closed_port";
	my $lock = $workers[0]->background_psql('postgres');
	$lock->query_safe('SELECT pg_advisory_lock(120)');
	my $p = tt_start_psql($coord, [ "SET citus.task_executor = 'task-tracker'",
			qq{SELECT count(*), sum(n) FROM task_tracker.run_job(\$\$
			SELECT q AS query, p AS placements FROM (VALUES
				('SELECT 1', ARRAY['$place[0]']),
				('SELECT 2', ARRAY['$place[0]']),
				('SELECT 3 FROM pg_advisory_lock_shared(120)', ARRAY['$place[0]']),
				('SELECT 4 FROM pg_advisory_lock_shared(120)', ARRAY['$place[0]']),
				('SELECT 5', ARRAY['$closed', '$place[1]'])) v(q, p)\$\$) AS t(n int)} ],
		timeout => 60);
	ok( $coord->poll_query_until('postgres',
			q{SELECT state = 'running' AND tasks_total = 5 AND tasks_done = 3 FROM task_tracker.jobs}),
		'jobs view: running, 5 tasks, 3 done while 2 wait')
	  or diag(tt_sql($coord, 'SELECT * FROM task_tracker.jobs'));
	is( tt_sql($coord, q{SELECT executor, user_name, tasks_failed, pid <> pg_backend_pid() FROM task_tracker.jobs}),
		'task-tracker|' . tt_sql($coord, 'SELECT current_user') . '|1|t',
		'jobs view: executor, user, and one attempt given up at a placement (the closed port)');
	$lock->query_safe('SELECT pg_advisory_unlock(120)');
	$lock->quit;
	my ($rc, $out, $err) = tt_finish_psql($p);
	is("$rc $out", "0 5|15\n", 'the job finishes with every row') or diag($err);
	ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.jobs'),
		'jobs view: empty after the job');
	tt_sql($coord, sprintf("SELECT task_tracker.remove_node(%s, %d)", tt_quote_literal($workers[0]->host), $closed_port));
}

# ---------------------------------------------------------------- remote errors
# README "Run a job": the job fails with the task's remote error, its
# SQLSTATE and message, and its remote CONTEXT (here: the PL/pgSQL function
# on worker 1 that raised it) before ours naming the task, node and query.
tt_sql($workers[0], q{CREATE FUNCTION public.tt_remote_boom() RETURNS int LANGUAGE plpgsql AS $f$
BEGIN
	RAISE EXCEPTION 'remote boom' USING ERRCODE = '22023';
END
$f$});
{
	my ($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = 'real-time';
SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT public.tt_remote_boom()' AS query, ARRAY['$place[0]'] AS placements\$\$) AS t(n int)},
		verbose => 1);
	isnt($rc, 0, 'remote error in a PL/pgSQL function: the job fails');
	like($err, qr/ERROR:  22023: remote boom/, '... with the remote SQLSTATE and message') or diag($err);
	like($err,
		qr/CONTEXT:  PL\/pgSQL function tt_remote_boom\(\) line \d+ at RAISE\ntask 1 of job \d+ on node \Q$place[0]\E, query: SELECT public\.tt_remote_boom\(\)/,
		'... keeping the remote CONTEXT, then naming the task, the node and the query') or diag($err);
}
tt_sql($workers[0], 'DROP FUNCTION public.tt_remote_boom()');

# job_via_proxy(%opts): a real-time task of 10,000 rows on worker 1, through
# a proxy (a Unix socket of its own, started with %opts) that acts as row
# 5,000 passes; returns (the proxy's log, psql's exit code and stderr, the
# placement)
sub job_via_proxy
{
	my (%opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir_short();
	my ($proxy) = tt_start_proxy(
		listen_unix => "$dir/.s.PGSQL." . $workers[0]->port,
		server => $workers[0]->host . '/.s.PGSQL.' . $workers[0]->port,
		cut_marker => 'cut-here', cut_log => "$dir/proxy.log", %opts);
	my $node = sprintf('%s, %d', tt_quote_literal($dir), $workers[0]->port);
	my $via_proxy = "$dir:" . $workers[0]->port;
	tt_sql($coord, "SELECT task_tracker.add_node($node)");
	my ($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = 'real-time';
SELECT count(*) FROM task_tracker.run_job(\$\$SELECT \$q\$SELECT CASE WHEN g = 5000 THEN 'cut-' || 'here' ELSE repeat('x', 100) END FROM generate_series(1, 10000) g\$q\$ AS query, ARRAY['$via_proxy'] AS placements\$\$) AS t(v text)},
		verbose => 1);
	$proxy->kill_kill;
	tt_sql($coord, "SELECT task_tracker.remove_node($node)");
	return ((-e "$dir/proxy.log" ? slurp_file("$dir/proxy.log") : ''), $rc, $err, $via_proxy);
}

# The connection is cut: the job fails with a connection failure, 08006,
# naming the node.
{
	my ($log, $rc, $err, $via_proxy) = job_via_proxy();
	is($log, "cut\n", 'connection cut mid-task: the proxy cut it as the row passed');
	isnt($rc, 0, '... the job fails');
	like($err, qr/ERROR:  08006: /, '... with a connection failure (08006)') or diag($err);
	like($err, qr/task 1 of job \d+ on node \Q$via_proxy\E/, '... naming the task and the node') or diag($err);
}

# A message of a type no server sends ('!') is slipped in before the row's
# CopyData message (type 'd' and its length: 5 bytes): libpq makes an error
# of it without a SQLSTATE, which is a connection failure (08006, as
# postgres_fdw has it), not an internal error (XX000).
{
	my ($log, $rc, $err, $via_proxy) = job_via_proxy(inject => "!\0\0\0\4", inject_back => 5);
	is($log, "injected\n", 'error without a SQLSTATE: the proxy slipped in a bad message');
	isnt($rc, 0, '... the job fails');
	like($err, qr/ERROR:  08006: unexpected response from server/, '... with a connection failure (08006), not XX000')
	  or diag($err);
	like($err, qr/task 1 of job \d+ on node \Q$via_proxy\E/, '... naming the task and the node') or diag($err);
}

for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], 'worker ' . ($i + 1));
}
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, @workers);

done_testing();
