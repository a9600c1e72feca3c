
# Invalid arguments, table driven (SPEC §7, README "Errors you can get"):
# every worker SQL function (wait_for_task_results too) with NULLs, empty
# strings, out-of-range and extreme ids, a 100 MB query text and a text over
# a session's own citus.max_task_query_size, invalid UTF-8, SQL failing at
# parse (the position points into the task's text), plan and run time,
# transaction control, statements that try to leak session state (SET ROLE,
# SET SESSION AUTHORIZATION, settings) into the next task of the same user,
# COPY to the client, a task killing its own session, duplicate assignment,
# unknown tasks and wrong column definition lists; waits that time out
# return nothing and drop nothing.
#
# Each case must fail with its documented SQLSTATE, message, DETAIL and
# HINT; throughout, a job of
# another user that was queued before (one task running, one finished)
# survives, the tracker and the postmaster keep their pids, and nothing
# crashes.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# Two slots: the sentinel holds one for the whole test, so alice's tasks run
# one at a time in the other (which makes session reuse observable).  Idle
# sessions stay long enough for the reuse checks below.
my $node = tt_node('badtable', conf => qq{
citus.max_running_tasks_per_node = 2
citus.task_tracker_idle_connection_timeout = '3s'
});
tt_create_role($node, 'alice');
tt_create_role($node, 'bob');
tt_sql($node, q{
CREATE ROLE alice_grp NOLOGIN;
GRANT alice_grp TO alice;
CREATE TABLE public.leak (v int);
GRANT SELECT, INSERT ON public.leak TO alice;
});

my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $postmaster = tt_postmaster_pid($node);

# --- the sentinel: bob's job 900, queued before everything else.  Task 0
# blocks on an advisory lock held by the test until the end; task 1 finishes
# at once and its result must still be there at the end.
my $gate = $node->background_psql('postgres');
$gate->set_query_timer_restart();	# it lives as long as the test, not one timeout
$gate->query_safe('SELECT pg_advisory_lock(900)');
tt_sql($node, q{SELECT task_tracker.assign_tasks(900, '{0,1}', ARRAY[
	'SELECT pg_advisory_xact_lock_shared(900), ''sentinel-0''::text',
	'SELECT ''sentinel-1''::text'])}, user => 'bob');
