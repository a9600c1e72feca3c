
# Hostile users (SPEC §8): two ordinary users, a NOLOGIN role, a member of
# pg_read_all_stats and odd role and database names.
#
# * each user sees only its own tasks' query text, errors and results;
#   other users' rows show query / error / error_sqlstate as NULL; a
#   pg_read_all_stats member (and a member of the owner's role) sees them;
# * nobody can status / fetch / wait for (42704; wait_for_task_results
#   too: no rows, nothing dropped) or clean up / assign into (42501)
#   another user's job, also not by trying a range of job ids;
# * another session waiting on a job (a superuser's, another of the
#   owner's) takes no reports away from the owner's session, and through
#   wait_for_task_results gets the rows but never drops a task: only the
#   session that assigned it does;
# * a task runs with exactly its owner's privileges: no reading what the
#   owner may not read, no SET ROLE / SET SESSION AUTHORIZATION beyond the
#   owner's memberships, no signalling another user's task backend, no
#   reading another task's result file, no API calls on others' jobs;
# * role and database names with quotes, spaces, '=', backslashes,
#   non-ASCII letters, conninfo fragments and URIs are names: the task
#   runs as exactly that role in exactly that database on this server;
# * result files are mode 0600 and named by numbers only; no text from SQL
#   reaches a path.

use strict;
use warnings;

use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('hostile', conf => "citus.task_max_attempts = 1\n");
my $su = tt_sql($node, 'SELECT current_user');
my $port = $node->port;
tt_create_role($node, 'alice');
tt_create_role($node, 'bob');
tt_create_role($node, 'watcher', grant => 'GRANT pg_read_all_stats TO %ROLE%');
tt_create_role($node, 'alice_admin', grant => 'GRANT alice TO %ROLE%');
tt_sql($node, q{
CREATE ROLE carol NOLOGIN;
CREATE TABLE public.secret (s text);
INSERT INTO public.secret VALUES ('top secret');
CREATE TABLE public.open (v text);
GRANT SELECT, INSERT ON public.open TO PUBLIC;
});
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

# ---------------------------------------------------------------- jobs
# alice: 301 (a row and an error), 311, 321; carol (NOLOGIN): 303; bob: 400
tt_sql($node, q{SELECT task_tracker.assign_tasks(301, '{0,1}', ARRAY[
	'SELECT ''alice-secret''::text', 'SELECT 1/0'])}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(311, 0, 'SELECT ''alice-311''::text')}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(321, 0, 'SELECT ''alice-321''::text')}, user => 'alice');
tt_sql($node, q{SET ROLE carol; SELECT task_tracker.assign_task(303, 0, 'SELECT ''carol-secret''::text')});
tt_sql($node, q{SELECT task_tracker.assign_tasks(400, '{0,1}', ARRAY[
	'SELECT ''bob-secret''::text', 'SELECT * FROM no_such_bob_table'])}, user => 'bob');
tt_wait_job($node, $_, user => 'alice', tasks => undef) for (311, 321);
tt_wait_job($node, 301, user => 'alice', tasks => 2);
tt_wait_job($node, 400, user => 'bob', tasks => 2);
tt_wait_job($node, 303, tasks => 1);
is( tt_sql($node, q{SELECT status, error_sqlstate FROM task_tracker.tasks WHERE job_id = 303}),
	'permanently_failed|08001', 'the NOLOGIN role: its task fails to log in (08001)');

# ---------------------------------------------------------------- visibility
my $vis = q{SELECT
	count(*) FILTER (WHERE user_name = current_user AND query IS NULL),
	count(*) FILTER (WHERE user_name <> current_user
	                   AND (query IS NOT NULL OR error IS NOT NULL OR error_sqlstate IS NOT NULL)),
	count(*) FILTER (WHERE user_name <> current_user)
  FROM task_tracker.tasks};
