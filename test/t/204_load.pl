
# Load: 50 concurrent client sessions (five users, ten sessions each) assign
# jobs directly to one tracker for a bounded time.  Every session runs its
# own jobs, each a mix of row-returning, failing, INSERT and trivial tasks,
# waits for them with wait_for_tasks, checks every outcome and result, and
# cleans its job up.
#
# Asserts: every task is accounted for exactly once (reported once, each
# succeeded INSERT task inserted exactly one row: load_ins is a log without
# any key, so a task that ran twice leaves two rows, counted per task; the
# INSERT tasks of given-up jobs left at most one row each),
# task_result returns the right rows, no call fails except with the
# documented task errors, nothing deadlocks (bounded time), the tracker's
# session count stays within two per running slot, and afterwards the tasks
# view is empty, no job directory is left, the task backends go away after
# the idle timeout and the tracker kept its pid.
#
# CI runs it for 15 s.  Soak it for longer with, e.g.
#   TT_SOAK_SECONDS=600 TT_SUITE_TIMEOUT=900 TT_BUDGET=1200 \
#     TT_TESTS=tap TT_TAP='test/t/204_load.pl' bash scripts/test.sh

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $seconds = ($ENV{TT_SOAK_SECONDS} || undef) // 15;
my $clients = 50;
my $users = 5;
my $limit = 8;

my $node = tt_node('load', quiet => 1, conf => qq{
max_connections = 150
citus.max_running_tasks_per_node = $limit
citus.task_max_attempts = 2
});
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $postmaster = tt_postmaster_pid($node);

tt_sql($node, q{
-- no key on purpose: a second run of an INSERT task must leave a second
-- row (a UNIQUE key would make it fail instead, and "at most once" could
-- not be seen to break)
CREATE TABLE public.load_ins (job bigint, task int);
CREATE TABLE public.load_log (sess int, job bigint, task int, what text, status text,
                              sqlstate text, ok boolean, note text);
CREATE TABLE public.load_sessions (sess int, job bigint, n int, aborted boolean);
GRANT SELECT, INSERT ON public.load_ins, public.load_log, public.load_sessions TO PUBLIC;
});
for my $u (1 .. $users)
{
	tt_create_role($node, "load$u");
}

