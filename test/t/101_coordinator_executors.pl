# Copyright: task_tracker authors.
#
# Coordinator + two workers: both executors return the same rows as the
# queries run directly (every type, NULLs, tabs/newlines/backslashes, bytea,
# multi-megabyte values, a million rows); a non-superuser's tasks run as
# that user; jobs on unregistered nodes are refused; two concurrent jobs and
# the jobs view; a 5,000-task job; nothing is left behind.
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
is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.nodes WHERE is_active'),
	'2', 'two nodes registered');

# the same table on both workers, different ids on each
for my $i (0, 1)
{
	my $lo = $i * 1000 + 1;
	my $hi = $lo + 999;
	tt_sql($workers[$i], qq{
CREATE TABLE typed (
	id int PRIMARY KEY, t text, b bytea, n numeric, f float8, ts timestamptz,
	j jsonb, a int[], u uuid, bo bool, iv interval, big text);
INSERT INTO typed
SELECT g,
	CASE WHEN g % 7 = 0 THEN NULL ELSE E'tab\\there\\nnewline\\\\back' || g || E' \\'quote\\' "dq" é' END,
	CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\\x00ff'::bytea END,
	g * 1.000000001, g / 3.0::float8, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
	jsonb_build_object('g', g, 's', E'x\\ty'), ARRAY[g, NULL, -g], md5(g::text)::uuid,
	g % 2 = 0, g * interval '1 minute',
	CASE WHEN g % 400 = 0 THEN repeat(md5(g::text), 100000) END
FROM generate_series($lo, $hi) g;
CREATE ROLE alice LOGIN;
GRANT SELECT ON typed TO alice;
});
}
tt_create_role($coord, 'alice');

my $coldefs = 'id int, t text, b bytea, n numeric, f float8, ts timestamptz, '
  . 'j jsonb, a int[], u uuid, bo bool, iv interval, big text';
my $digest_sql = "md5(string_agg(x::text, '|' ORDER BY id))";

# expected: the queries run directly on the workers
my $direct = join('|', map { tt_sql($_, "SELECT string_agg(x::text, '|' ORDER BY id) FROM typed x") } @workers);
my $expected_md5 = tt_sql($coord, 'SELECT md5(' . tt_quote_literal($direct) . ')');

# 16 tasks per worker, each placed on its own worker only
my $task_list = qq{
SELECT format('SELECT * FROM typed WHERE id %% 16 = %s', s) AS query,
       ARRAY[CASE WHEN w = 0 THEN '$place[0]' ELSE '$place[1]' END] AS placements
FROM generate_series(0, 15) s, generate_series(0, 1) w};

for my $executor ('real-time', 'task-tracker')
{
	my $got = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT $digest_sql FROM task_tracker.run_job(\$tl\$$task_list\$tl\$) AS x($coldefs);});
	is($got, $expected_md5, "$executor: rows identical to the direct queries");

	my $n = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT count(*), count(big), max(length(big)) FROM task_tracker.run_job(\$tl\$$task_list\$tl\$) AS x($coldefs);});
	is($n, '2000|5|3200000', "$executor: row count and multi-megabyte values");

	# a million rows from one task (spills like any tuplestore)
	$n = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SET work_mem = '1MB';
SELECT count(*), sum(g), count(DISTINCT m) FROM task_tracker.run_job(
	\$\$SELECT 'SELECT g, md5(g::text) FROM generate_series(1, 1000000) g' AS query,
	         ARRAY['$place[0]'] AS placements\$\$) AS t(g bigint, m text);});
	is($n, '1000000|500000500000|1000000', "$executor: a million rows");

	# a non-superuser's tasks run as that user on the workers
	my $who = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT string_agg(u, ',' ORDER BY u) FROM task_tracker.run_job(
	\$\$SELECT 'SELECT current_user::text || '':'' || count(*) FROM typed' AS query, ARRAY[p] AS placements
	  FROM unnest(ARRAY['$place[0]', '$place[1]']) p\$\$) AS t(u text);}, user => 'alice');
	is($who, 'alice:1000,alice:1000', "$executor: tasks run as the calling user");

	# jobs may target registered active nodes only
	my ($rc, $out, $err) = tt_psql($coord, qq{
SET citus.task_executor = '$executor';
SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT 1' AS query, ARRAY['localhost:1'] AS placements\$\$) AS t(n int);},
		verbose => 1);
	like($err, qr/42704.*node localhost:1 is not registered/s, "$executor: unregistered node refused");

	# 5,000 tasks
	$n = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT count(*), sum(n), count(DISTINCT n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s', s) AS query,
	         ARRAY[CASE WHEN s % 2 = 0 THEN '$place[0]' ELSE '$place[1]' END,
	               CASE WHEN s % 2 = 0 THEN '$place[1]' ELSE '$place[0]' END] AS placements
	  FROM generate_series(1, 5000) s\$\$) AS t(n bigint);});
	is($n, '5000|12502500|5000', "$executor: 5,000-task job");
}

