
# Fuzzing the worker SQL API: a fixed number of random calls (bounded to
# about 20 seconds) of assign_task, assign_tasks, task_status,
# wait_for_tasks, task_result and cleanup_job, from two ordinary users and a
# superuser sharing a small id space, with edge ids, random NULLs, random
# short query texts from a grammar of valid and invalid SQL fragments,
# random array shapes and random wait timeouts of 0..50 ms.
#
# Reproduce a run with the seed it prints:
#   TT_FUZZ_SEED=1234 TT_TESTS=tap TT_TAP='test/t/202_fuzz.pl' bash scripts/test.sh
# TT_FUZZ_CALLS (default 8000) and TT_FUZZ_SECONDS (default 20) bound it.
#
# Asserts: the server never crashes (postmaster and tracker pids unchanged,
# no crash in the log), every error carries a SQLSTATE from the documented
# set, every task reaches a final state and failed tasks keep a SQLSTATE,
# and cleaning up every job leaves nothing behind.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $seed = ($ENV{TT_FUZZ_SEED} || undef) // (int(time() * 1000) ^ $$) % 1000000007;
my $calls = ($ENV{TT_FUZZ_CALLS} || undef) // 8000;
my $seconds = ($ENV{TT_FUZZ_SECONDS} || undef) // 20;
diag("fuzz seed $seed (rerun with TT_FUZZ_SEED=$seed)");
srand($seed);

my $node = tt_node('fuzz', quiet => 1, conf => qq{
citus.max_tracked_tasks_per_node = 256
citus.task_max_attempts = 2
});
tt_create_role($node, 'alice');
tt_create_role($node, 'bob');
tt_sql($node, q{
CREATE TABLE public.fuzz_log (v int);
GRANT SELECT, INSERT ON public.fuzz_log TO alice, bob;
});
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $postmaster = tt_postmaster_pid($node);

# SQLSTATEs the API documents (README "Errors you can get"), plus what
# PostgreSQL itself raises for the arguments we build: 22P02 when a result
# value does not fit the caller's column type.
my %expected = map { $_ => 1 } qw(
  22004 22003 42601 0A000 54000 2202E 42710 42501 55006 53400 42704 55000
  42804 22023 22P02);

# ---------------------------------------------------------------- grammar
sub pick { return $_[ int(rand(scalar @_)) ]; }

sub rnd_job
{
	my $r = rand();
	return 'NULL' if $r < 0.03;
	return pick('0', '-1', '9223372036854775807', '-9223372036854775808') if $r < 0.07;
	return 1 + int(rand(6));
}

sub rnd_task
{
	my $r = rand();
	return 'NULL' if $r < 0.03;
	return pick('-1', '2147483647', '-2147483648') if $r < 0.06;
	return int(rand(5));
}

my @valid = (
	'SELECT 1', 'SELECT g, g::text FROM generate_series(1, 3) g', q{SELECT 'ü', 2},
	'VALUES (1), (2)', 'INSERT INTO public.fuzz_log VALUES (1)', 'SELECT pg_sleep(0.01)',
	'SELECT 1/0', 'SELECT * FROM nosuch', 'SHOW work_mem', 'CREATE TEMP TABLE t(x int)',
	'SELECT current_user', 'COPY (SELECT 1) TO STDOUT', q{SELECT repeat('x', 10000)},
	'SELECT NULL::int', 'TABLE public.fuzz_log LIMIT 1', 'SELECT 1 WHERE false',
	q{SELECT E'tab\there', 'back\\\\slash'}, 'SET ROLE bob', 'SELECT pg_sleep(0.2)');
