
# Issue 9, defect 6: the tracker runs no more tasks at once than its file
# descriptors allow.  With max_files_per_process = 80 the tracker may hold
# about 20 connections (fd.c's external descriptors), and
# citus.max_running_tasks_per_node = 40 asks for more.  Before the fix the
# connections past the budget failed ("out of file descriptors") and cost
# the tasks their attempts (here the only one); now the tracker runs at
# most what the budget allows, says so in the log, and every task runs.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('fd_budget', conf => q{
max_files_per_process = 80
max_connections = 80
citus.max_running_tasks_per_node = 40
citus.task_max_attempts = 1
});
tt_create_role($node, 'alice');

my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(1717)');
my $n = 30;
my $queries = join(',', map { "'SELECT pg_advisory_xact_lock_shared(1717), $_'" } 1 .. $n);
tt_sql($node, "SELECT task_tracker.assign_tasks(170, '{" . join(',', 1 .. $n) . "}', ARRAY[$queries])",
	user => 'alice');

# steady state: every task the tracker holds is blocked on the gate
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) > 0 AND count(*) = (SELECT count(*) FROM pg_stat_activity
				WHERE application_name = 'task_tracker' AND wait_event_type = 'Lock'
				  AND wait_event = 'advisory')
		  FROM task_tracker.tasks WHERE job_id = 170 AND status IN ('scheduled', 'running')}),
	'the tasks the tracker runs are all blocked on the gate');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 170 AND attempts > 0 AND status NOT IN ('scheduled', 'running')}),
	'0', 'no task failed an attempt for want of descriptors')
  or diag(tt_sql($node, q{SELECT status, error FROM task_tracker.tasks WHERE job_id = 170 AND status NOT IN ('scheduled', 'running', 'assigned') LIMIT 3}));
my ($budget) = slurp_file($node->logfile) =~ /task tracker runs at most (\d+) tasks at once, not 40/;
ok(defined $budget && $budget >= 1 && $budget < $n,
	'the tracker logs that it runs fewer tasks at once than asked (' . ($budget // 'no message') . ')');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 170 AND status IN ('scheduled', 'running')}),
	$budget // -1, 'and runs that many');

$gate->query_safe('SELECT pg_advisory_unlock(1717)');
tt_wait_job($node, 170, user => 'alice', tasks => $n);
is(tt_sql($node, q{SELECT status || ' ' || count(*) || ' ' || max(attempts) FROM task_tracker.tasks WHERE job_id = 170 GROUP BY status}),
	"succeeded $n 1", "all $n tasks succeeded after one attempt each");

$gate->quit;
tt_cleanup_and_check($node, [ [ 170, 'alice', 'postgres' ] ]);
$node->stop;
done_testing();