# a task table smaller than the job: tasks are assigned in waves
{
	my $n = tt_sql($coord, qq{
SET citus.task_executor = 'task-tracker';
SET citus.max_assign_task_batch_size = 7;
SELECT count(*), sum(n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s', s) AS query, ARRAY['$place[0]'] AS placements
	  FROM generate_series(1, 1100) s\$\$) AS t(n bigint);});
	is($n, '1100|605550', 'task-tracker: more tasks than the tracker table holds (1024)');
}

# two concurrent jobs from two sessions, both in task_tracker.jobs
for my $executor ('real-time', 'task-tracker')
{
	my $sleepy = qq{SET citus.task_executor = '$executor';
SELECT count(*), sum(n) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep(0.5)', s) AS query, ARRAY[p] AS placements
	  FROM generate_series(1, 4) s, unnest(ARRAY['$place[0]', '$place[1]']) p\$\$) AS t(n int);
};
	my $s1 = $coord->background_psql('postgres');
	my $s2 = $coord->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
	$s1->query_until(qr/go/, "\\echo go\n$sleepy");
	$s2->query_until(qr/go/, "\\echo go\n$sleepy");
	ok($coord->poll_query_until('postgres',
			"SELECT count(*) = 2 FROM task_tracker.jobs WHERE state = 'running' AND executor = '$executor'"),
		"$executor: two jobs visible in task_tracker.jobs");
	# a non-superuser sees other users' jobs without their details
	is(tt_sql($coord, "SELECT count(*), count(executor) FROM task_tracker.jobs", user => 'alice'),
		'2|1', "$executor: other users' job details hidden");
	is($s1->query_safe("\\echo done"), "8|20\ndone", "$executor: first concurrent job");
	is($s2->query_safe("\\echo done"), "8|20\ndone", "$executor: second concurrent job");
	$s1->quit;
	$s2->quit;
}

# a user whose name has quotes, spaces, a backslash, '=' and a non-ASCII letter
{
	my $odd = q{o'dd "us\er =é};
	tt_create_role($_, $odd) for ($coord, @workers);
	for my $executor ('real-time', 'task-tracker')
	{
		is(tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT string_agg(u, ',') FROM task_tracker.run_job(
	\$\$SELECT 'SELECT current_user::text' AS query, ARRAY[p] AS placements
	  FROM unnest(ARRAY['$place[0]', '$place[1]']) p\$\$) AS t(u text);}, user => $odd),
			"$odd,$odd", "$executor: tasks run as a user with an odd name");
	}
}

# one command on every worker
is(tt_sql($coord, 'SELECT node_port, success, result FROM task_tracker.run_on_workers($$VACUUM ANALYZE typed$$) ORDER BY node_port'),
	join("\n", map { $_->port . '|t|VACUUM' } @workers), 'run_on_workers: VACUUM on every node');
is(tt_sql($coord, 'SELECT string_agg(result, \',\' ORDER BY node_port) FROM task_tracker.run_on_workers($$SELECT count(*) FROM typed$$)',
		user => 'alice'),
	'1000,1000', 'run_on_workers: one value per node, as a non-superuser');
is(tt_sql($coord, 'SELECT bool_or(success), min(result) FROM task_tracker.run_on_workers($$SELECT * FROM no_such_table$$)'),
	'f|relation "no_such_table" does not exist', 'run_on_workers: errors are rows');

is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'no jobs left');
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], "worker " . ($i + 1));
}

$_->stop for ($coord, @workers);
done_testing();
