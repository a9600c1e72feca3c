
# 10,000 tasks assigned in batches of assign_tasks all run and finish:
# nothing is lost, every result is there, counts match.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $n = 10000;
my $batch = 1000;

my $node = tt_node('many', quiet => 1,
	conf => "citus.max_tracked_tasks_per_node = 12000\n"
	  . "citus.max_tracked_tasks_per_user = 12000\n");
tt_create_role($node, 'alice');

is(tt_sql($node, 'SELECT tasks_capacity FROM task_tracker.tracker'),
	'12000', 'capacity from citus.max_tracked_tasks_per_node');
my $succeeded_before = tt_sql($node, 'SELECT tasks_succeeded FROM task_tracker.tracker');

my $t0 = time;
my $sql = '';
for (my $first = 0; $first < $n; $first += $batch)
{
	my $last = $first + $batch - 1;
	$sql .= qq{SELECT task_tracker.assign_tasks(70, array_agg(i ORDER BY i),
		array_agg('SELECT ' || i || ' AS v, ''task ' || i || '''::text AS label' ORDER BY i))
		FROM generate_series($first, $last) i;\n};
}
tt_sql($node, $sql, user => 'alice');
my $t1 = time;
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 70'),
	"$n", "$n tasks tracked");

# wait with the product's wait_for_tasks, recording every report: each
# final task must be reported exactly once
my $reports = tt_sql($node, qq{
CREATE TEMP TABLE seen (task_id int, status text);
DO \$\$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '120 s';
BEGIN
	WHILE (SELECT count(*) FROM seen) < $n AND clock_timestamp() < deadline LOOP
		INSERT INTO seen SELECT w.task_id, w.status FROM task_tracker.wait_for_tasks(70, 1000) w;
	END LOOP;
END
\$\$;
SELECT count(*), count(DISTINCT task_id), count(*) FILTER (WHERE status = 'succeeded') FROM seen;
SELECT count(*) FROM task_tracker.wait_for_tasks(70, 10);
}, user => 'alice');
my $t2 = time;
is($reports, "$n|$n|$n\n0", 'wait_for_tasks reported every task once, as succeeded');

note(sprintf('assigned %d tasks in %.2f s; all finished after %.2f s (%.0f tasks/s)',
		$n, $t1 - $t0, $t2 - $t0, $n / ($t2 - $t0)));

is( tt_sql($node,
		"SELECT status, count(*), sum(result_rows), min(task_id), max(task_id) FROM task_tracker.tasks WHERE job_id = 70 GROUP BY 1"),
	"succeeded|$n|$n|0|" . ($n - 1),
	'all succeeded with one row each');
is(tt_sql($node, 'SELECT tasks_succeeded - ' . $succeeded_before . ' FROM task_tracker.tracker'),
	"$n", 'tracker counted them');

# results of a sample of tasks, read back through task_result
is( tt_sql($node, q{
	SELECT count(*), sum(r.v) = sum(i), bool_and(r.label = 'task ' || i)
	FROM generate_series(0, 9999, 97) i,
	     LATERAL task_tracker.task_result(70, i) AS r(v int, label text)},
		user => 'alice'),
	'104|t|t', 'sampled results are right');

my $t3 = time;
tt_cleanup_and_check($node, [ [ 70, 'alice' ] ]);
note(sprintf('cleanup of %d tasks: %.2f s', $n, time - $t3));
is(tt_sql($node, 'SELECT tasks_tracked FROM task_tracker.tracker'), '0',
	'tracker view: nothing tracked');

$node->stop;
done_testing();
