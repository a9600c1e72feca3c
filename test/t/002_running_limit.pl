
# citus.max_running_tasks_per_node is honoured, and a reload changes it.
#
# Six tasks block on an advisory lock the test session holds; the number of
# task backends waiting on it is exactly the limit, the rest stay queued.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('limit', conf => "citus.max_running_tasks_per_node = 2\n");
tt_create_role($node, 'alice');

is(tt_sql($node, 'SELECT running_limit FROM task_tracker.tracker'),
	'2', 'tracker view shows the limit');

# hold the gate
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');

my $q = q{SELECT pg_advisory_xact_lock_shared(4242), 1};
tt_sql($node, "SELECT task_tracker.assign_tasks(7, '{0,1,2,3,4,5}', array_fill('$q'::text, ARRAY[6]))",
	user => 'alice');

# task backends waiting on the lock
my $waiting = q{SELECT count(*) FROM pg_stat_activity
	WHERE application_name = 'task_tracker' AND state = 'active'
	  AND wait_event_type = 'Lock' AND wait_event = 'advisory'};

ok($node->poll_query_until('postgres', "$waiting", '2'),
	'two task backends run at once');
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7 AND status = 'assigned'", '4'),
	'four tasks stay queued');
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7 AND status = 'running'"),
	'2', 'two tasks are running');
is(tt_sql($node, 'SELECT tasks_running, running_limit FROM task_tracker.tracker'),
	'2|2', 'tracker view agrees');
is(tt_sql($node, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker' AND usename = 'alice'"),
	'2', 'the task backends are logged in as alice');

# raise the limit with a reload
tt_sql($node, 'ALTER SYSTEM SET citus.max_running_tasks_per_node = 4');
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', "$waiting", '4'),
	'after a reload to 4, four task backends run');
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7 AND status = 'assigned'", '2'),
	'two tasks stay queued');
is(tt_sql($node, 'SELECT running_limit FROM task_tracker.tracker'),
	'4', 'tracker view shows the new limit');

# lowering the limit does not kill running tasks, but no new one starts
# beyond it: release the gate and check that all finish.
tt_sql($node, 'ALTER SYSTEM SET citus.max_running_tasks_per_node = 1');
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SELECT running_limit FROM task_tracker.tracker', '1'),
	'reload to 1 seen by the tracker');
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7 AND status = 'assigned'"),
	'2', 'still two queued tasks while four run');

$gate->query_safe('SELECT pg_advisory_unlock(4242)');
tt_wait_job($node, 7, user => 'alice', tasks => 6);
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7 AND status = 'succeeded'"),
	'6', 'all six tasks succeeded');

# with the limit at 1, a second wave runs one at a time
$gate->query_safe('SELECT pg_advisory_lock(4242)');
tt_sql($node, "SELECT task_tracker.assign_tasks(8, '{0,1,2}', array_fill('$q'::text, ARRAY[3]))",
	user => 'alice');
ok($node->poll_query_until('postgres', "$waiting", '1'), 'limit 1: one task backend runs');
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM task_tracker.tasks WHERE job_id = 8 AND status = 'assigned'", '2'),
	'limit 1: two tasks queued');
$gate->query_safe('SELECT pg_advisory_unlock(4242)');
tt_wait_job($node, 8, user => 'alice', tasks => 3);
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE job_id = 8 AND status = 'succeeded'"),
	'3', 'second wave succeeded');
$gate->quit;

tt_cleanup_and_check($node, [ [ 7, 'alice' ], [ 8, 'alice' ] ]);
tt_sql($node, 'ALTER SYSTEM RESET citus.max_running_tasks_per_node');
$node->stop;
done_testing();
