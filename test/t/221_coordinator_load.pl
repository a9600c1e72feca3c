
# Coordinator load: 50 concurrent client sessions on the coordinator run
# jobs over two workers for a bounded time (TT_SOAK_SECONDS, 12 s in CI),
# odd sessions with the real-time executor, even ones with task-tracker.
# Each job has 4-16 tasks: `SELECT <n>` tasks, INSERT tasks into a table
# with a UNIQUE key per (job, task) on the workers, and in every fifth job
# one failing task (1/0) that must fail the whole job with 22012.
#
# Asserts: every successful job returned exactly its expected rows (the
# sorted array of values); every INSERT of a successful job landed exactly
# once over both workers; no INSERT landed on both workers; the only
# failures are the expected 22012 ones; no job expected to fail succeeded;
# nothing deadlocks (bounded time, every client finishes); afterwards the
# coordinator's jobs view is empty, the workers' tasks views are empty, no
# coordinator connection or task session stays on the workers after their
# idle timeout, no job directories, no crash.
#
# Soak it for longer with, e.g.
#   TT_SOAK_SECONDS=300 TT_SUITE_TIMEOUT=600 TT_BUDGET=900 \
#     TT_TESTS=tap TT_TAP='test/t/221_coordinator_load.pl' bash scripts/test.sh

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $seconds = ($ENV{TT_SOAK_SECONDS} || undef) // 12;
my $clients = 50;

my $conf = "max_connections = 200\n";
my $coord = tt_node('coordinator', quiet => 1, conf => $conf);
my @workers = map { tt_node("worker$_", quiet => 1, conf => $conf) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
for my $w (@workers)
{
	tt_add_node($coord, $w);
	tt_sql($w, q{CREATE TABLE public.load_ins (job bigint, task int, UNIQUE (job, task))});
}
my @coord_pm = (tt_postmaster_pid($coord), map { tt_postmaster_pid($_) } @workers);

tt_sql($coord, q{
CREATE TABLE public.load_log (sess int, job bigint, executor text, outcome text, sqlstate text,
                              fail_at int, inserts int[], ok boolean, note text,
                              started timestamptz, ended timestamptz DEFAULT clock_timestamp());
});

# One client: jobs until the time is up; every job is one row in load_log
# with ok = whether its outcome was the expected one.
tt_sql($coord, q{
CREATE PROCEDURE public.load_client(sess int, seconds float8, w1 text, w2 text)
LANGUAGE plpgsql AS $proc$
DECLARE
	stop_at timestamptz := clock_timestamp() + make_interval(secs => seconds);
	iter int := 0;
	key bigint;
	n int;
	fail_at int;
	queries text[];
	expected bigint[];
	ins int[];
	got bigint[];
	tasklist text;
	ex text := current_setting('citus.task_executor');
	t0 timestamptz;
BEGIN
	WHILE clock_timestamp() < stop_at LOOP
		iter := iter + 1;
		key := sess::bigint * 1000000 + iter;
		n := 4 + (iter * 7 + sess) % 13;
		fail_at := CASE WHEN iter % 5 = 0 THEN 1 + (iter + sess) % n ELSE 0 END;
		queries := '{}';
		expected := '{}';
		ins := '{}';
		FOR i IN 1..n LOOP
			IF i = fail_at THEN
				queries := queries || 'SELECT 1/0'::text;
			ELSIF i % 3 = 0 THEN
				queries := queries || format('INSERT INTO public.load_ins VALUES (%s, %s)', key, i);
				ins := ins || i;
			ELSE
				queries := queries || format('SELECT %s::bigint', key * 100 + i);
				expected := expected || (key * 100 + i);
			END IF;
		END LOOP;
		tasklist := format($t$SELECT q AS query,
			CASE WHEN o %% 2 = 1 THEN ARRAY[%L, %L] ELSE ARRAY[%L, %L] END AS placements
			FROM unnest(%L::text[]) WITH ORDINALITY AS u(q, o)$t$, w1, w2, w2, w1, queries);
		t0 := clock_timestamp();
		BEGIN
			SELECT coalesce(array_agg(v ORDER BY v), '{}') INTO got
			  FROM task_tracker.run_job(tasklist) AS t(v bigint);
			INSERT INTO public.load_log VALUES (sess, key, ex, 'succeeded', NULL, fail_at, ins,
				fail_at = 0 AND got = expected,
				CASE WHEN got = expected THEN NULL ELSE format('got %s, expected %s', got, expected) END, t0);
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.load_log VALUES (sess, key, ex, 'failed', SQLSTATE, fail_at, ins,
				fail_at > 0 AND SQLSTATE = '22012', SQLERRM, t0);
		END;
		COMMIT;
	END LOOP;
END
$proc$;
});

# ---------------------------------------------------------------- the load
# A start barrier: every client first waits for a shared advisory lock that
# a holder session keeps until all of them are connected and waiting, so
# that the 50 sessions really run at the same time.
my $holder = $coord->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(221)');
my @p;
for my $i (1 .. $clients)
{
	my $executor = $i % 2 ? 'real-time' : 'task-tracker';
	push @p, [ $i, tt_start_psql($coord, [
		"SELECT pg_advisory_lock_shared(221)",
		"SELECT pg_advisory_unlock_shared(221)",
		"SET citus.task_executor = '$executor'",
		"SET citus.max_connections_per_node = 2",
		"SET citus.node_connection_timeout = '5s'",
		"SET statement_timeout = '30s'",
		sprintf("CALL public.load_client(%d, %s, %s, %s)", $i, $seconds,
			tt_quote_literal($place[0]), tt_quote_literal($place[1])) ],
		timeout => $seconds + 60) ];
}
ok( $coord->poll_query_until('postgres',
		"SELECT count(*) = $clients FROM pg_locks WHERE locktype = 'advisory' AND objid = 221 AND NOT granted"),
	"all $clients clients connected and waiting at the start barrier");
my $t0 = time();
$holder->query_safe('SELECT pg_advisory_unlock(221)');
$holder->quit;
my @bad;
for my $c (@p)
{
	my ($i, $p) = @$c;
	my ($rc, $out, $err) = tt_finish_psql($p);
	push @bad, "client $i: " . (defined $rc ? "exit $rc" : 'timed out') . " $err"
	  if !defined $rc || $rc != 0 || $err =~ /ERROR|FATAL/;
}
my $took = time() - $t0;
my @warned = map { "client $_->[0]: " . ${ $_->[1]{err} } } grep { ${ $_->[1]{err} } =~ /WARNING/ } @p;
is(scalar(@warned), 0, 'no client got a WARNING (e.g. a job that could not be cleaned up on a live node)')
  or diag(join("\n", map { substr($_, 0, 400) } @warned[0 .. ($#warned < 4 ? $#warned : 4)]));
is(scalar(@bad), 0, "all $clients clients finished without an error")
  or diag(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]));
cmp_ok($took, '<', $seconds + 25,
	sprintf('no deadlock: the load ended in %.1f s (%d s of work)', $took, $seconds));

# ---------------------------------------------------------------- accounting
for my $executor ('real-time', 'task-tracker')
{
	my ($ok, $failed, $sessions, $p50, $p99, $max, $last) = split /\|/, tt_sql($coord, qq{
		SELECT count(*) FILTER (WHERE outcome = 'succeeded'), count(*) FILTER (WHERE outcome = 'failed'),
		       count(DISTINCT sess),
		       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended - started))::numeric * 1000, 1),
		       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM ended - started))::numeric * 1000, 1),
		       round(max(extract(epoch FROM ended - started))::numeric * 1000, 1),
		       round(extract(epoch FROM max(ended) - min(started))::numeric, 1)
		  FROM public.load_log WHERE executor = '$executor'});
	note("$executor: $ok jobs succeeded and $failed failed, in $sessions sessions; "
		  . "job time p50 $p50 ms, p99 $p99 ms, max $max ms; first start to last end $last s");
	cmp_ok($ok, '>=', $clients / 2, "$executor: jobs succeeded ($ok)");
	cmp_ok($failed, '>', 0, "$executor: jobs with a 1/0 task ran ($failed)");
	is($sessions, $clients / 2, "$executor: every client of the executor ran jobs");
}
is( tt_sql($coord, q{SELECT count(*) FROM public.load_log WHERE outcome = 'succeeded' AND NOT ok}),
	'0', 'every successful job was expected to succeed and returned exactly its expected rows')
  or diag(tt_sql($coord,
	q{SELECT sess, job, executor, fail_at, note FROM public.load_log WHERE outcome = 'succeeded' AND NOT ok ORDER BY job LIMIT 10}));