my @invalid = ('', ' ', ';', 'SELEC 1', 'SELECT (', 'BEGIN', 'COMMIT', 'SAVEPOINT a',
	'SELECT 1; SELECT 2', q{SELECT 'x}, '-- c', 'ROLLBACK', 'END', '/* */');
my @tokens = ('SELECT', 'FROM', 'WHERE', '1', '(', ')', ',', 'generate_series(1,2)', '*',
	q{'a'}, '::int', 'AND', 'NULL', ';', 'BEGIN', 'x', '/0', '+', 'ü', '$$', '"', 'COMMIT');

sub rnd_query
{
	my $r = rand();
	return 'NULL' if $r < 0.03;
	my $q;
	if ($r < 0.65) { $q = pick(@valid); }
	elsif ($r < 0.8) { $q = pick(@invalid); }
	else { $q = join(' ', map { pick(@tokens) } 1 .. (1 + int(rand(6)))); }
	return tt_quote_literal($q);
}

sub rnd_array
{
	my ($gen, $type, $n) = @_;
	return 'NULL' if rand() < 0.03;
	return "ARRAY[]::$type\[]" if $n == 0;
	return 'ARRAY[' . join(', ', map { $gen->() } 1 .. $n) . "]::$type\[]";
}

sub rnd_call
{
	my $r = rand();
	my $job = rnd_job();
	if ($r < 0.35)
	{
		return 'SELECT task_tracker.assign_task(' . join(', ', $job, rnd_task(), rnd_query()) . ')';
	}
	if ($r < 0.50)
	{
		my $n = int(rand(5));
		my $m = rand() < 0.2 ? int(rand(5)) : $n;
		return "SELECT task_tracker.assign_tasks($job, "
		  . rnd_array(\&rnd_task, 'int', $n) . ', '
		  . rnd_array(\&rnd_query, 'text', $m) . ')';
	}
	if ($r < 0.62)
	{
		return 'SELECT task_tracker.task_status(' . join(', ', $job, rnd_task()) . ')';
	}
	if ($r < 0.77)
	{
		my $t = rand() < 0.05 ? pick('NULL', '-1') : int(rand(51));
		return "SELECT count(*) FROM task_tracker.wait_for_tasks($job, $t)";
	}
	if ($r < 0.92)
	{
		my $cols = pick('a int', 'a text', 'a int, b text', 'a text, b text', 'a int, b text, c int');
		return 'SELECT count(*) FROM task_tracker.task_result(' . join(', ', $job, rnd_task()) . ") AS t($cols)";
	}
	return "SELECT task_tracker.cleanup_job($job)";
}

# ---------------------------------------------------------------- the run
my %session;
for my $who ('alice', 'bob', 'superuser')
{
	my @u = $who eq 'superuser' ? () : ('-U', $who);
	$session{$who} = $node->background_psql('postgres', on_error_stop => 0,
		timeout => $PostgreSQL::Test::Utils::timeout_default, extra_params => \@u);
	$session{$who}->set_query_timer_restart();
	$session{$who}->query_safe('\set VERBOSITY verbose');
	# a call that hangs (cleanup_job waiting forever) shows up as 57014
	$session{$who}->query_safe("SET statement_timeout = '20s'");
}

my (%codes, @unexpected, $n, $errors);
my $start = time();
for ($n = 0; $n < $calls && time() - $start < $seconds; $n++)
{
	my $r = rand();
	my $who = $r < 0.45 ? 'alice' : $r < 0.9 ? 'bob' : 'superuser';
	my $sql = rnd_call();
	my $s = $session{$who};
	$s->{stderr} = '';
	my ($out, $failed) = $s->query($sql);
	next unless $failed;
	my $err = $s->{stderr};
	if ($err =~ /FATAL|PANIC|server closed the connection|connection to server was lost|no connection to the server/)
	{
		push @unexpected, "$who: $sql => $err";
		diag("lost the session of $who at call $n: $sql\n$err");
		last;
	}
	for my $line (split /\n/, $err)
	{
		next unless $line =~ /ERROR:  (\S+):/;
		$errors++;
		$codes{$1}++;
		push @unexpected, "$who: $sql => $line" unless $expected{$1};
	}
	if ($err =~ /ERROR/ && $err !~ /ERROR:  [0-9A-Z]{5}:/)
	{
		push @unexpected, "$who: $sql => error without SQLSTATE: $err";
	}
}
my $elapsed = time() - $start;
note(sprintf('%d calls in %.1f s, %d errors: %s', $n, $elapsed, $errors // 0,
	join(' ', map { "$_=$codes{$_}" } sort keys %codes)));
ok($n >= 200, "enough calls ran ($n)");
is(scalar(@unexpected), 0, 'every error has a documented SQLSTATE')
  or diag(join("\n", @unexpected[0 .. ($#unexpected < 19 ? $#unexpected : 19)]));
ok(($errors // 0) > 0 && scalar(keys %codes) >= 5, 'the fuzzer reached many error paths');

$_->quit for values %session;

is(tt_postmaster_pid($node), $postmaster, 'postmaster pid unchanged');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');

# race phase: jobs cleaned up at random moments after their assignment
# (queued, starting, running, finishing, failing), for up to 10 s; every
# cleanup_job must return and leave nothing of its job
my ($rc, $out, $err) = tt_psql($node, q{
SET statement_timeout = '30s';
DO $$
DECLARE
	stop_at timestamptz := clock_timestamp() + interval '10 s';
BEGIN
	FOR i IN 1..1500 LOOP
		EXIT WHEN clock_timestamp() > stop_at;
		PERFORM task_tracker.assign_tasks(100000 + i, '{0,1,2}',
			'{"SELECT 1","SELECT 1/0","INSERT INTO public.fuzz_log VALUES (2)"}');
		-- a random amount of work (no sleep) before giving the job up
		PERFORM count(*) FROM generate_series(1, (random() * 30000)::int);
		PERFORM task_tracker.cleanup_job(100000 + i);
	END LOOP;
END $$;
SELECT count(*) FROM task_tracker.tasks WHERE job_id BETWEEN 100001 AND 101500;
}, user => 'alice', verbose => 1);
is($rc, 0, 'race phase: every cleanup_job returned') or diag($err);
is($out, '0', 'race phase: nothing of the given-up jobs is left');

# every task reaches a final state; failed ones keep a SQLSTATE
my @jobs = split /\n/, tt_sql($node, 'SELECT DISTINCT job_id FROM task_tracker.tasks ORDER BY 1');
for my $job (@jobs)
{
	tt_wait_job($node, $job, timeout => 30);
}
is( tt_sql($node,
		q{SELECT count(*) FROM task_tracker.tasks
		  WHERE status = 'permanently_failed' AND coalesce(error_sqlstate, '') !~ '^[0-9A-Z]{5}$'}),
	'0', 'every failed task kept a SQLSTATE');
note(tt_sql($node, q{SELECT status, coalesce(error_sqlstate, '-'), count(*) FROM task_tracker.tasks GROUP BY 1, 2 ORDER BY 1, 2}));

# the tracker still works, then everything is cleaned up
tt_sql($node, q{SELECT task_tracker.assign_task(9999, 0, 'SELECT 42')}, user => 'alice');
tt_wait_job($node, 9999, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(9999, 0) AS t(x int)', user => 'alice'),
	'42', 'the tracker still runs tasks');
tt_sql($node, q{SELECT task_tracker.cleanup_job(job_id) FROM (SELECT DISTINCT job_id FROM task_tracker.tasks) j});
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged at the end');
tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