is(tt_sql($node, $vis, user => 'alice'), '0|0|3', 'alice sees her query texts and nobody else\'s');
is(tt_sql($node, $vis, user => 'bob'), '0|0|5', 'bob sees his query texts and nobody else\'s');
is(tt_sql($node, "SET ROLE carol; $vis"), '0|0|6', 'carol (NOLOGIN, through SET ROLE) sees only her own');
is( tt_sql($node,
		q{SELECT string_agg(job_id || ':' || task_id || ':' || coalesce(error_sqlstate, '-'), ',' ORDER BY job_id, task_id)
		  FROM task_tracker.tasks WHERE error IS NOT NULL}, user => 'bob'),
	'400:1:42P01', 'bob sees only his own error');
is( tt_sql($node,
		q{SELECT count(*) FILTER (WHERE query IS NULL),
		         count(*) FILTER (WHERE status = 'permanently_failed' AND (error IS NULL OR error_sqlstate IS NULL))
		  FROM task_tracker.tasks}, user => 'watcher'),
	'0|0', 'a pg_read_all_stats member sees every query text and error');
is( tt_sql($node,
		q{SELECT string_agg(DISTINCT user_name, ',' ORDER BY user_name) FROM task_tracker.tasks WHERE query IS NOT NULL},
		user => 'alice_admin'),
	'alice', 'a member of alice\'s role sees alice\'s query texts (the pg_stat_activity rule), not others\'');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE query IS NULL}), '0',
	'the superuser sees everything');

# ---------------------------------------------------------------- API across users
for my $who ('bob', 'watcher', 'alice_admin')
{
	tt_expect_error($node, 'SELECT task_tracker.task_status(301, 0)', '42704',
		'task \(job 301, task 0\) not found', "$who: task_status of alice's task", user => $who);
	tt_expect_error($node, 'SELECT * FROM task_tracker.task_result(301, 0) AS t(x text)', '42704',
		'task \(job 301, task 0\) not found', "$who: task_result of alice's task", user => $who);
	tt_expect_error($node, 'SELECT * FROM task_tracker.wait_for_tasks(301, 0)', '42704',
		'job 301 not found', "$who: wait_for_tasks on alice's job", user => $who);
	tt_expect_error($node, 'SELECT * FROM task_tracker.wait_for_task_results(301, 0)', '42704',
		'job 301 not found', "$who: wait_for_task_results on alice's job", user => $who);
	tt_expect_error($node, 'SELECT task_tracker.cleanup_job(301)', '42501',
		'job 301 belongs to another user', "$who: cleanup_job of alice's job", user => $who);
	tt_expect_error($node, q{SELECT task_tracker.assign_task(301, 7, 'SELECT 1')}, '42501',
		'job 301 belongs to another user', "$who: assign into alice's job", user => $who);
	tt_expect_error($node, q{SELECT task_tracker.assign_task(301, 0, 'SELECT 1')}, '42501',
		'job 301 belongs to another user', "$who: assign over alice's task", user => $who);
	tt_expect_error($node, q{SELECT task_tracker.assign_tasks(301, '{1,8}', '{"SELECT 1","SELECT 2"}')}, '42501',
		'job 301 belongs to another user', "$who: assign a batch into alice's job", user => $who);
}
tt_expect_error($node, q{SET ROLE carol; SELECT task_tracker.cleanup_job(301)}, '42501',
	'job 301 belongs to another user', "carol: cleanup_job of alice's job");
tt_expect_error($node, q{SET ROLE carol; SELECT * FROM task_tracker.task_result(301, 0) AS t(x text)}, '42704',
	'task \(job 301, task 0\) not found', "carol: task_result of alice's task");
tt_expect_error($node, q{SELECT * FROM task_tracker.task_result(303, 0) AS t(x text)}, '42704',
	'task \(job 303, task 0\) not found', "alice: task_result of carol's task", user => 'alice');
# another user's task looks exactly like a task that does not exist
my $other = tt_expect_error($node, 'SELECT task_tracker.task_status(301, 1)', '42704', '.*', 'status of another\'s task', user => 'bob');
my $none = tt_expect_error($node, 'SELECT task_tracker.task_status(301, 99)', '42704', '.*', 'status of no task', user => 'bob');
s/task \d+\)/task N)/ for ($other, $none);
s/worker_api\.c:\d+/worker_api.c/ for ($other, $none);
is($other, $none, "another user's task and a missing task give the same answer");