# One client: jobs of 8 tasks until the time is up.  Every check it makes is
# a row in load_log with ok true or false.
tt_sql($node, q{
CREATE PROCEDURE public.load_client(sess int, seconds float8)
LANGUAGE plpgsql AS $proc$
DECLARE
	stop_at timestamptz := clock_timestamp() + make_interval(secs => seconds);
	iter int := 0;
	job bigint;
	n int;
	queries text[];
	r record;
	seen int;
	deadline timestamptz;
	st text[];
	codes text[];
	nrows bigint[];
	assigned boolean;
	c bigint;
	s numeric;
	good boolean;
	v bigint;
	jid bigint;
BEGIN
	WHILE clock_timestamp() < stop_at LOOP
		iter := iter + 1;
		job := sess::bigint * 1000000 + iter;
		jid := job;
		n := 10 + iter % 7;
		queries := ARRAY[
			format('SELECT g, md5(g::text) FROM generate_series(1, %s) g', n),
			'SELECT 1/0',
			format('INSERT INTO public.load_ins VALUES (%s, 2)', job),
			format('INSERT INTO public.load_ins VALUES (%s, 3)', job),
			'VALUES (1, ''a''), (2, ''b'')',
			'SELECT * FROM no_such_load_table',
			format('SELECT %s::bigint', job),
			'SELECT pg_sleep(0.001)'];
		BEGIN
			PERFORM task_tracker.assign_tasks(job, ARRAY[0,1,2,3,4,5,6,7], queries);
			assigned := true;
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.load_log VALUES (sess, job, NULL, 'assign', NULL, SQLSTATE, false, SQLERRM);
			assigned := false;
		END;
		IF NOT assigned THEN
			COMMIT;
			CONTINUE;
		END IF;

		-- every fourth job is given up as soon as its first task finished:
		-- cleanup_job while its other tasks are queued, running or just
		-- finishing; nothing of it may remain, and its INSERT tasks ran at
		-- most once.  The choice is offset by the session number, so a
		-- quarter of the sessions give up their very first job: a slow
		-- machine, where a session finishes only a few jobs in the time,
		-- still gives jobs up.
		IF (sess + iter) % 4 = 0 THEN
			BEGIN
				PERFORM * FROM task_tracker.wait_for_tasks(job, 1000);
				PERFORM task_tracker.cleanup_job(job);
				SELECT count(*) INTO c FROM task_tracker.tasks t WHERE t.job_id = jid;
				INSERT INTO public.load_log VALUES (sess, job, NULL, 'aborted', NULL, NULL, c = 0,
					format('%s tasks left', c));
			EXCEPTION WHEN OTHERS THEN
				INSERT INTO public.load_log VALUES (sess, job, NULL, 'abort', NULL, SQLSTATE, false, SQLERRM);
			END;
			INSERT INTO public.load_sessions
				SELECT sess, job, open_connections, true FROM task_tracker.tracker;
			COMMIT;
			CONTINUE;
		END IF;

		-- wait: each task must be reported exactly once
		st := array_fill(NULL::text, ARRAY[8], ARRAY[0]);
		codes := array_fill(NULL::text, ARRAY[8], ARRAY[0]);
		nrows := array_fill(NULL::bigint, ARRAY[8], ARRAY[0]);
		seen := 0;
		deadline := clock_timestamp() + interval '60 s';
		WHILE seen < 8 AND clock_timestamp() < deadline LOOP
			FOR r IN SELECT * FROM task_tracker.wait_for_tasks(job, 1000) LOOP
				IF st[r.task_id] IS NOT NULL THEN
					INSERT INTO public.load_log VALUES (sess, job, r.task_id, 'reported twice', r.status, r.sqlstate, false, NULL);
				END IF;
				st[r.task_id] := r.status;
				codes[r.task_id] := r.sqlstate;
				nrows[r.task_id] := r.result_rows;
				seen := seen + 1;
			END LOOP;
		END LOOP;
		IF seen < 8 THEN
			INSERT INTO public.load_log VALUES (sess, job, NULL, 'wait', NULL, NULL, false,
				format('%s of 8 tasks reported after 60 s', seen));
		END IF;

		-- outcomes
		FOR t IN 0..7 LOOP
			good := CASE
				WHEN t IN (1, 5) THEN st[t] = 'permanently_failed'
				ELSE st[t] = 'succeeded' END;
			good := good AND CASE t
				WHEN 1 THEN codes[t] = '22012'
				WHEN 5 THEN codes[t] = '42P01'
				WHEN 2 THEN nrows[t] = 1
				WHEN 3 THEN nrows[t] = 1
				ELSE true END;
			INSERT INTO public.load_log VALUES (sess, job, t, 'status', st[t], codes[t], coalesce(good, false),
				format('rows %s', nrows[t]));
		END LOOP;

		-- results
		BEGIN
			SELECT count(*), sum(g), bool_and(m = md5(g::text)) INTO c, s, good
			  FROM task_tracker.task_result(job, 0) AS t(g int, m text);
			INSERT INTO public.load_log VALUES (sess, job, 0, 'result', NULL, NULL,
				c = n AND s = n * (n + 1) / 2 AND good, format('%s rows, sum %s', c, s));
			SELECT count(*) INTO c FROM task_tracker.task_result(job, 4) AS t(i int, x text)
			 WHERE (i, x) IN ((1, 'a'), (2, 'b'));
			INSERT INTO public.load_log VALUES (sess, job, 4, 'result', NULL, NULL, c = 2, format('%s rows', c));
			SELECT x INTO v FROM task_tracker.task_result(job, 6) AS t(x bigint);
			INSERT INTO public.load_log VALUES (sess, job, 6, 'result', NULL, NULL, v = job, format('got %s', v));
			SELECT count(*) INTO c FROM public.load_ins i WHERE i.job = jid;
			INSERT INTO public.load_log VALUES (sess, job, 2, 'inserted', NULL, NULL, c = 2, format('%s rows', c));
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.load_log VALUES (sess, job, NULL, 'result', NULL, SQLSTATE, false, SQLERRM);
		END;

		BEGIN
			PERFORM task_tracker.cleanup_job(job);
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.load_log VALUES (sess, job, NULL, 'cleanup', NULL, SQLSTATE, false, SQLERRM);
		END;
		INSERT INTO public.load_sessions
			SELECT sess, job, open_connections, false FROM task_tracker.tracker;
		COMMIT;
	END LOOP;
END
$proc$;
});
my $succeeded_before = tt_sql($node, 'SELECT tasks_succeeded FROM task_tracker.tracker');

