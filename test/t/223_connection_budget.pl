
# Many sessions, one cluster (SPEC §11): 50 concurrent pgbench clients on
# the coordinator run 16-task jobs through both executors against two
# workers with max_connections = 30, under the default coordinator-wide
# budget per node (citus.max_shared_pool_size = 0), which the coordinator
# learns from each worker when it first connects: 30 less 3 reserved
# connections and the tracker's 8 task sessions, 19.
#
# Asserts: every job succeeds with exactly the right rows (pgbench checks
# each answer with \gset / \if and aborts the client on a wrong one); the
# budget in force is the one learned from the workers; the coordinator's
# connections to each worker, sampled on the worker from pg_stat_activity
# all along, never exceed it, and the budget was
# really used (sessions queued: the connection_pool view showed waiters);
# a session waiting for a slot is cancelled within 2 s; a session idle at the
# client gives up its cached connection when another session needs the slot;
# afterwards no slot stays in use, nothing is left on the workers.
#
# Without the budget, the sessions open up to 8 connections each per worker
# and the workers refuse them (53300, too many clients): jobs fail.  With a
# default budget that is not learned from the workers (it was the
# coordinator's max_connections, 80), connections go above 19.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $clients = 50;

my $coord = tt_node('coordinator', quiet => 1, conf => "max_connections = 80\n");
my @workers = map { tt_node("worker$_", quiet => 1, conf => "max_connections = 30\n") } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# what a worker can take from the coordinator: 30 - 3 - 8 = 19
my $budget = tt_sql($workers[0], q{SELECT current_setting('max_connections')::int
	- current_setting('superuser_reserved_connections')::int
	- current_setting('citus.max_running_tasks_per_node')::int});
is($budget, '19', 'a worker can take 19 connections from the coordinator');

# 16 tasks, each a slice of 1..1000 that takes a little time on the worker;
# placements alternate between the workers
tt_sql($coord, sprintf(q{
CREATE TABLE public.tasks16 AS
SELECT format('SELECT i::bigint AS v FROM generate_series(1, 1000) i, pg_sleep(0.005) WHERE mod(i, 16) = %%s', k) AS query,
       CASE WHEN k %% 2 = 0 THEN ARRAY[%s, %s] ELSE ARRAY[%s, %s] END AS placements
  FROM generate_series(0, 15) k;
}, map { tt_quote_literal($_) } @place[0, 1, 1, 0]));

# Sample the coordinator's connections on each worker, and the budget view
# on the coordinator, every 5 ms until told to stop (a sampling period, not
# a wait for anything).
for my $n ($coord, @workers)
{
	tt_sql($n, q{
CREATE TABLE public.samples (conns int, waiting int);
CREATE TABLE public.stop_sampling (x int);
CREATE PROCEDURE public.sample(coord boolean) LANGUAGE plpgsql AS $$
BEGIN
	LOOP
		IF coord THEN
			INSERT INTO public.samples
			SELECT coalesce(max(in_use), 0), coalesce(sum(waiting), 0) FROM task_tracker.connection_pool;
		ELSE
			INSERT INTO public.samples
			SELECT count(*), 0 FROM pg_stat_activity
			 WHERE application_name = 'task_tracker coordinator';
		END IF;
		COMMIT;
		EXIT WHEN EXISTS (SELECT FROM public.stop_sampling);
		PERFORM pg_sleep(0.005);
	END LOOP;
END
$$;
});
}
my @samplers = map {
	tt_start_psql($_, [ 'CALL public.sample(' . ($_ == $coord ? 'true' : 'false') . ')' ],
		timeout => 120)
} ($coord, @workers);
for my $n ($coord, @workers)
{
	ok($n->poll_query_until('postgres', 'SELECT count(*) > 0 FROM public.samples'),
		$n->name . ': sampler running');
}

# ---------------------------------------------------------------- the load
my $script = sub {
	my ($executor) = @_;
	return qq{SET citus.task_executor = '$executor';
SELECT count(*) AS n, sum(v) AS s FROM task_tracker.run_job('SELECT query, placements FROM public.tasks16') AS t(v bigint) \\gset
\\if :n != 1000 OR :s != 500500
SELECT 'wrong answer from $executor: ' || :n || ' rows, sum ' || :s AS wrong, 1/0 AS fail;
\\endif
};
};
my $dir = PostgreSQL::Test::Utils::tempdir;
for my $e ('real-time', 'task-tracker')
{
	open(my $fh, '>', "$dir/$e.sql") or die;
	print $fh $script->($e);
	close $fh;
}
my $t0 = time();
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ $coord->installed_command('pgbench'), '-n', '-c', $clients, '-j', 4, '-t', 3,
	  '-f', "$dir/real-time.sql\@1", '-f', "$dir/task-tracker.sql\@1",
	  '-d', $coord->connstr('postgres') ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));
my $took = time() - $t0;
my ($done) = $out =~ /number of transactions actually processed: (\d+)/;
my ($failed) = $out =~ /number of failed transactions: (\d+)/;
note(sprintf("pgbench: %s jobs in %.1f s; %s", $done // '?', $took,
		join('; ', grep { /tps|latency average|script|failed/ } split /\n/, $out)));
ok($ok, 'pgbench: every client finished without an error') or diag("$out\n$err");
is($done, $clients * 3, 'every job ran and returned exactly its rows');
unlike($err, qr/ERROR|too many clients|timeout expired/, 'no job failed');

