# Copyright: task_tracker authors.
#
# Coordinator + one worker at 1.1: the task-tracker executor gets small
# results with the reports of wait_for_task_results, and the worker drops
# those tasks at once.
#  - A warm one-task job is one query string from the coordinator to the
#    worker (assign_tasks + wait_for_task_results): no fetch, no cleanup_job
#    (the worker's log_statement shows every query).
#  - A job mixing results that come with the report, results over the
#    budget of one wait (fetched), a result in a file (fetched), a task
#    without rows and an empty result returns every row exactly once.
#  - A connection cut after the worker dropped a task, before its rows
#    reached the coordinator (a proxy between them cuts it as the rows pass):
#    the executor reconnects, finds the task gone, runs it again (at least
#    once) and the job returns its rows once.
#  - After jobs of every kind (also failing and canceled ones) no task, job
#    entry, job directory or task session is left on the worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
# results up to 64 kB are kept in shared memory on the worker
my $worker = tt_node('worker', conf => "citus.task_result_inline_size = '64kB'\n");
my $place = $worker->host . ':' . $worker->port;
tt_add_node($coord, $worker);
tt_sql($worker, 'CREATE TABLE runs (id serial, note text); CREATE TABLE mix_log (x int)');

# the statements the coordinator sent the worker since log position $pos
sub coord_statements
{
	my ($pos) = @_;
	my $log = slurp_file($worker->logfile, $pos);
	return ($log =~ /task_tracker coordinator LOG:  statement: ([^\n]*)/g);
}

