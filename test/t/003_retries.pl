
# A task that fails every time is retried citus.task_max_attempts times and
# then permanently_failed with the remote error kept; a task that fails once
# and then works succeeds on a retry; the limit follows a reload.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('retries');
tt_create_role($node, 'alice');

is(tt_sql($node, 'SHOW citus.task_max_attempts'), '3', 'default of 3 attempts');

# A table counts the attempts: every attempt inserts a row, then fails
# (the row is rolled back with it, so count through a sequence instead).
tt_sql($node, q{
CREATE SEQUENCE public.attempts_seq;
GRANT USAGE, SELECT, UPDATE ON public.attempts_seq TO alice;
CREATE TABLE public.flaky (n int);
GRANT SELECT, INSERT ON public.flaky TO alice;
});

tt_sql($node, q{SELECT task_tracker.assign_tasks(30, '{0,1}', ARRAY[
	'SELECT nextval(''public.attempts_seq'') / 0',
	'SELECT 1 FROM public.no_such_table'])}, user => 'alice');
tt_wait_job($node, 30, user => 'alice', tasks => 2);

is( tt_sql($node,
		'SELECT task_id, status, attempts, error_sqlstate FROM task_tracker.tasks WHERE job_id = 30 ORDER BY 1'),
	"0|permanently_failed|3|22012\n1|permanently_failed|3|42P01",
	'failing tasks end permanently_failed after 3 attempts, remote SQLSTATE kept');
is(tt_sql($node, 'SELECT last_value FROM public.attempts_seq'),
	'3', 'the failing query really ran three times');
like(tt_sql($node, 'SELECT error FROM task_tracker.tasks WHERE job_id = 30 AND task_id = 0'),
	qr/division by zero/, 'error message kept');
like(tt_sql($node, 'SELECT error FROM task_tracker.tasks WHERE job_id = 30 AND task_id = 1'),
	qr/relation "public.no_such_table" does not exist/, 'error message kept');
is(tt_sql($node, 'SELECT task_tracker.task_status(30, 0)', user => 'alice'),
	'permanently_failed', 'task_status agrees');

my ($rc, $out, $err) = tt_psql($node,
	'SELECT * FROM task_tracker.task_result(30, 0) AS t(x bigint)',
	user => 'alice', verbose => 1);
isnt($rc, 0, 'task_result of a failed task is an error');

# Succeeds on the second attempt: fails while the sequence is at 1.
tt_sql($node, q{
CREATE SEQUENCE public.flaky_seq;
GRANT USAGE, SELECT, UPDATE ON public.flaky_seq TO alice;
});
tt_sql($node, q{SELECT task_tracker.assign_task(31, 0,
	'SELECT 10 / (nextval(''public.flaky_seq'') - 1)')}, user => 'alice');
tt_wait_job($node, 31, user => 'alice', tasks => 1);
is( tt_sql($node, 'SELECT status, attempts FROM task_tracker.tasks WHERE job_id = 31'),
	'succeeded|2', 'a task that fails once succeeds on its second attempt');
is(tt_sql($node, 'SELECT x FROM task_tracker.task_result(31, 0) AS t(x bigint)', user => 'alice'),
	'10', 'rows of the successful attempt');

# Reload to 1 attempt.
tt_sql($node, 'ALTER SYSTEM SET citus.task_max_attempts = 1');
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SHOW citus.task_max_attempts', '1'), 'reloaded');
tt_sql($node, q{SELECT task_tracker.assign_task(32, 0, 'SELECT 1/0')}, user => 'alice');
tt_wait_job($node, 32, user => 'alice', tasks => 1);
is( tt_sql($node, 'SELECT status, attempts FROM task_tracker.tasks WHERE job_id = 32'),
	'permanently_failed|1', 'after a reload to 1, one attempt only');

# Re-assigning a permanently failed task restarts it with fresh attempts.
tt_sql($node, 'ALTER SYSTEM RESET citus.task_max_attempts');
tt_sql($node, 'SELECT pg_reload_conf()');
ok($node->poll_query_until('postgres', 'SHOW citus.task_max_attempts', '3'), 'reset');
tt_sql($node, q{SELECT task_tracker.assign_task(30, 0, 'SELECT 7')}, user => 'alice');
tt_wait_job($node, 30, user => 'alice', tasks => 2);
is( tt_sql($node, 'SELECT status, attempts, error IS NULL FROM task_tracker.tasks WHERE job_id = 30 AND task_id = 0'),
	'succeeded|1|t', 're-assigned task succeeded with a fresh attempt count and no stale error');
is(tt_sql($node, 'SELECT x FROM task_tracker.task_result(30, 0) AS t(x int)', user => 'alice'),
	'7', 'the new query ran');

tt_cleanup_and_check($node, [ [ 30, 'alice' ], [ 31, 'alice' ], [ 32, 'alice' ] ]);
$node->stop;
done_testing();