tt_sql($_, 'INSERT INTO public.stop_sampling VALUES (1)') for ($coord, @workers);
is(tt_sql($coord, 'SELECT string_agg(DISTINCT budget::text, \',\') FROM task_tracker.connection_pool'),
	$budget, 'the budget in force is the one learned from the workers');
tt_finish_psql($_) for @samplers;
for my $w (@workers)
{
	my ($n, $max) = split /\|/, tt_sql($w, 'SELECT count(*), max(conns) FROM public.samples');
	note($w->name . ": $n samples, at most $max coordinator connections");
	cmp_ok($max, '<=', $budget, $w->name . ": coordinator connections never above the budget ($max)");
	# reserved slots whose connection is being set up count but are not
	# seen on the worker
	cmp_ok($max, '>=', $budget / 3, $w->name . ": the budget was used ($max)");
}
my ($nsamples, $max_in_use, $max_waiting) =
  split /\|/, tt_sql($coord, 'SELECT count(*), max(conns), max(waiting) FROM public.samples');
note("coordinator: $nsamples samples, in_use at most $max_in_use, waiting at most $max_waiting");
cmp_ok($max_in_use, '<=', $budget, "connection_pool: in_use never above the budget ($max_in_use)");
cmp_ok($max_waiting, '>', 0, "connection_pool: sessions queued for slots ($max_waiting)");

# ------------------------------------------------ cancel a waiting session
# Budget 1: a job holds the only slot of worker 1 while its task waits for
# an advisory lock there; a second job waits for a slot; cancelling it ends
# it at once.
$coord->append_conf('postgresql.conf', "citus.max_shared_pool_size = 1\n");
$coord->reload;
ok($coord->poll_query_until('postgres', q{SELECT current_setting('citus.max_shared_pool_size') = '1'}),
	'budget lowered to 1');
# idle cached connections of the load are gone with their sessions
ok($coord->poll_query_until('postgres', 'SELECT coalesce(sum(in_use), 0) = 0 FROM task_tracker.connection_pool'),
	'no slot in use after the load');

my $locker = $workers[0]->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(223)');
my $one = sprintf(q{SELECT * FROM task_tracker.run_job($q$SELECT 'SELECT pg_advisory_xact_lock(223)::text || ''held'' AS v' AS query, ARRAY[%s] AS placements$q$) AS t(v text)},
	tt_quote_literal($place[0]));
my $holder = tt_start_psql($coord, [ "SET application_name = 'holder'", $one ], timeout => 60);
ok($workers[0]->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 223 AND NOT granted}),
	'the first job holds the slot and waits on the worker');
my $waiter = tt_start_psql($coord, [ "SET application_name = 'waiter'", $one ], timeout => 60);
ok($coord->poll_query_until('postgres',
		q{SELECT waiting = 1 AND in_use = 1 FROM task_tracker.connection_pool WHERE node_port = } . $workers[0]->port),
	'the second job waits for a slot');
is(tt_sql($coord, q{SELECT j.state FROM task_tracker.jobs j JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'waiter'}),
	'starting', 'the waiting job shows as starting');
my $tc = time();
tt_sql($coord, q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'waiter'});
my ($rc, $wout, $werr) = tt_finish_psql($waiter);
my $cancel_took = time() - $tc;
like($werr, qr/57014|canceling statement due to user request/, 'the waiting job was cancelled');
cmp_ok($cancel_took, '<', 2, sprintf('... within 2 s (%.2f s)', $cancel_took));
is(tt_sql($coord, 'SELECT waiting FROM task_tracker.connection_pool WHERE node_port = ' . $workers[0]->port),
	'0', 'no waiter left');
$locker->query_safe('SELECT pg_advisory_unlock(223)');
($rc, $wout, $werr) = tt_finish_psql($holder);
is($rc, 0, 'the first job finished') or diag($werr);
like($wout, qr/held/, '... with its row');
$locker->quit;

# a backend that exits gives its slots back (here: the holder's idle cached one)
ok($coord->poll_query_until('postgres', 'SELECT coalesce(sum(in_use), 0) = 0 FROM task_tracker.connection_pool'),
	'every slot is given back when the sessions end');

# a session idle at the client keeps its cached connection, the only slot;
# another session's job asks it to close that connection and runs
my $small = sprintf(q{SELECT * FROM task_tracker.run_job($q$SELECT 'SELECT 42::text AS v' AS query, ARRAY[%s] AS placements$q$) AS t(v text)},
	tt_quote_literal($place[0]));
my $idle = $coord->background_psql('postgres');
$idle->query_safe($small);
is(tt_sql($coord, 'SELECT in_use || \'|\' || idle FROM task_tracker.connection_pool WHERE node_port = ' . $workers[0]->port),
	'1|1', 'an idle session keeps its cached connection, the only slot');
my $ti = time();
is(tt_sql($coord, $small), '42', "another session's job gets the slot");
cmp_ok(time() - $ti, '<', 10, sprintf('... once the idle session closed its connection on request (%.2f s)', time() - $ti));
$idle->quit;

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no job left on the coordinator');
for my $w (@workers)
{
	ok($w->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'task_tracker coordinator'}),
		$w->name . ': no coordinator connection left');
	tt_check_no_leftovers($w, $w->name);
}
tt_no_crash_in_log($_) for ($coord, @workers);
$_->stop for ($coord, @workers);
done_testing();