# every job the coordinator waited on since $pos is gone from the worker
# (wait_for_tasks answers 42704 "not found" for a job that has no entry)
sub jobs_gone
{
	my ($pos, $what) = @_;
	my %jobs = map { $_ => 1 } (slurp_file($worker->logfile, $pos) =~ /wait_for_task_results\((\d+),/g);
	ok(scalar(keys %jobs) > 0, "$what: the coordinator waited with wait_for_task_results");
	my @left = grep {
		my ($rc, $out, $err) = tt_psql($worker, "SELECT * FROM task_tracker.wait_for_tasks($_, 0)");
		$err !~ /job $_ not found/;
	} sort keys %jobs;
	is(scalar(@left), 0, "$what: no job entry left on the worker") or diag("left: @left");
	return;
}

my $start = tt_log_position($worker);

# ---------------------------------------------------------------- one round trip
my $bg = $coord->background_psql('postgres');
$bg->query_safe(q{SET citus.task_executor = 'task-tracker'});
my $one = qq{SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT 41 + 1' AS query, ARRAY['$place'] AS placements\$\$) AS t(n int)};
is($bg->query_safe($one), '42', 'a one-task job (new connection)');
my $pos = tt_log_position($worker);
is($bg->query_safe($one), '42', 'the same job on the warm connection');
my @st = coord_statements($pos);
is(scalar(@st), 1, 'a warm one-task job is one query from the coordinator to the worker')
  or diag(join("\n", @st));
like($st[0] // '',
	qr/^SELECT task_tracker\.assign_tasks\([^;]*\);SELECT \* FROM task_tracker\.wait_for_task_results\(\d+, \d+, \d+, 1\)$/,
	'... assign_tasks and wait_for_task_results in one query string');
# a task without rows, and one with an empty result: one query each too
for my $q ('INSERT INTO mix_log VALUES (0)', 'SELECT 1 WHERE false')
{
	$pos = tt_log_position($worker);
	is($bg->query_safe(qq{SELECT count(*) FROM task_tracker.run_job(\$\$SELECT '$q' AS query, ARRAY['$place'] AS placements\$\$) AS t(n int)}),
		'0', "a one-task job of $q");
	@st = coord_statements($pos);
	is(scalar(@st), 1, '... is one query too') or diag(join("\n", @st));
}
# a job of several tasks: no fetch, no cleanup_job either
$pos = tt_log_position($worker);
is($bg->query_safe(qq{SELECT count(*), sum(n) FROM task_tracker.run_job(\$\$SELECT format('SELECT %s', i) AS query,
	ARRAY['$place'] AS placements FROM generate_series(1, 20) i\$\$) AS t(n int)}),
	'20|210', 'a job of 20 small tasks');
@st = coord_statements($pos);
is(scalar(grep { /task_result_copy|cleanup_job/ } @st), 0, '... needs no fetch and no cleanup_job')
  or diag(join("\n", @st));
$bg->quit;
tt_check_no_leftovers($worker, 'after one-task jobs');

# ---------------------------------------------------------------- mixed job
# Every task waits on a lock the test holds; the coordinator's wait is
# stopped (SIGSTOP of its worker backend, asleep in wait_for_task_results)
# until all of them succeeded, so that one call reports them all: 16
# results of 60 kB in shared memory of which only 4 fit the wait's 256 kB,
# a 100 kB result in a file, an INSERT and an empty result.
my $lock = $worker->background_psql('postgres');
$lock->query_safe('SELECT pg_advisory_lock(4242)');
my $gate = 'pg_catalog.pg_advisory_xact_lock_shared(4242)';
my $tasks = join(",\n",
	(map { qq{(\$q\$SELECT $_, repeat('x', 60000) FROM $gate\$q\$)} } 1 .. 16),
	qq{(\$q\$SELECT g, repeat('y', 1000) FROM $gate, generate_series(1, 100) g\$q\$)},
	qq{(\$q\$INSERT INTO mix_log SELECT 1 FROM $gate\$q\$)},
	qq{(\$q\$SELECT 0, 'z' FROM $gate WHERE false\$q\$)});
$pos = tt_log_position($worker);
my $mixed = $coord->background_psql('postgres', on_error_stop => 0);
$mixed->query_until(qr/go/, qq{\\echo go
SET citus.task_executor = 'task-tracker';
SELECT count(*), sum(n), sum(length(x)) FROM task_tracker.run_job(\$tl\$
	SELECT q AS query, ARRAY['$place'] AS placements FROM (VALUES $tasks) v(q)\$tl\$) AS t(n int, x text);
});
my $waiting = q{SELECT pid FROM pg_stat_activity WHERE application_name = 'task_tracker coordinator'
	AND state = 'active' AND query LIKE '%wait_for_task_results%' AND wait_event_type = 'Extension'};
ok($worker->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($waiting) w"),
	'mixed job: the coordinator waits on the worker');
my $wpid = tt_sql($worker, $waiting);
ok(kill('STOP', $wpid), 'mixed job: its wait is stopped');
$lock->query_safe('SELECT pg_advisory_unlock(4242)');
my $all_done = $worker->poll_query_until('postgres',
	q{SELECT count(*) FILTER (WHERE status = 'succeeded') = 19 FROM task_tracker.tasks});
kill('CONT', $wpid);
ok($all_done, 'mixed job: all 19 tasks succeeded while the wait was stopped');
is($mixed->query("\\echo done"), "116|5186|1060000\ndone",
	'mixed job: every row exactly once (reported with the rows, over the budget, in a file)');
is($mixed->{stderr}, '', 'mixed job: no error or warning');
$mixed->quit;
$lock->quit;
my @fetches = grep { /task_result_copy\(/ } coord_statements($pos);
is(scalar(@fetches), 13,
	'mixed job: 12 results over the budget and the file were fetched, the rest came with the report')
  or diag(join("\n", coord_statements($pos)));
is(tt_sql($worker, 'SELECT count(*) FROM mix_log'), '2', 'the INSERT tasks ran once each');
tt_check_no_leftovers($worker, 'after the mixed job');

# ---------------------------------------------------------------- cut connection
# A proxy between the coordinator and the worker (a Unix socket of its own)
# closes both sides of the first connection on which the worker sends the
# row 'cut-here': the worker has dropped the task by then (its rows come
# only after the drop), and the coordinator never sees them.
my $proxy_dir = PostgreSQL::Test::Utils::tempdir_short();
my $proxy_sock = "$proxy_dir/.s.PGSQL." . $worker->port;
my $worker_sock = $worker->host . '/.s.PGSQL.' . $worker->port;
my $proxy_log = "$proxy_dir/proxy.log";
my ($proxy) = tt_start_proxy(listen_unix => $proxy_sock, server => $worker_sock,
	cut_marker => 'cut-here', cut_log => $proxy_log);
tt_sql($coord, sprintf('SELECT task_tracker.add_node(%s, %d)', tt_quote_literal($proxy_dir), $worker->port));
my $via_proxy = "$proxy_dir:" . $worker->port;

$pos = tt_log_position($worker);
my ($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = 'task-tracker';
SELECT * FROM task_tracker.run_job(\$\$SELECT \$q\$INSERT INTO runs (note) VALUES ('cut') RETURNING 'cut-' || 'here'\$q\$ AS query,
	ARRAY['$via_proxy'] AS placements\$\$) AS t(s text)});
is($rc, 0, 'cut connection: the job succeeds') or diag($err);
is($out, 'cut-here', 'cut connection: its row comes once');
ok(-e $proxy_log && slurp_file($proxy_log) eq "cut\n", 'cut connection: the proxy cut the connection as the row passed');
is(tt_sql($worker, q{SELECT count(*) FROM runs WHERE note = 'cut'}), '2',
	'cut connection: the dropped task ran again (at least once)');
my @cut_st = coord_statements($pos);
ok((grep { /FROM task_tracker\.tasks WHERE job_id/ } @cut_st),
	'cut connection: the coordinator read the job\'s tasks after reconnecting')
  or diag(join("\n", @cut_st));
is(scalar(grep { /wait_for_task_results\(/ } @cut_st), 2, 'cut connection: the task was assigned and waited for twice');
$proxy->kill_kill;
tt_check_no_leftovers($worker, 'after the cut connection');

# ---------------------------------------------------------------- failure and cancel
($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = 'task-tracker';
SELECT * FROM task_tracker.run_job(\$\$SELECT q AS query, ARRAY['$place'] AS placements
	FROM unnest(ARRAY['SELECT 1', 'SELECT 1/0', 'SELECT 3']) q\$\$) AS t(n int)}, verbose => 1);
like($err, qr/22012: division by zero/, 'a failing task fails the job');
tt_check_no_leftovers($worker, 'after a failed job');
($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = 'task-tracker';
SET statement_timeout = '500ms';
SELECT * FROM task_tracker.run_job(\$\$SELECT q AS query, ARRAY['$place'] AS placements
	FROM unnest(ARRAY['SELECT 1', 'SELECT 2 FROM pg_sleep(30)']) q\$\$) AS t(n int)}, verbose => 1);
like($err, qr/57014/, 'a job canceled by statement_timeout');
tt_check_no_leftovers($worker, 'after a canceled job');

jobs_gone($start, 'every job');
is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left on the coordinator');
$_->stop for ($coord, $worker);
done_testing();
