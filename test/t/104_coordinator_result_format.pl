# Copyright: task_tracker authors.
#
# Coordinator + two workers, one at extension version 1.1 and one still at
# 1.0 (library updated, ALTER EXTENSION ... UPDATE not run yet there): both
# executors return, byte for byte, values with every COPY escape, non-ASCII
# text, NULLs, empty strings and every byte of a bytea, for tasks run as
# COPY and in single-row mode (CALL, SHOW, EXPLAIN) and for INSERT ...
# RETURNING; the task-tracker executor gets small results with the reports
# of wait_for_task_results and fetches big ones with task_result_copy from
# the 1.1 worker, and waits with wait_for_tasks and fetches with
# task_result from the 1.0 one, until that one is updated; a column
# definition list of the wrong width is an error even for an empty result.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_") } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# worker 2 keeps the 1.0 SQL objects
tt_sql($workers[1], q{DROP EXTENSION task_tracker; CREATE EXTENSION task_tracker VERSION '1.0'});
is(tt_sql($workers[1], q{SELECT extversion FROM pg_extension WHERE extname = 'task_tracker'}),
	'1.0', 'worker 2 runs the 1.0 SQL objects');

for my $w (@workers)
{
	tt_sql($w, q{
CREATE TABLE vals (id int PRIMARY KEY, v text, b bytea);
INSERT INTO vals VALUES
	(1, 'a' || chr(92) || 'b' || chr(9) || 'c' || chr(10) || 'd' || chr(13) || 'e' || chr(8)
	    || 'f' || chr(12) || 'g' || chr(11) || 'h' || chr(1) || 'i' || chr(127) || 'j', NULL),
	(2, chr(92) || 'N', ''),
	(3, chr(92) || 'x41' || chr(92) || '101' || chr(92) || 't' || chr(92) || '.' || chr(92), NULL),
	(4, convert_from(decode('c3a9e282acf09d849ec3bc', 'hex'), 'UTF8'), NULL),
	(5, '', NULL),
	(6, NULL, (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g)),
	(7, chr(9) || 'x' || chr(9), NULL),
	(8, 'N', '\x5c4e');
CREATE TABLE log (id int, v text);
CREATE PROCEDURE pick(i int, INOUT v text DEFAULT NULL, INOUT b bytea DEFAULT NULL)
	LANGUAGE sql AS $$ SELECT v, b FROM vals WHERE id = i $$;
});
}
my $digest = q{md5(string_agg(format('%s|%s|%s', id, quote_nullable(v), quote_nullable(b)), ';' ORDER BY id))};
my $want = tt_sql($workers[0], "SELECT $digest FROM vals");

# run_job's rows: "n|v|b" per task's rows, digested; tasks on both workers
sub run
{
	my ($executor, $task_list, $coldefs, $select, %opts) = @_;
	return tt_sql($coord, qq{SET citus.task_executor = '$executor';
SELECT $select FROM task_tracker.run_job(\$tl\$$task_list\$tl\$) AS t($coldefs);}, %opts);
}

my $w1pos = tt_log_position($workers[0]);
my $w2pos = tt_log_position($workers[1]);
for my $executor ('real-time', 'task-tracker')
{
	for my $i (0, 1)
	{
		my $w = $i + 1;
		is(run($executor, "SELECT 'SELECT id, v, b FROM vals' AS query, ARRAY['$place[$i]'] AS placements",
				'id int, v text, b bytea', $digest),
			$want, "$executor, worker $w: every value exactly (as COPY)");
		is(run($executor, "SELECT format('CALL pick(%s)', i) AS query, ARRAY['$place[$i]'] AS placements FROM generate_series(1, 8) i",
				'v text, b bytea', q{md5(string_agg(format('%s|%s', quote_nullable(v), quote_nullable(b)), ';' ORDER BY v, b))}),
			tt_sql($workers[$i], q{SELECT md5(string_agg(format('%s|%s', quote_nullable(v), quote_nullable(b)), ';' ORDER BY v, b)) FROM vals}),
			"$executor, worker $w: every value exactly (CALL, single-row mode)");
		is(run($executor, "SELECT q AS query, ARRAY['$place[$i]'] AS placements FROM unnest(ARRAY['SHOW search_path', 'EXPLAIN (COSTS OFF) SELECT * FROM vals WHERE id = 1']) q",
				's text', q{count(*)}),
			'3', "$executor, worker $w: SHOW and EXPLAIN");
		is(run($executor, "SELECT 'INSERT INTO log SELECT id, v FROM vals RETURNING id, v' AS query, ARRAY['$place[$i]'] AS placements",
				'id int, v text', q{count(*), count(v)}),
			'8|7', "$executor, worker $w: INSERT ... RETURNING");
		is(run($executor, "SELECT 'SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 20000) g' AS query, ARRAY['$place[$i]'] AS placements",
				'g int, x text', q{count(*), sum(g), sum(length(x))}),
			'20000|200010000|12800000', "$executor, worker $w: a result of many chunks");
		# the wrong width is an error, also with no rows
		my ($rc, $out, $err) = tt_psql($coord, qq{SET citus.task_executor = '$executor';
SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT id, v, b FROM vals WHERE false' AS query, ARRAY['$place[$i]'] AS placements\$\$) AS t(id int);},
			verbose => 1);
		like($err, qr/42804: (task result has 3 columns but the column definition list has 1|task 1 returned 3 columns, but the column definition list has 1)/,
			"$executor, worker $w: a column definition list of the wrong width, empty result");
	}
}
is(tt_sql($workers[$_], 'SELECT count(*) FROM log'), '16', 'each INSERT ... RETURNING ran once') for (0, 1);

# how the task-tracker executor got the rows: from 1.1, small results with
# the reports of wait_for_task_results, the big one (a result file) with
# task_result_copy; from 1.0, wait_for_tasks and task_result
ok($workers[0]->log_contains(qr/wait_for_task_results\(/, $w1pos)
	  && !$workers[0]->log_contains(qr/wait_for_tasks\(/, $w1pos),
	'worker 1 (1.1): waited with wait_for_task_results');
my @w1_fetches = (slurp_file($workers[0]->logfile, $w1pos) =~ /statement: [^\n]*task_result_copy\(/g);
is(scalar(@w1_fetches), 2,
	'worker 1 (1.1): fetched only the big result and the wrong-width one with task_result_copy');
ok($workers[1]->log_contains(qr/COPY \(SELECT \* FROM task_tracker\.task_result\(/, $w2pos)
	  && $workers[1]->log_contains(qr/wait_for_tasks\(/, $w2pos)
	  && !$workers[1]->log_contains(qr/task_result_copy|wait_for_task_results/, $w2pos),
	'worker 2 (1.0): waited with wait_for_tasks, fetched with task_result');

# once worker 2 is updated, new coordinator connections use the new wait
# and fetch
tt_sql($workers[1], 'ALTER EXTENSION task_tracker UPDATE');
$w2pos = tt_log_position($workers[1]);
is(run('task-tracker', "SELECT 'SELECT id, v, b FROM vals' AS query, ARRAY['$place[1]'] AS placements",
		'id int, v text, b bytea', $digest),
	$want, 'worker 2 updated: every value exactly');
ok($workers[1]->log_contains(qr/wait_for_task_results\(/, $w2pos)
	  && !$workers[1]->log_contains(qr/task_result_copy|cleanup_job/, $w2pos),
	'worker 2 updated: the rows came with the report (no fetch, no cleanup)');

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left');
tt_check_no_leftovers($_) for @workers;
$_->stop for ($coord, @workers);
done_testing();