ok( $node->poll_query_until('postgres',
		q{SELECT string_agg(status, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 900},
		'running,succeeded'),
	'sentinel: task 0 running, task 1 succeeded');

sub still_alive
{
	my ($what) = @_;
	is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker,
		"$what: tracker pid unchanged");
	is(tt_postmaster_pid($node), $postmaster, "$what: postmaster pid unchanged");
	is( tt_sql($node,
			q{SELECT string_agg(status, ',' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 900}),
		'running,succeeded', "$what: bob's sentinel job untouched");
	return;
}

# --- 1. errors at call time: [sql, sqlstate, message regexp]
my $big = 9223372036854775807;
my @cases = (
	# NULL arguments (the functions are not STRICT: NULL is an error)
	[ q{SELECT task_tracker.assign_task(NULL, 1, 'SELECT 1')}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT task_tracker.assign_task(1, NULL, 'SELECT 1')}, '22004', 'task_id must not be NULL' ],
	[ q{SELECT task_tracker.assign_task(1, 1, NULL)}, '22004', 'query must not be NULL' ],
	[ q{SELECT task_tracker.assign_tasks(NULL, '{1}', '{"SELECT 1"}')}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT task_tracker.assign_tasks(1, NULL, '{"SELECT 1"}')}, '22004', 'task_ids must not be NULL' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{1}', NULL)}, '22004', 'queries must not be NULL' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{1,NULL}', '{"SELECT 1","SELECT 2"}')}, '22004', 'task_ids and queries must not contain NULLs' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{1,2}', ARRAY['SELECT 1', NULL])}, '22004', 'task_ids and queries must not contain NULLs' ],
	[ q{SELECT task_tracker.task_status(NULL, 1)}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT task_tracker.task_status(1, NULL)}, '22004', 'task_id must not be NULL' ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(NULL, 0)}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(1, NULL)}, '22004', 'timeout_ms must not be NULL' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(NULL, 0)}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, NULL)}, '22004', 'timeout_ms must not be NULL' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, 0, NULL)}, '22004', 'max_bytes must not be NULL' ],
	[ q{SELECT * FROM task_tracker.task_result(NULL, 1) AS t(x int)}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT * FROM task_tracker.task_result(1, NULL) AS t(x int)}, '22004', 'task_id must not be NULL' ],
	[ q{SELECT task_tracker.task_result_copy(NULL, 0)}, '22004', 'job_id must not be NULL' ],
	[ q{SELECT task_tracker.task_result_copy(1, NULL)}, '22004', 'task_id must not be NULL' ],
	[ q{SELECT task_tracker.cleanup_job(NULL)}, '22004', 'job_id must not be NULL' ],

	# empty query texts
	[ q{SELECT task_tracker.assign_task(1, 1, '')}, '42601', 'task query must not be empty' ],
	[ q{SELECT task_tracker.assign_task(1, 1, E'  \n\t ')}, '42601', 'task query must not be empty' ],
	[ q{SELECT task_tracker.assign_task(1, 1, ';')}, '42601', 'task query must not be empty' ],
	[ q{SELECT task_tracker.assign_task(1, 1, '-- only a comment')}, '42601', 'task query must not be empty' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{1,2}', '{"SELECT 1",""}')}, '42601', 'task query must not be empty' ],

	# ids out of range
	[ q{SELECT task_tracker.assign_task(0, 1, 'SELECT 1')}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.assign_task(-1, 1, 'SELECT 1')}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.assign_task(-9223372036854775808, 1, 'SELECT 1')}, '22003', 'job id -9223372036854775808 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.assign_task(9223372036854775808::bigint, 1, 'SELECT 1')}, '22003', 'bigint out of range' ],
	[ q{SELECT task_tracker.assign_task(1, -1, 'SELECT 1')}, '22003', 'task id -1 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.assign_task(1, -2147483648, 'SELECT 1')}, '22003', 'task id -2147483648 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.assign_task(1, 2147483648::int, 'SELECT 1')}, '22003', 'integer out of range' ],
	[ q{SELECT task_tracker.assign_tasks(0, '{1}', '{"SELECT 1"}')}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{0,-1}', '{"SELECT 1","SELECT 2"}')}, '22003', 'task id -1 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{0,-5}', '{"SELECT 1","SELECT 2"}')}, '22003', 'task id -5 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.assign_tasks(-501, '{0}', '{"SELECT 1"}')}, '22003', 'job id -501 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(0, 0)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(-1, 0)}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(0, 0)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(-9223372036854775808, 0, 0, 0)}, '22003', 'job id -9223372036854775808 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(-9223372036854775808, 0)}, '22003', 'job id -9223372036854775808 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.cleanup_job(0)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.cleanup_job(-1)}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	# an id that can never exist is out of range for every function
	[ q{SELECT task_tracker.task_status(0, 0)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.task_status(-1, 0)}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.task_status(1, -1)}, '22003', 'task id -1 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT * FROM task_tracker.task_result(-1, 0) AS t(x int)}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.task_result(0, 0) AS t(x text)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT * FROM task_tracker.task_result(1, -1) AS t(x int)}, '22003', 'task id -1 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.task_result_copy(0, 0)}, '22003', 'job id 0 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.task_result_copy(-1, 0)}, '22003', 'job id -1 is out of range\\nDETAIL:  Job ids are positive\\.' ],
	[ q{SELECT task_tracker.task_result_copy(1, -1)}, '22003', 'task id -1 is out of range\\nDETAIL:  Task ids are zero or positive\\.' ],
	[ q{SELECT task_tracker.task_result_copy(1, 0, -1)}, '22023', 'skip_rows must not be negative' ],
	[ q{SELECT task_tracker.task_result_copy(1, 0, 0, -1)}, '22023', 'columns must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(1, -1)}, '22023', 'timeout_ms must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, -1)}, '22023', 'timeout_ms must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, 0, -1)}, '22023', 'max_bytes must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, 0, -2147483648)}, '22023', 'max_bytes must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, 0, 0, -1)}, '22023', 'columns must not be negative' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(1, 0, 2147483648::int)}, '22003', 'integer out of range' ],

	# unknown tasks and jobs, extreme ids
	[ qq{SELECT task_tracker.task_status($big, 2147483647)}, '42704', "task \\(job $big, task 2147483647\\) not found" ],
	[ qq{SELECT * FROM task_tracker.task_result($big, 0) AS t(x int)}, '42704', "task \\(job $big, task 0\\) not found" ],
	[ q{SELECT * FROM task_tracker.task_result(1, 2147483647) AS t(x int)}, '42704', 'task \(job 1, task 2147483647\) not found' ],
	[ qq{SELECT * FROM task_tracker.wait_for_tasks($big, 0)}, '42704', "job $big not found" ],
	[ q{SELECT * FROM task_tracker.wait_for_tasks(777, 2147483647)}, '42704', 'job 777 not found' ],
	[ qq{SELECT * FROM task_tracker.wait_for_task_results($big, 0)}, '42704', "job $big not found" ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(777, 2147483647, 2147483647, 1600)}, '42704', 'job 777 not found' ],
	# bob's sentinel job: alice can neither learn of its tasks nor take (drop) them
	[ q{SELECT * FROM task_tracker.wait_for_task_results(900, 0)}, '42704', 'job 900 not found' ],
	[ q{SELECT * FROM task_tracker.wait_for_task_results(900, 100, 2147483647)}, '42704', 'job 900 not found' ],

	# batches: shapes and duplicates
	[ q{SELECT task_tracker.assign_tasks(1, '{1,2}', '{"SELECT 1","SELECT 2","SELECT 3"}')}, '2202E', 'task_ids has 2 elements but queries has 3' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{0,1}', '{"SELECT 1"}')}, '2202E', 'task_ids has 2 elements but queries has 1' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{0}', '{"SELECT 1","SELECT 2"}')}, '2202E', 'task_ids has 1 elements but queries has 2' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{{1,2},{3,4}}', '{{"SELECT 1","SELECT 2"},{"SELECT 3","SELECT 4"}}')}, '2202E', 'task_ids and queries must be one-dimensional arrays' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{3,1,3}', '{"SELECT 1","SELECT 2","SELECT 3"}')}, '42710', 'task id 3 appears more than once in the batch' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{0,0}', '{"SELECT 1","SELECT 2"}')}, '42710', 'task id 0 appears more than once in the batch' ],

	# parse errors, several statements, transaction control
	# the error position points into the task's query, not the calling statement
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELEC 1')}, '42601', 'syntax error at or near "SELEC"\nLINE 1: SELEC 1\n {8}\^\nQUERY:  SELEC 1\n' ],
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELECT (1')}, '42601', 'syntax error at end of input\nLINE 1: SELECT \(1\n {17}\^\nQUERY:  SELECT \(1\n' ],
	[ q{SELECT task_tracker.assign_task(1, 1, E'SELECT 1 +\n\n  FROM')}, '42601', 'syntax error at or near "FROM"\nLINE 3:   FROM\n {10}\^\nQUERY:  SELECT 1 \+\n\n  FROM\n' ],
	# a batch with one query that does not parse adds nothing (counted below)
	[ q{SELECT task_tracker.assign_tasks(1, '{0,1,2}', '{"SELECT 1","SELEC 2","SELECT 3"}')}, '42601', 'syntax error at or near "SELEC"' ],
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELECT ''unterminated')}, '42601', 'unterminated quoted string' ],
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELECT 1; SELECT 2')}, '0A000', 'a task must be a single statement\nHINT:  Assign one task per statement\.' ],
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELECT 1;;SELECT 2;')}, '0A000', 'a task must be a single statement\nHINT:  Assign one task per statement\.' ],
	(map { [ "SELECT task_tracker.assign_task(1, 1, '$_')", '0A000', 'transaction control statements cannot be run as tasks\nDETAIL:  Each task runs in a transaction of its own\.' ] }
	  ('BEGIN', 'START TRANSACTION', 'COMMIT', 'END', 'ROLLBACK', 'ABORT', 'SAVEPOINT s',
		'RELEASE SAVEPOINT s', 'ROLLBACK TO SAVEPOINT s', "PREPARE TRANSACTION ''x''",
		"COMMIT PREPARED ''x''", "ROLLBACK PREPARED ''x''", 'begin; ')),
	[ q{SELECT task_tracker.assign_tasks(1, '{1,2}', '{"SELECT 1","COMMIT"}')}, '0A000', 'transaction control statements cannot be run as tasks' ],

	# invalid UTF-8 never reaches the function: PostgreSQL's own validation
	[ q{SELECT task_tracker.assign_task(1, 1, convert_from('\x53454c45435420c328'::bytea, 'UTF8'))}, '22021', 'invalid byte sequence for encoding "UTF8": 0xc3 0x28' ],
	[ q{SELECT task_tracker.assign_tasks(1, '{1}', ARRAY[convert_from('\x27ff27'::bytea, 'UTF8')])}, '22021', 'invalid byte sequence for encoding "UTF8": 0xff' ],
	[ q{SELECT task_tracker.assign_task(1, 1, 'SELECT ' || chr(0))}, '54000', 'null character not permitted' ],

	# task_result without a column definition list: PostgreSQL's own error
	[ q{SELECT * FROM task_tracker.task_result(1, 1)}, '42601', 'a column definition list is required for functions returning "record"' ],
);

for my $c (@cases)
{
	my ($sql, $code, $msg) = @$c;
	tt_expect_error($node, $sql, $code, $msg, $sql, user => 'alice');
}
is(tt_sql($node, "SELECT count(*) FROM task_tracker.tasks WHERE user_name = 'alice'"),
	'0', 'none of the refused calls queued anything');
still_alive('after the refused calls');

# an empty batch is nothing to do
tt_sql($node, q{SELECT task_tracker.assign_tasks(2, '{}', '{}')}, user => 'alice');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 2'), '0',
	'an empty batch adds nothing');
# cleanup of a job that does not exist is nothing to do
is(tt_sql($node, "SELECT task_tracker.cleanup_job($big)", user => 'alice'), '',
	'cleanup_job of an unknown job: nothing to do');

# citus.max_task_query_size: only a superuser sets it, also for a session
tt_expect_error($node, 'SET citus.max_task_query_size = 64', '42501',
	'permission denied to set parameter "citus\.max_task_query_size"', 'a user sets max_task_query_size',
	user => 'alice');
my $over64 = 'SELECT ' . ('1+' x 40) . '1';
tt_expect_error($node,
	"SET citus.max_task_query_size = 64; SET ROLE alice; SELECT task_tracker.assign_task(4, 0, '$over64')",
	'54000', 'task query is 88 bytes, more than citus\.max_task_query_size \(64 bytes\)\nHINT:  Increase citus\.max_task_query_size\.',
	'a session limit of 64 bytes');
tt_expect_error($node,
	"SET citus.max_task_query_size = 64; SET ROLE alice; SELECT task_tracker.assign_tasks(4, '{0,1}', ARRAY['SELECT 1', '$over64'])",
	'54000', 'task query is 88 bytes, more than citus\.max_task_query_size \(64 bytes\)\nHINT:  Increase citus\.max_task_query_size\.',
	'a session limit of 64 bytes, in a batch');
tt_sql($node, "SET citus.max_task_query_size = 64; SET ROLE alice; SELECT task_tracker.assign_task(4, 0, 'SELECT ' || repeat('1', 57))");
is(tt_sql($node, 'SELECT length(query) FROM task_tracker.tasks WHERE job_id = 4', user => 'alice'),
	'64', 'a query of exactly the session limit is a task');
tt_wait_job($node, 4, user => 'alice', tasks => 1);
tt_sql($node, 'SELECT task_tracker.cleanup_job(4)', user => 'alice');

# --- 2. extreme but valid ids work, and cleanup removes them
# (a result over 64 kB, so that it goes to a file, not to shared memory)
tt_sql($node, qq{SELECT task_tracker.assign_task($big, 2147483647, 'SELECT ''edge''::text, repeat(''x'', 70000)')},
	user => 'alice');
tt_sql($node, qq{SELECT task_tracker.assign_task(1, 0, 'SELECT 0')}, user => 'alice');
tt_wait_job($node, $big, user => 'alice', tasks => 1);
tt_wait_job($node, 1, user => 'alice', tasks => 1);
is(tt_sql($node, qq{SELECT x, length(y) FROM task_tracker.task_result($big, 2147483647) AS t(x text, y text)}, user => 'alice'),
	'edge|70000', 'job 9223372036854775807 / task 2147483647 runs and returns its row');
ok(scalar(grep { $_ eq "job_$big" } tt_job_dirs($node)), '... with a job directory named by the number');
tt_sql($node, qq{SELECT task_tracker.cleanup_job($big)}, user => 'alice');
ok(!grep({ $_ eq "job_$big" } tt_job_dirs($node)), '... which cleanup_job removes');

# a task of a job that exists, and a job that does not: not found
tt_expect_error($node, 'SELECT task_tracker.task_status(1, 7)', '42704',
	'task \(job 1, task 7\) not found', 'task_status of an unknown task of a known job', user => 'alice');
tt_expect_error($node, 'SELECT task_tracker.task_status(999999, 0)', '42704',
	'task \(job 999999, task 0\) not found', 'task_status of an unknown job', user => 'alice');
tt_expect_error($node, 'SELECT * FROM task_tracker.task_result(1, 7) AS t(x int)', '42704',
	'task \(job 1, task 7\) not found', 'task_result of an unknown task of a known job', user => 'alice');
tt_expect_error($node, 'SELECT task_tracker.task_result_copy(1, 7)', '42704',
	'task \(job 1, task 7\) not found', 'task_result_copy of an unknown task of a known job', user => 'alice');

# waits that time out return nothing, and wait_for_task_results drops
# nothing (a session is told of each final task once: the first wait here
# takes the one report of job 1)
is( tt_sql($node, q{SELECT count(*) FROM task_tracker.wait_for_tasks(1, 60000);
		SELECT count(*) FROM task_tracker.wait_for_tasks(1, 10);
		SELECT count(*) FROM task_tracker.wait_for_task_results(1, 10);}, user => 'alice'),
	"1\n0\n0", 'wait_for_tasks and wait_for_task_results with nothing new: no rows after their timeout');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 1'), '1',
	'... and the task is still there');