# guessing job ids: bob tries every call on jobs 290..330
my $guess_out = tt_sql($node, q{
CREATE TEMP TABLE guess (job bigint, op text, outcome text);
DO $$
DECLARE
	op text;
	outcome text;
BEGIN
	FOR j IN 290..330 LOOP
		FOREACH op IN ARRAY ARRAY['status', 'result', 'wait', 'results', 'cleanup', 'assign'] LOOP
			BEGIN
				CASE op
					WHEN 'status' THEN PERFORM task_tracker.task_status(j, 0);
					WHEN 'result' THEN PERFORM * FROM task_tracker.task_result(j, 0) AS t(x text);
					WHEN 'wait' THEN PERFORM * FROM task_tracker.wait_for_tasks(j, 0);
					WHEN 'results' THEN PERFORM * FROM task_tracker.wait_for_task_results(j, 0);
					WHEN 'cleanup' THEN PERFORM task_tracker.cleanup_job(j);
					WHEN 'assign' THEN PERFORM task_tracker.assign_task(j, 0, 'SELECT 1');
				END CASE;
				outcome := 'ok';
			EXCEPTION WHEN OTHERS THEN
				outcome := SQLSTATE;
			END;
			INSERT INTO guess VALUES (j, op, outcome);
		END LOOP;
	END LOOP;
END $$;
SELECT job, string_agg(op || '=' || outcome, ' ' ORDER BY op) AS outcomes FROM guess GROUP BY job;
}, user => 'bob');
my %guess = map { split /\|/ } split /\n/, $guess_out;
my $foreign = 'assign=42501 cleanup=42501 result=42704 results=42704 status=42704 wait=42704';
my $free = 'assign=ok cleanup=ok result=42704 results=42704 status=42704 wait=42704';
my @wrong = grep {
	$guess{$_} ne (($_ == 301 || $_ == 303 || $_ == 311 || $_ == 321) ? $foreign : $free)
} sort keys %guess;
is(scalar(keys %guess), 41, 'bob tried 41 job ids');
is(scalar(@wrong), 0, 'guessing: other users\' jobs refuse every call, free ids behave as unknown')
  or diag(join("\n", map { "$_: $guess{$_}" } @wrong));
# bob's guesses created jobs of his own; he cleans them up
tt_sql($node, q{SELECT task_tracker.cleanup_job(job_id) FROM task_tracker.tasks
	WHERE job_id BETWEEN 290 AND 330 AND user_name = current_user}, user => 'bob');

# nothing of alice's or carol's changed
is( tt_sql($node, q{SELECT string_agg(job_id || ':' || task_id || ':' || status, ',' ORDER BY job_id, task_id)
	FROM task_tracker.tasks WHERE job_id BETWEEN 290 AND 330}),
	'301:0:succeeded,301:1:permanently_failed,303:0:permanently_failed,311:0:succeeded,321:0:succeeded',
	'alice\'s and carol\'s tasks are untouched');
is( tt_sql($node, 'SELECT * FROM task_tracker.task_result(301, 0) AS t(x text)', user => 'alice'),
	'alice-secret', 'alice still reads her result');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(400, 0) AS t(x text)', user => 'bob'),
	'bob-secret', 'bob reads his own result');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(301, 0) AS t(x text)'),
	'alice-secret', 'the superuser may read any result');

# ---------------------------------------------------------------- reports per caller
# SPEC §4.1: wait_for_tasks returns tasks "not yet reported to this caller":
# a superuser (or another session of the owner) waiting on alice's job must
# not take the reports away from alice's own session
tt_sql($node, q{SELECT task_tracker.assign_tasks(700, '{1,2}', '{"SELECT 1","SELECT 2"}')}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 700 AND status = 'succeeded'}, '2'),
	'job 700 finished');