is( tt_sql($coord, q{SELECT count(*) FROM public.load_log WHERE outcome = 'failed' AND NOT ok}),
	'0', 'the only failures are the expected 22012 ones')
  or diag(tt_sql($coord,
	q{SELECT sess, job, executor, fail_at, sqlstate, note FROM public.load_log WHERE outcome = 'failed' AND NOT ok ORDER BY job LIMIT 10}));
is( tt_sql($coord, q{SELECT count(*) FROM public.load_log WHERE (fail_at > 0) <> (outcome = 'failed')}),
	'0', 'every job with a failing task failed, no other job did');

# INSERTs: what landed on the workers against what each job inserted
my %landed;    # "job task" => number of rows over both workers
for my $w (@workers)
{
	for my $line (split /\n/, tt_sql($w, 'SELECT job, task FROM public.load_ins'))
	{
		my ($j, $t) = split /\|/, $line;
		$landed{"$j $t"}++;
	}
}
my ($expected_ins, $missing, $twice) = (0, 0, 0);
my @examples;
for my $line (split /\n/, tt_sql($coord,
		q{SELECT job, array_to_string(inserts, ',') FROM public.load_log WHERE outcome = 'succeeded'}))
{
	my ($j, $list) = split /\|/, $line, 2;
	for my $t (grep { length } split /,/, $list // '')
	{
		$expected_ins++;
		my $c = $landed{"$j $t"} // 0;
		if ($c != 1)
		{
			$c == 0 ? $missing++ : $twice++;
			push @examples, "job $j task $t: $c rows" if @examples < 10;
		}
	}
}
cmp_ok($expected_ins, '>', 0, "successful jobs had INSERT tasks ($expected_ins)");
is("$missing|$twice", '0|0', 'every INSERT of a successful job landed exactly once')
  or diag(join("\n", @examples));
is(scalar(grep { $_ > 1 } values %landed), 0, 'no INSERT landed on both workers (any job)');

# ---------------------------------------------------------------- afterwards
is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'the coordinator has no jobs left');
for my $i (0, 1)
{
	my $w = $workers[$i];
	# (bounded to 20 s so that the file stays under a minute when it fails)
	ok(tt_poll_until($w, 'SELECT count(*) = 0 FROM task_tracker.tasks', 20),
		'the tasks view is empty on worker ' . ($i + 1))
	  or diag(tt_sql($w, 'SELECT job_id, status, count(*) FROM task_tracker.tasks GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 20'));
	ok( $w->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'task_tracker%'}),
		'no coordinator connection or task session left on worker ' . ($i + 1));
}
is_deeply([ tt_postmaster_pid($coord), map { tt_postmaster_pid($_) } @workers ], \@coord_pm,
	'no server restarted');
tt_no_crash_in_log($_) for ($coord, @workers);
for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], 'worker ' . ($i + 1));
}
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, @workers);
done_testing();