# column definition lists and column counts that do not fit (task 0 of job 1
# has one column, "0")
tt_expect_error($node, 'SELECT * FROM task_tracker.task_result(1, 0) AS t(x uuid)', '22P02',
	'invalid input syntax for type uuid: "0"', 'a value that does not fit its column type', user => 'alice');
tt_expect_error($node, 'SELECT task_tracker.task_result_copy(1, 0, 0, 2)', '42804',
	'task result has 1 columns but the column definition list has 2', 'task_result_copy asked for 2 columns',
	user => 'alice');
is( tt_sql($node, q{SELECT translate(c, E'\t\n', '|$') FROM task_tracker.task_result_copy(1, 0, 0, 1) c},
		user => 'alice'),
	'0$', 'task_result_copy with the right column count: the stored line');

# a trailing semicolon and comments are fine
tt_sql($node, q{SELECT task_tracker.assign_tasks(5, '{0,1}', ARRAY['SELECT 1;', E'-- comment\nSELECT 2 /* more */'])},
	user => 'alice');
tt_wait_job($node, 5, user => 'alice', tasks => 2);
is( tt_sql($node, q{SELECT string_agg(status || ':' || x, ',' ORDER BY task_id) FROM task_tracker.tasks,
		LATERAL task_tracker.task_result(5, task_id) AS t(x int) WHERE job_id = 5}, user => 'alice'),
	'succeeded:1,succeeded:2', 'a trailing semicolon and comments: the tasks run');