is(tt_sql($node, 'SELECT string_agg(task_id::text, \',\' ORDER BY task_id) FROM task_tracker.wait_for_tasks(700, 2000)'),
	'1,2', 'the superuser\'s session is told about both tasks');
is(tt_sql($node, 'SELECT string_agg(task_id::text, \',\' ORDER BY task_id) FROM task_tracker.wait_for_tasks(700, 2000)', user => 'alice'),
	'1,2', 'alice\'s own session is still told about both tasks');
tt_sql($node, 'SELECT task_tracker.cleanup_job(700)', user => 'alice');

# wait_for_task_results hands out rows to every session that may read them,
# but drops a task only in the session that assigned it: the superuser's
# session and another session of alice's get the rows of job 701 and leave
# the tasks for alice's assigning session, which then drops them (and the
# job); bob gets nothing
my $alice = $node->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
$alice->query_safe(q{SELECT task_tracker.assign_tasks(701, '{1,2}', ARRAY['SELECT ''alice-701-1''', 'SELECT ''alice-701-2'''])});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 701 AND status = 'succeeded'}, '2'),
	'job 701 finished');
my $results701 = q{SELECT string_agg(format('%s:%s:%s', task_id, rtrim(result, E'\n'), dropped), ',' ORDER BY task_id)
	FROM task_tracker.wait_for_task_results(701, 2000)};
is(tt_sql($node, $results701), '1:alice-701-1:f,2:alice-701-2:f',
	'the superuser\'s session gets the rows of alice\'s tasks, and drops nothing');
is(tt_sql($node, $results701, user => 'alice'), '1:alice-701-1:f,2:alice-701-2:f',
	'another session of alice\'s gets the rows, and drops nothing');
tt_expect_error($node, 'SELECT * FROM task_tracker.wait_for_task_results(701, 0)', '42704',
	'job 701 not found', 'bob: wait_for_task_results on alice\'s job 701', user => 'bob');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 701}), '2',
	'alice\'s tasks are still there for her assigning session');
is($alice->query_safe($results701), '1:alice-701-1:t,2:alice-701-2:t',
	'alice\'s assigning session gets the rows and drops the tasks');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 701}), '0',
	'job 701 has no task left');
tt_expect_error($node, 'SELECT * FROM task_tracker.wait_for_tasks(701, 0)', '42704',
	'job 701 not found', 'job 701 is gone with its last task', user => 'alice');
$alice->quit;

# ---------------------------------------------------------------- task privileges
# bob's task that alice's tasks will try to disturb: it waits on a lock
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4100)');
tt_sql($node, q{SELECT task_tracker.assign_task(410, 0,
	'SELECT ''bob-alive''::text FROM (SELECT pg_advisory_xact_lock_shared(4100)) l')}, user => 'bob');
ok( $node->poll_query_until('postgres',
		q{SELECT backend_pid IS NOT NULL FROM task_tracker.tasks WHERE job_id = 410 AND status = 'running'}),
	'bob\'s task is running');
my $bob_pid = tt_sql($node, 'SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 410');
my $bob_oid = tt_sql($node, q{SELECT oid FROM pg_roles WHERE rolname = 'bob'});
my $alice_oid = tt_sql($node, q{SELECT oid FROM pg_roles WHERE rolname = 'alice'});
is(tt_sql($node, "SELECT usename FROM pg_stat_activity WHERE pid = $bob_pid"), 'bob',
	'bob\'s task backend is logged in as bob');