# ---------------------------------------------------------------- the load
my $psql = $node->installed_command('psql');
my @h;
my $t0 = time();
for my $i (1 .. $clients)
{
	my $user = 'load' . (1 + ($i - 1) % $users);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ $psql, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-U', $user,
		  '-c', "SET statement_timeout = '120s'", '-c', "CALL public.load_client($i, $seconds)" ],
		'<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($seconds + 180));
	push @h, [ $i, $h, \$out, \$err ];
}
my @bad;
for my $c (@h)
{
	my ($i, $h, $out, $err) = @$c;
	my $ok = eval { $h->finish; 1 };
	push @bad, "client $i: " . ($ok ? "exit " . $h->result(0) : "timed out: $@") . " $$err"
	  if !$ok || $h->result(0) != 0 || $$err =~ /ERROR|FATAL/;
}
my $took = time() - $t0;
is(scalar(@bad), 0, "all $clients clients finished without an error") or diag(join("\n", @bad));
cmp_ok($took, '<', $seconds + 90, sprintf('no deadlock: the load ended in %.1f s (%d s of work)', $took, $seconds));

# ---------------------------------------------------------------- accounting
my ($jobs, $aborted, $sessions_used) = split /\|/, tt_sql($node,
	'SELECT count(*) FILTER (WHERE NOT aborted), count(*) FILTER (WHERE aborted), count(DISTINCT sess) FROM public.load_sessions');
note("$jobs jobs of 8 tasks run to the end and $aborted given up, by $sessions_used sessions in $seconds s");
cmp_ok($jobs, '>=', $clients, "at least one job per client ($jobs jobs)");
cmp_ok($aborted, '>', 0, "jobs were given up while running ($aborted)");
is($sessions_used, $clients, 'every client completed jobs');
is( tt_sql($node, q{SELECT count(*) FROM public.load_log WHERE NOT ok}),
	'0', 'every check of every job passed')
  or diag(tt_sql($node,
	q{SELECT sess, job, task, what, status, sqlstate, note FROM public.load_log WHERE NOT ok ORDER BY job, task LIMIT 20}));
# (twice is a failed check 'reported twice' above; here: at least once)
is( tt_sql($node, q{SELECT count(*) FROM public.load_log WHERE what = 'status' AND status IS NOT NULL}),
	8 * $jobs, 'every task of every finished job was reported');
# exactly once, per task: every INSERT task of a finished job has one row
# in the key-less log, none has two
is( tt_sql($node, q{SELECT count(*) FROM (
	SELECT s.job, t.task, (SELECT count(*) FROM public.load_ins i WHERE i.job = s.job AND i.task = t.task) AS n
	  FROM public.load_sessions s CROSS JOIN (VALUES (2), (3)) t(task)
	 WHERE NOT s.aborted) x WHERE n <> 1}),
	'0', 'each INSERT task of a finished job inserted exactly one row')
  or diag(tt_sql($node, q{SELECT job, task, count(*) FROM public.load_ins GROUP BY 1, 2 HAVING count(*) <> 1 LIMIT 10}));
is( tt_sql($node, q{SELECT count(*) FROM public.load_ins i
	JOIN public.load_sessions s ON s.job = i.job AND NOT s.aborted}),
	2 * $jobs, '... and no other row of a finished job');
is( tt_sql($node, q{SELECT string_agg(format('%s/%s: %s rows', job, task, n), ', ') FROM (
	SELECT i.job, i.task, count(*) AS n FROM public.load_ins i
	  JOIN public.load_sessions s ON s.job = i.job AND s.aborted
	 GROUP BY i.job, i.task HAVING count(*) > 1) d}),
	'', 'INSERT tasks of given-up jobs ran at most once (no key hides a second row)');
my $succeeded = tt_sql($node, 'SELECT tasks_succeeded FROM task_tracker.tracker') - $succeeded_before;
ok($succeeded >= 6 * $jobs && $succeeded <= 6 * $jobs + 8 * $aborted,
	"the tracker's succeeded counter fits ($succeeded for $jobs finished and $aborted given-up jobs)");
my $peak = tt_sql($node, 'SELECT max(n) FROM public.load_sessions');
cmp_ok($peak, '<=', 2 * $limit, "task sessions stay within two per running slot (peak $peak)");

# ---------------------------------------------------------------- afterwards
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'), '0', 'the tasks view is empty');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');
is(tt_postmaster_pid($node), $postmaster, 'postmaster pid unchanged');
tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
