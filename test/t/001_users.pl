
# Tasks run as the user who assigned them, with exactly that user's
# privileges; users cannot see or touch each other's tasks (SPEC §8).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('users');

tt_sql($node, q{
CREATE TABLE public.items (id int, name text);
INSERT INTO public.items VALUES (1, 'one'), (2, 'two'), (3, 'three');
CREATE TABLE public.secret (x int);
INSERT INTO public.secret VALUES (42);
});
tt_create_role($node, 'alice', grant => 'GRANT SELECT ON public.items TO %ROLE%');
tt_create_role($node, 'bob', grant => 'GRANT SELECT ON public.items, public.secret TO %ROLE%');
tt_create_role($node, 'carol', grant => 'GRANT pg_read_all_stats TO %ROLE%');

# --- each user's task runs as that user
tt_sql($node, q{SELECT task_tracker.assign_tasks(101, '{0,1,2}', ARRAY[
	'SELECT current_user, session_user',
	'SELECT count(*) FROM public.items',
	'SELECT x FROM public.secret'])}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_tasks(102, '{0,1}', ARRAY[
	'SELECT current_user, session_user',
	'SELECT x FROM public.secret'])}, user => 'bob');

tt_wait_job($node, 101, user => 'alice', tasks => 3);
tt_wait_job($node, 102, user => 'bob', tasks => 2);

is( tt_sql($node,
		'SELECT cu, su FROM task_tracker.task_result(101, 0) AS t(cu name, su name)',
		user => 'alice'),
	'alice|alice',
	"alice's task runs as alice (current_user and session_user)");
is( tt_sql($node,
		'SELECT cu, su FROM task_tracker.task_result(102, 0) AS t(cu name, su name)',
		user => 'bob'),
	'bob|bob',
	"bob's task runs as bob");
is( tt_sql($node,
		'SELECT n FROM task_tracker.task_result(101, 1) AS t(n bigint)',
		user => 'alice'),
	'3', 'alice reads a table she may read');
is( tt_sql($node,
		'SELECT x FROM task_tracker.task_result(102, 1) AS t(x int)',
		user => 'bob'),
	'42', 'bob reads the table he was granted');

is( tt_sql($node,
		"SELECT job_id, task_id, status, user_name, database_name FROM task_tracker.tasks ORDER BY 1, 2"),
	"101|0|succeeded|alice|postgres
101|1|succeeded|alice|postgres
101|2|permanently_failed|alice|postgres
102|0|succeeded|bob|postgres
102|1|succeeded|bob|postgres",
	'tasks view shows owners and statuses');

# --- privilege denial inside a task: permanently failed with 42501 kept
is( tt_sql($node,
		"SELECT status, error_sqlstate, error ~ 'permission denied for table secret' FROM task_tracker.tasks WHERE job_id = 101 AND task_id = 2"),
	'permanently_failed|42501|t',
	'a task without privileges fails with 42501 and the remote message');
is(tt_sql($node, 'SELECT x FROM public.secret'),
	'42', 'secret table untouched');

# --- other users' rows hide query and error, unless pg_read_all_stats
is( tt_sql($node,
		"SELECT task_id, query IS NULL, error IS NULL FROM task_tracker.tasks WHERE job_id = 101 ORDER BY 1",
		user => 'bob'),
	"0|t|t\n1|t|t\n2|t|t",
	"bob sees alice's tasks without query text or error");
is( tt_sql($node,
		"SELECT task_id, query IS NULL FROM task_tracker.tasks WHERE job_id = 102 ORDER BY 1",
		user => 'bob'),
	"0|f\n1|f",
	'bob sees his own query text');
is( tt_sql($node,
		"SELECT query, error IS NOT NULL FROM task_tracker.tasks WHERE job_id = 101 AND task_id = 2",
		user => 'carol'),
	'SELECT x FROM public.secret|t',
	'a pg_read_all_stats member sees query text and errors');

# --- bob cannot reach alice's tasks
my ($rc, $out, $err);
($rc, $out, $err) = tt_psql($node, 'SELECT task_tracker.task_status(101, 0)',
	user => 'bob', verbose => 1);
like($err, qr/42704/, "task_status of another user's task: 42704");
like($err, qr/not found/, "... reported as not found");

($rc, $out, $err) = tt_psql($node,
	'SELECT * FROM task_tracker.task_result(101, 0) AS t(cu name, su name)',
	user => 'bob', verbose => 1);
like($err, qr/42704/, "task_result of another user's task: not found");
unlike($out, qr/alice/, '... and no rows leak');

($rc, $out, $err) = tt_psql($node, 'SELECT task_tracker.cleanup_job(101)',
	user => 'bob', verbose => 1);
like($err, qr/42501/, "cleanup_job of another user's job: 42501");

($rc, $out, $err) = tt_psql($node,
	q{SELECT task_tracker.assign_task(101, 7, 'SELECT 1')},
	user => 'bob', verbose => 1);
like($err, qr/42501/, "assigning into another user's job: 42501");

($rc, $out, $err) = tt_psql($node,
	q{SELECT task_tracker.assign_task(101, 2, 'SELECT 1')},
	user => 'bob', verbose => 1);
like($err, qr/42501/, "re-assigning another user's failed task: 42501");

is( tt_sql($node,
		"SELECT count(*) FROM task_tracker.tasks WHERE job_id = 101 AND user_name = 'alice'"),
	'3', "alice's job is intact after bob's attempts");

# --- alice re-assigns her own failed task after being granted the table
tt_sql($node, 'GRANT SELECT ON public.secret TO alice');
tt_sql($node, q{SELECT task_tracker.assign_task(101, 2, 'SELECT x FROM public.secret')},
	user => 'alice');
tt_wait_job($node, 101, user => 'alice', tasks => 3);
is( tt_sql($node,
		'SELECT x FROM task_tracker.task_result(101, 2) AS t(x int)',
		user => 'alice'),
	'42', 're-assigning an own failed task restarts it');

# --- a superuser may clean up anybody's job
tt_sql($node, 'SELECT task_tracker.cleanup_job(101)');
tt_sql($node, 'SELECT task_tracker.cleanup_job(102)', user => 'bob');
tt_check_no_leftovers($node);

$node->stop;
done_testing();