my @attacks = (
	[ 'SELECT * FROM public.secret', '42501', 'permission denied for table secret' ],
	[ 'SET ROLE bob', '42501', 'permission denied to set role "bob"' ],
	[ 'SET SESSION AUTHORIZATION bob', '42501', 'permission denied to set session authorization' ],
	[ q{SELECT set_config('role', 'bob', false)}, '42501', 'permission denied to set role "bob"' ],
	[ 'ALTER ROLE alice SUPERUSER', '42501', 'permission denied|must be superuser' ],
	[ q{SELECT pg_read_file('postgresql.conf')}, '42501', 'permission denied for function pg_read_file' ],
	[ "SELECT pg_read_binary_file('pg_task_tracker/job_400/task_0.$bob_oid')", '42501', 'permission denied for function pg_read_binary_file' ],
	[ q{COPY (SELECT 1) TO '/tmp/tt_hostile_copy'}, '42501', 'permission denied to COPY to a file|must be superuser or have privileges of the pg_write_server_files role' ],
	[ "SELECT pg_terminate_backend($bob_pid)", '42501', 'permission denied to terminate process|must be a member of the role whose process is being terminated' ],
	[ "SELECT pg_cancel_backend($bob_pid)", '42501', 'permission denied to cancel query|must be a member of the role whose query is being canceled' ],
	[ 'SELECT task_tracker.cleanup_job(410)', '42501', 'job 410 belongs to another user' ],
	[ 'SELECT * FROM task_tracker.task_result(400, 0) AS t(x text)', '42704', 'task \(job 400, task 0\) not found' ],
	[ q{SELECT task_tracker.assign_task(400, 9, 'SELECT 1')}, '42501', 'job 400 belongs to another user' ],
);
my $t = 0;
for my $a (@attacks)
{
	tt_sql($node, "SELECT task_tracker.assign_task(420, $t, " . tt_quote_literal($a->[0]) . ')', user => 'alice');
	$t++;
}
tt_wait_job($node, 420, user => 'alice', tasks => scalar(@attacks));
$t = 0;
for my $a (@attacks)
{
	my ($q, $code, $msg) = @$a;
	my ($status, $state, $error) = split /\|/, tt_sql($node,
		"SELECT status, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = 420 AND task_id = $t",
		user => 'alice');
	is($status, 'permanently_failed', "alice's task '$q' fails");
	is($state, $code, "alice's task '$q': $code");
	like($error // '', qr/$msg/, "alice's task '$q': $msg");
	$t++;
}
tt_expect_error($node, "SELECT pg_cancel_backend($bob_pid)", '42501', '.*', 'alice cannot cancel bob\'s task backend directly', user => 'alice');
is(tt_sql($node, 'SELECT status, backend_pid FROM task_tracker.tasks WHERE job_id = 410'),
	"running|$bob_pid", 'bob\'s task survived all that');
ok(!-e '/tmp/tt_hostile_copy', 'no file was written by COPY');
# a task runs as its owner, not as the superuser whose tracker runs it
tt_sql($node, q{SELECT task_tracker.assign_task(421, 0, 'SELECT current_user, session_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)')}, user => 'alice');
tt_wait_job($node, 421, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(421, 0) AS t(c name, s name, su bool)', user => 'alice'),
	'alice|alice|f', 'alice\'s task runs as alice, not superuser');

$gate->query_safe('SELECT pg_advisory_unlock(4100)');
$gate->quit;
tt_wait_job($node, 410, user => 'bob', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(410, 0) AS t(x text)', user => 'bob'),
	'bob-alive', 'bob\'s task finished with its row');

# ---------------------------------------------------------------- odd names
my $obrien = q{o'brien "x" = \ ü};
my $inject = 'alice password=x host=evil';
my $db_obrien = q{db o'brien "x" = \ ü};
my $db_conninfo = "dbname=postgres user=$su host=evil";
my $db_uri = "postgresql:///postgres?user=$su&host=evil";
tt_create_role($node, $obrien);
tt_create_role($node, $inject);
for my $db ($db_obrien, $db_conninfo, $db_uri)
{
	tt_sql($node, 'CREATE DATABASE ' . tt_quote_ident($db));
	$node->safe_psql($db, 'CREATE EXTENSION task_tracker');
}
my $probe = q{SELECT current_user::text, session_user::text, current_database()::text,
	inet_server_addr() IS NULL, current_setting('port')};
my $job = 500;
my $logpos = tt_log_position($node);
for my $pair ([ $obrien, $db_obrien ], [ $inject, 'postgres' ], [ $inject, $db_conninfo ],
	[ 'alice', $db_uri ], [ $obrien, $db_conninfo ])
{
	my ($user, $db) = @$pair;
	tt_sql($node, "SELECT task_tracker.assign_task($job, 0, " . tt_quote_literal($probe) . ')',
		user => $user, dbname => $db);
	tt_wait_job($node, $job, user => $user, dbname => $db, tasks => 1);
	is( tt_sql($node, "SELECT user_name, database_name FROM task_tracker.tasks WHERE job_id = $job",
			dbname => $db),
		"$user|$db", "[$user] in [$db]: the tasks view shows the names");
	is( tt_sql($node, "SELECT * FROM task_tracker.task_result($job, 0) AS t(u text, s text, d text, local bool, port text)",
			user => $user, dbname => $db),
		"$user|$user|$db|t|$port",
		"[$user] in [$db]: the task ran as that role, in that database, on this server");
	tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => $user, dbname => $db);
	$job++;
}
ok(!$node->log_contains(qr/could not translate host name|password authentication failed|no password supplied/, $logpos),
	'no connection attempt to another host or with a password from a name');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');

# ---------------------------------------------------------------- files
# results over 64 kB go to files (smaller ones stay in shared memory)
tt_sql($node, q{SELECT task_tracker.assign_tasks(600, '{0,1}', ARRAY[
	'SELECT ''../../etc/passwd''::text AS "../../etc", ''/tmp/x'' AS "job_1/../../x", repeat(''x'', 70000) AS "/etc/passwd"',
	'SELECT ''../../etc''::text, repeat(''y'', 70000) FROM generate_series(1, 3)'])}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(601, 0, 'SELECT repeat(''z'', 70000)')}, user => 'bob');
tt_wait_job($node, 600, user => 'alice', tasks => 2);
tt_wait_job($node, 601, user => 'bob', tasks => 1);
is( tt_sql($node, 'SELECT a, b, length(c) FROM task_tracker.task_result(600, 0) AS t(a text, b text, c text)', user => 'alice'),
	'../../etc/passwd|/tmp/x|70000', 'a task whose text names paths returns its row');
my $area = $node->data_dir . '/pg_task_tracker';
my (@bad, $nfiles);
find(
	sub {
		my $rel = $File::Find::name;
		$rel =~ s{^\Q$area\E/?}{};
		return if $rel eq '' || $rel eq 'tasks.state';
		my $mode = (lstat $_)[2];
		if (-d _)
		{
			push @bad, "dir $rel" unless $rel =~ /^job_\d+$/;
			push @bad, sprintf('dir %s mode %04o', $rel, $mode & 07777) if $mode & 0077;
		}
		else
		{
			$nfiles++;
			push @bad, "file $rel" unless $rel =~ m{^job_\d+/task_\d+\.\d+$};
			push @bad, sprintf('file %s mode %04o', $rel, $mode & 07777) unless ($mode & 07777) == 0600;
			push @bad, "not a plain file: $rel" unless -f _;
		}
	},
	$area);
ok(($nfiles // 0) >= 3, 'result files exist (' . ($nfiles // 0) . ')');
is(scalar(@bad), 0, 'result files are 0600 and named job_<n>/task_<n>.<oid> only')
  or diag(join("\n", @bad));
ok(-f "$area/job_600/task_0.$alice_oid" && -f "$area/job_601/task_0.$bob_oid",
	'the file is addressed by job, task and the owner\'s oid');
ok(!-e "$area/../etc" && !-e $node->data_dir . '/../etc' && !-e "$area/job_1",
	'no path named in a task text exists');

# ---------------------------------------------------------------- superuser may clean up anyone's job
tt_sql($node, 'SELECT task_tracker.cleanup_job(301)');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 301'), '0',
	'the superuser may clean up alice\'s job');

tt_sql($node, q{SELECT task_tracker.cleanup_job(job_id) FROM (SELECT DISTINCT job_id FROM task_tracker.tasks) j});
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged at the end');
tt_check_no_leftovers($node);
$node->stop;
done_testing();
