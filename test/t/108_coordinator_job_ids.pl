# Copyright: task_tracker authors.
#
# Job ids (issue 9, defect 7): a worker's tracker keys tasks by (job_id,
# task_id), and a job id another user holds on a worker makes assign_tasks
# fail there with 42501.
#
# A. ids cannot be guessed: mallory learns the id of a job of hers and
#    claims the ids that follow it on both workers (with ids from a counter
#    those are the next jobs' ids); alice's jobs still run.
# B. an id that can be read (the jobs view shows it to everyone) and is
#    claimed on a node the job has not reached yet: alice's task fails over
#    to worker 2, where mallory took the job's id meanwhile; the job goes on
#    there under a new id and returns its row.
# C. two coordinators sharing the same workers run jobs at the same time,
#    as the same user, without a collision.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my @coords = map { tt_node("coordinator$_", quiet => 1) } (1, 2);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
for my $c (@coords)
{
	tt_add_node($c, $_) for @workers;
	tt_create_role($c, $_) for ('alice', 'mallory');
}
for my $i (0, 1)
{
	tt_create_role($workers[$i], $_) for ('alice', 'mallory');
	tt_sql($workers[$i], sprintf(q{CREATE TABLE gate (n int); INSERT INTO gate VALUES (%d);
		GRANT SELECT ON gate TO alice}, $i + 1));
}
my $coord = $coords[0];

# ---------------------------------------------------------------- A
# mallory's task reads its own job id from the worker's tasks view
my $mine = tt_sql($coord, qq{SET citus.task_executor = 'task-tracker';
SELECT id FROM task_tracker.run_job(\$\$SELECT 'SELECT job_id FROM task_tracker.tasks WHERE status = ''running'' AND user_name = current_user' AS query, ARRAY['$place[0]'] AS placements\$\$) AS t(id bigint)},
	user => 'mallory');
like($mine, qr/^\d+$/, "A: mallory learns the id of her own job ($mine)");
for my $w (@workers)
{
	tt_sql($w, qq{SELECT task_tracker.assign_tasks(id, '{1,2,3,4}', ARRAY['SELECT 1','SELECT 1','SELECT 1','SELECT 1'])
		FROM generate_series($mine + 1, $mine + 20) id}, user => 'mallory');
}
is(tt_sql($workers[0], "SELECT count(DISTINCT job_id) FROM task_tracker.tasks WHERE user_name = 'mallory'"),
	'20', 'A: mallory holds the 20 ids after hers on each worker');
my $job4 = qq{SET citus.task_executor = 'task-tracker';
SELECT count(*), sum(n) FROM task_tracker.run_job(\$\$SELECT format('SELECT %s', s) AS query,
	ARRAY[CASE WHEN s % 2 = 0 THEN '$place[0]' ELSE '$place[1]' END] AS placements
	FROM generate_series(1, 4) s\$\$) AS t(n int)};
for my $round (1 .. 3)
{
	my ($rc, $out, $err) = tt_psql($coord, $job4, user => 'alice', verbose => 1);
	is($out, '4|10', "A: alice's job $round runs") or diag($err);
}
tt_sql($_, "SELECT task_tracker.cleanup_job(id) FROM generate_series($mine + 1, $mine + 20) id",
	user => 'mallory') for @workers;

# ---------------------------------------------------------------- B
my $locker = $workers[0]->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE;');
my $bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe("SET ROLE alice; SET citus.task_executor = 'task-tracker'; SET citus.node_reconnect_timeout = '3s'");
$bg->query_until(qr/started\n/, "\\echo started\n\\set VERBOSITY verbose\n"
	  . "SELECT n FROM task_tracker.run_job(\$\$SELECT 'SELECT n FROM gate' AS query, ARRAY['$place[0]', '$place[1]'] AS placements\$\$) AS t(n int);\n");
ok( $workers[0]->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE usename = 'alice' AND wait_event_type = 'Lock'"),
	"B: alice's task waits on worker 1");
my $job = tt_sql($coord, 'SELECT job_id FROM task_tracker.jobs', user => 'mallory');
like($job, qr/^\d+$/, "B: mallory reads alice's job id in the jobs view");
tt_sql($workers[1], "SELECT task_tracker.assign_task($job, 1, 'SELECT 1')", user => 'mallory');
# the task fails on worker 1 (its table is gone) and moves to worker 2
$locker->query_safe('DROP TABLE gate; COMMIT;');
$locker->quit;
$bg->{stderr} = '';
my $out = $bg->query('SELECT 1 AS after');
is($bg->{stderr}, '', 'B: the job does not fail on the claimed id') or diag($bg->{stderr});
is($out, "2\n1", "B: its task ran on worker 2, under an id of its own");
$bg->quit;
is(tt_sql($workers[1], "SELECT user_name FROM task_tracker.tasks WHERE job_id = $job"),
	'mallory', "B: mallory's task under that id is untouched");
tt_sql($workers[1], "SELECT task_tracker.cleanup_job($job)", user => 'mallory');

# ---------------------------------------------------------------- C
my $loop = qq{SET citus.task_executor = 'task-tracker';
DO \$\$
DECLARE r record;
BEGIN
	FOR i IN 1 .. 100 LOOP
		SELECT count(*) AS c, sum(n) AS s INTO r FROM task_tracker.run_job(
			'SELECT format(''SELECT %s'', s) AS query,
			        ARRAY[CASE WHEN s % 2 = 0 THEN ''$place[0]'' ELSE ''$place[1]'' END] AS placements
			   FROM generate_series(1, 8) s') AS t(n int);
		IF r.c <> 8 OR r.s <> 36 THEN
			RAISE EXCEPTION 'job % returned % rows, sum %', i, r.c, r.s;
		END IF;
	END LOOP;
END
\$\$;
SELECT 'loop done';};
my @runs = map { tt_start_psql($_, [$loop], user => 'alice', timeout => 120) } (@coords, @coords);
for my $i (0 .. $#runs)
{
	my ($rc, $o, $e) = tt_finish_psql($runs[$i]);
	is($rc, 0, "C: loop $i of 100 jobs (coordinator " . ($i % 2 + 1) . ") succeeds") or diag($e);
}

tt_check_no_leftovers($_) for @workers;
$_->stop for (@coords, @workers);
done_testing();