tt_sql($node, 'SELECT task_tracker.cleanup_job(5)', user => 'alice');

# duplicate assignment of a task that may not have finished yet (no DETAIL:
# its status may be assigned, running or succeeded by now)
tt_sql($node, q{SELECT task_tracker.assign_task(6, 0, 'SELECT 1')}, user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_task(6, 0, 'SELECT 1')},
	'42710', 'task \(job 6, task 0\) is already assigned', 'duplicate assignment, same query', user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_task(6, 0, 'SELECT 2')},
	'42710', 'task \(job 6, task 0\) is already assigned', 'duplicate assignment, another query', user => 'alice');
tt_wait_job($node, 6, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT query, status FROM task_tracker.tasks WHERE job_id = 6'),
	'SELECT 1|succeeded', '... the task kept its query and ran once');
tt_sql($node, 'SELECT task_tracker.cleanup_job(6)', user => 'alice');

# duplicate assignment of a finished (succeeded) task
tt_expect_error($node, q{SELECT task_tracker.assign_task(1, 0, 'SELECT 0')},
	'42710', 'task \(job 1, task 0\) is already assigned\nDETAIL:  Its status is succeeded; only failed or canceled tasks can be assigned again\.',
	'duplicate assignment', user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_tasks(1, '{5,0}', '{"SELECT 5","SELECT 0"}')},
	'42710', 'task \(job 1, task 0\) is already assigned', 'duplicate assignment in a batch', user => 'alice');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 1'), '1',
	'... and nothing of that batch was added');
# task 0 of job 1 has one column
tt_expect_error($node, q{SELECT * FROM task_tracker.task_result(1, 0) AS t(a int, b int)},
	'42804', 'task result has 1 columns? but the column definition list has 2', 'column definition list too wide',
	user => 'alice');

# --- 3. a 100 MB query text: refused with 54000, nothing stored, no crash
my $mem_before = tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker');
tt_expect_error($node,
	q{SELECT task_tracker.assign_task(3, 0, 'SELECT ' || repeat('x', 100 * 1024 * 1024))},
	'54000', 'task query is 104857607 bytes, more than citus\.max_task_query_size \(1048576 bytes\)\nHINT:  Increase citus\.max_task_query_size\.',
	'100 MB query', user => 'alice');
tt_expect_error($node,
	q{SELECT task_tracker.assign_tasks(3, '{0,1}', ARRAY['SELECT 1', 'SELECT ' || repeat('x', 100 * 1024 * 1024)])},
	'54000', 'task query is 104857607 bytes, more than citus\.max_task_query_size', '100 MB query in a batch', user => 'alice');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 3'), '0',
	'100 MB: nothing of the batch was added');
is(tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker'), $mem_before,
	'100 MB: no query text was stored in shared memory');
still_alive('after 100 MB queries');

# the limit is inclusive: exactly citus.max_task_query_size bytes is a task
tt_sql($node, q{SELECT task_tracker.assign_task(3, 0, 'SELECT 1' || repeat(' ', 1048576 - 8))},
	user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_task(3, 1, 'SELECT 1' || repeat(' ', 1048576 - 7))},
	'54000', 'task query is 1048577 bytes', 'one byte over the limit', user => 'alice');
tt_wait_job($node, 3, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(3, 0) AS t(x int)', user => 'alice'),
	'1', 'a query of exactly the limit runs');
tt_sql($node, 'SELECT task_tracker.cleanup_job(3)', user => 'alice');
is(tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker'), $mem_before,
	'its text is freed after cleanup');

# --- 4. errors of the task itself: [job, query, sqlstate, error regexp]
my @task_errors = (
	[ 10, 'SELECT * FROM no_such_table', '42P01', 'relation "no_such_table" does not exist' ],
	[ 11, 'SELECT 1/0', '22012', 'division by zero' ],
	# 4,000 rows of 100 bytes (past citus.task_result_inline_size: a result
	# file is being written) before the division by zero
	[ 12, q{SELECT repeat('x', 100) || 1/(4001 - g) FROM generate_series(1, 4001) g}, '22012', 'division by zero' ],
	[ 13, 'COPY (SELECT 1) TO STDOUT', '0A000', 'COPY to or from the client is not supported' ],
	[ 14, 'COPY public.leak FROM STDIN', '0A000|42501', 'COPY to or from the client is not supported|permission denied' ],
	[ 15, 'SELECT pg_terminate_backend(pg_backend_pid())', '57P01|08006|08000|08003', '.' ],
	[ 16, 'SET SESSION AUTHORIZATION bob', '42501', 'permission denied to set session authorization' ],
	[ 17, 'SELECT no_such_function(1)', '42883', 'function no_such_function\(integer\) does not exist' ],
	[ 18, q{SELECT 'x'::int}, '22P02', 'invalid input syntax for type integer' ],
);
for my $t (@task_errors)
{
	my ($job, $q) = @$t;
	tt_sql($node, 'SELECT task_tracker.assign_task(' . $job . ', 0, ' . tt_quote_literal($q) . ')',
		user => 'alice');
}
for my $t (@task_errors)
{
	my ($job, $q, $code, $msg) = @$t;
	tt_wait_job($node, $job, user => 'alice', tasks => 1);
	my ($status, $state, $error, $attempts) = split /\|/, tt_sql($node,
		"SELECT status, error_sqlstate, error, attempts FROM task_tracker.tasks WHERE job_id = $job",
		user => 'alice');
	is($status, 'permanently_failed', "task '$q': permanently_failed");
	like($state // '', qr/^(?:$code)$/, "task '$q': error_sqlstate $code");
	like($error // '', qr/$msg/, "task '$q': error kept");
	is($attempts, '3', "task '$q': tried citus.task_max_attempts times");
	tt_expect_error($node, "SELECT * FROM task_tracker.task_result($job, 0) AS t(x int)",
		'55000', "task \\(job $job, task 0\\) has no result\\nDETAIL:  Its status is permanently_failed; only succeeded tasks have results\\.",
		"task '$q': no result", user => 'alice');
}
tt_expect_error($node, 'SELECT task_tracker.task_result_copy(11, 0)', '55000',
	'task \(job 11, task 0\) has no result\nDETAIL:  Its status is permanently_failed; only succeeded tasks have results\.',
	'task_result_copy of a failed task: no result', user => 'alice');
# wait_for_tasks reports the error and its SQLSTATE once
tt_sql($node, q{SELECT task_tracker.assign_task(19, 0, 'SELECT * FROM no_such_table')}, user => 'alice');
my ($first19, $again19) = split /\n/, tt_sql($node, q{
	SELECT task_id, status, sqlstate, error ~ 'no_such_table' FROM task_tracker.wait_for_tasks(19, 60000);
	SELECT count(*) FROM task_tracker.wait_for_tasks(19, 0);}, user => 'alice');
is($first19, '0|permanently_failed|42P01|t', 'wait_for_tasks returns the plan-time error with 42P01');
is($again19, '0', '... once to the same session');
# job 12 wrote 400 kB of rows before its error: the same rows without the
# error are kept in a file (job 45), the failed attempts left none
tt_sql($node, q{SELECT task_tracker.assign_task(45, 0, $$SELECT repeat('x', 100) || 1 FROM generate_series(1, 4000) g$$)},
	user => 'alice');
tt_wait_job($node, 45, user => 'alice', tasks => 1);
sub files_in
{
	my ($d) = @_;
	my $dir = $node->data_dir . "/pg_task_tracker/$d";
	opendir(my $dh, $dir) or return ();
	my @f = grep { !/^\./ } readdir($dh);
	closedir($dh);
	return @f;
}
is(scalar(files_in('job_45')), 1, 'the rows of job 12 without its error are kept in a result file');
is(scalar(files_in('job_12')), 0, 'a task failing after some rows leaves no result file')
  or diag(join(' ', files_in('job_12')));
tt_sql($node, 'SELECT task_tracker.cleanup_job(45)', user => 'alice');
# a task that floods its session with 20 MB of NOTICEs succeeds; a task
# whose error message is 10 MB fails with it, but the tracker keeps a
# bounded amount of it (query texts are bounded by citus.max_task_query_size;
# an error text must not let a user fill shared memory either)
my $mem20 = tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker');
tt_sql($node, q{SELECT task_tracker.assign_tasks(20, '{0,1}', ARRAY[
	$t$DO $d$BEGIN FOR i IN 1..20000 LOOP RAISE NOTICE USING MESSAGE = repeat('n', 1000); END LOOP; END$d$$t$,
	$t$DO $d$BEGIN RAISE EXCEPTION USING MESSAGE = repeat('e', 10000000); END$d$$t$])}, user => 'alice');
tt_wait_job($node, 20, user => 'alice', tasks => 2);
is(tt_sql($node, 'SELECT status FROM task_tracker.tasks WHERE job_id = 20 AND task_id = 0'),
	'succeeded', 'a task flooding NOTICEs succeeds');
my ($st20, $code20, $len20, $head20) = split /\|/, tt_sql($node,
	q{SELECT status, error_sqlstate, length(error), left(error, 5) FROM task_tracker.tasks WHERE job_id = 20 AND task_id = 1});
is("$st20|$code20|$head20", 'permanently_failed|P0001|eeeee', 'a task with a 10 MB error message fails with it');
cmp_ok($len20, '<=', 1048576, "... and at most 1 MB of the message is kept in shared memory (kept: $len20 bytes)");
tt_sql($node, 'SELECT task_tracker.cleanup_job(20)', user => 'alice');
is(tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker'), $mem20,
	'... all of it is freed by cleanup_job');

# re-assigning a failed task of your own restarts it
tt_sql($node, 'CREATE TABLE public.no_such_table (x int); INSERT INTO public.no_such_table VALUES (7); GRANT SELECT ON public.no_such_table TO alice');
tt_sql($node, q{SELECT task_tracker.assign_task(10, 0, 'SELECT * FROM no_such_table')}, user => 'alice');
tt_wait_job($node, 10, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(10, 0) AS t(x int)', user => 'alice'),
	'7', 'a permanently failed task assigned again runs afresh');
still_alive('after failing tasks');

# --- 5. session state must not leak into the next task of the same user.
# A task changes its session (role, session authorization, settings, temp
# tables); later tasks of the same user run until one lands on that same
# session (kept and reset with DISCARD ALL), or the tracker closed it; every
# one of them must see a clean session.
my $probe = q{SELECT pg_backend_pid(), concat_ws('/', current_user, session_user,
	current_setting('default_transaction_read_only'), current_setting('statement_timeout'),
	current_setting('search_path'), (SELECT count(*) FROM pg_class WHERE relname = 'leak_tmp' AND relnamespace = pg_my_temp_schema()))};

sub leak_check
{
	my ($job, $leak, %opts) = @_;
	# a role of its own, so that the session of the leaking task is the
	# only task session of that role
	my $user = "leak$job";
	tt_sql($node, "CREATE ROLE $user LOGIN" . ($opts{superuser} ? ' SUPERUSER' : '')
		  . "; GRANT alice_grp TO $user; ALTER ROLE $user SET search_path = public;"
		  . "GRANT SELECT, INSERT ON public.leak TO $user");
	my $clean = "$user/$user/off/0/public/0";
	my $who = $opts{superuser} ? "superuser $user" : $user;
	tt_sql($node, "SELECT task_tracker.assign_task($job, 0, " . tt_quote_literal($leak) . ')', user => $user);
	tt_wait_job($node, $job, user => $user, tasks => 1);
	is(tt_sql($node, "SELECT status FROM task_tracker.tasks WHERE job_id = $job AND task_id = 0"),
		'succeeded', "$who: task '$leak' succeeded");
	# the leaking task's session is the only task session of $user; it is
	# kept (reset with DISCARD ALL: README, "Using it") and the idle timeout
	# is long here, so the next task of $user must run on it
	my $pid = tt_sql($node,
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE usename = '$user' AND application_name = 'task_tracker'");
	like($pid, qr/^\d+$/, "$who: after '$leak' one task session of $user is kept");
	tt_sql($node, "SELECT task_tracker.assign_task($job, 1, " . tt_quote_literal($probe) . ')', user => $user);
	tt_wait_job($node, $job, user => $user, tasks => 2);
	my ($p, $state) = split /\|/, tt_sql($node,
		"SELECT * FROM task_tracker.task_result($job, 1) AS t(p int, s text)", user => $user);
	is($p // 'no result', $pid, "$who: after '$leak' the next task reuses that session");
	is($state // 'no result', $clean, "$who: ... and sees a clean session ($clean)");
	tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => $user);
	return;
}

# idle sessions stay for the whole section, so that reuse is certain
tt_sql($node, q{ALTER SYSTEM SET citus.task_tracker_idle_connection_timeout = '120s'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT current_setting('citus.task_tracker_idle_connection_timeout') = '2min'}),
	'idle task sessions kept for 120 s');
leak_check(30, 'SET ROLE alice_grp');
leak_check(31, q{SELECT set_config('role', 'alice_grp', false)});
leak_check(32, 'SET SESSION AUTHORIZATION leak32');
leak_check(33, 'SET default_transaction_read_only = on');
leak_check(34, q{SET statement_timeout = '1ms'});
leak_check(35, 'SET search_path = pg_catalog');
leak_check(36, 'CREATE TEMP TABLE leak_tmp AS SELECT 1 AS x');
leak_check(37, 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
# superusers: SET SESSION AUTHORIZATION really switches, and must be undone
# before the next task of the same superuser
leak_check(40, 'SET SESSION AUTHORIZATION alice', superuser => 1);
leak_check(41, 'SET ROLE alice', superuser => 1);
leak_check(42, q{SELECT set_config('session_authorization', 'alice', false)}, superuser => 1);
leak_check(43, 'SET ROLE alice_grp', superuser => 1);
# a session-level advisory lock taken by a task is released by the reset
tt_sql($node, q{SELECT task_tracker.assign_task(44, 0, 'SELECT pg_advisory_lock(4711)')}, user => 'alice');
tt_wait_job($node, 44, user => 'alice', tasks => 1);
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4711}, '0'),
	'a session advisory lock taken by a task does not outlive the task');
# and another user's task never gets the superuser's session
tt_sql($node, q{SELECT task_tracker.assign_task(38, 0, 'SELECT current_user, session_user')}, user => 'alice');
tt_wait_job($node, 38, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(38, 0) AS t(c name, s name)', user => 'alice'),
	'alice|alice', "alice's task runs as alice");
tt_sql($node, q{ALTER SYSTEM RESET citus.task_tracker_idle_connection_timeout; SELECT pg_reload_conf()});
still_alive('after session-state tasks');

# --- 6. the sentinel finishes: nothing of bob's was lost
$gate->query_safe('SELECT pg_advisory_unlock(900)');
$gate->quit;
tt_wait_job($node, 900, user => 'bob', tasks => 2);
is( tt_sql($node,
		q{SELECT string_agg(x, ',' ORDER BY x) FROM (
			SELECT x FROM task_tracker.task_result(900, 0) AS t(l text, x text)
			UNION ALL SELECT x FROM task_tracker.task_result(900, 1) AS t(x text)) s},
		user => 'bob'),
	'sentinel-0,sentinel-1', "bob's sentinel job: both tasks succeeded with their rows");
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged at the end');
tt_no_crash_in_log($node);

tt_sql($node, q{SELECT task_tracker.cleanup_job(job_id) FROM (SELECT DISTINCT job_id FROM task_tracker.tasks) j});
tt_check_no_leftovers($node);
$node->stop;
done_testing();
