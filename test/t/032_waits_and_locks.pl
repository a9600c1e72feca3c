
# Copyright: task_tracker authors.
#
# Who is woken, who waits, what a session keeps (issue 9, defects 8, 9, 12):
#
#   a session waiting on job 1 while job 2's    -> it is not woken (its
#   40 tasks finish one by one                     voluntary context switches,
#                                                  /proc/<pid>/status, stay
#                                                  near zero: one global
#                                                  condition variable woke it
#                                                  for every completion); it
#                                                  is woken by its own job
#   a table of 200000 saved tasks restored at   -> the tracker view answers
#   a start                                        while the restore runs and
#                                                  sees it part done (the
#                                                  file is no longer read
#                                                  under the exclusive lock)
#   a pooled session that followed 2000 jobs    -> what it remembers of them
#   which expired, then 2000 more                  (a hash in its memory) does
#                                                  not grow: entries of jobs
#                                                  gone are pruned

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $ntasks = 200000;
my $node = tt_node('waits', quiet => 1, conf => "citus.max_tracked_tasks_per_node = $ntasks\n"
	  . "citus.max_running_tasks_per_node = 1\n");

sub ctxt_switches
{
	my ($pid) = @_;
	my $status = slurp_file("/proc/$pid/status");
	$status =~ /^voluntary_ctxt_switches:\s+(\d+)/m or die "no context switches for $pid";
	return $1;
}

# --- a waiter of another job is not woken ---------------------------------
tt_sql($node, q{SELECT task_tracker.assign_task(1, 0, 'SELECT 1')});
tt_wait_job($node, 1, tasks => 1);
my $w = tt_start_psql($node, [
	'SELECT count(*) FROM task_tracker.wait_for_tasks(1, 0)',
	'SELECT /* second wait */ task_id FROM task_tracker.wait_for_tasks(1, 120000)' ]);
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
	WHERE query LIKE '%/* second wait */%' AND wait_event_type = 'Extension'
	  AND pid <> pg_backend_pid()}),
	'the session waits on job 1');
my $pid = tt_sql($node, q{SELECT pid FROM pg_stat_activity
	WHERE query LIKE '%/* second wait */%' AND pid <> pg_backend_pid()});
my $before = ctxt_switches($pid);
tt_sql($node, q{SELECT task_tracker.assign_tasks(2, array_agg(g), array_agg('SELECT ' || g))
	FROM generate_series(0, 39) g});
tt_wait_job($node, 2, tasks => 40);
my $woken = ctxt_switches($pid) - $before;
cmp_ok($woken, '<', 10, "40 completions of job 2 did not wake the waiter of job 1 ($woken wake-ups)");
tt_sql($node, q{SELECT task_tracker.assign_task(1, 1, 'SELECT 1')});
my ($rc, $out, $err) = tt_finish_psql($w);
$out =~ s/\s+$//;
is($out, "1\n1", 'its own job woke it, with the new task') or diag($err);
tt_sql($node, 'SELECT task_tracker.cleanup_job(1); SELECT task_tracker.cleanup_job(2)');

# --- what a pooled session remembers of jobs that are gone ----------------
tt_sql($node, q{ALTER SYSTEM SET citus.task_tracker_job_expiry = '1s'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT current_setting('citus.task_tracker_job_expiry') = '1s'}),
	'jobs expire after a second');
my $round = q{
	DO $$
	BEGIN
		FOR j IN %d..%d LOOP
			PERFORM task_tracker.assign_task(j, 0, 'SELECT 1');
			PERFORM count(*) FROM task_tracker.wait_for_tasks(j, 0);
		END LOOP;
		-- the tracker expires them all (a poll, bounded by the test's timeout)
		WHILE EXISTS (SELECT FROM task_tracker.tasks WHERE job_id BETWEEN %d AND %d) LOOP
			PERFORM pg_sleep(0.05);
		END LOOP;
	END $$;
	SELECT total_bytes FROM pg_backend_memory_contexts WHERE name = 'task_tracker reported jobs';
};
my $mem = tt_sql($node, sprintf($round, 1001, 3000, 1001, 3000) . sprintf($round, 3001, 5000, 3001, 5000));
my ($after1, $after2) = split /\n/, $mem;
cmp_ok($after2, '<', $after1 * 1.25,
	"2000 more jobs, the first 2000 gone: the session's memory of them does not grow ($after1 -> $after2 bytes)");
tt_sql($node, q{ALTER SYSTEM RESET citus.task_tracker_job_expiry; SELECT pg_reload_conf()});

# --- the restore of a large saved table does not hold the lock ------------
tt_sql($node, q{SELECT task_tracker.assign_task(1, 0, 'SELECT 1')});
tt_wait_job($node, 1, tasks => 1);
$node->stop('fast');
my $state = $node->data_dir . '/pg_task_tracker/tasks.state';
my $saved = slurp_file($state);
# "TTS4", 1, the 224-byte record, its query, its result, 0 (persist.c)
my $reclen = 224;
my ($qlen, $elen, $rlen) = unpack('l l l', substr($saved, 5 + 208, 12));
is(join(',', substr($saved, 0, 4), $qlen, $elen, length($saved)),
	join(',', 'TTS4', 8, -1, 4 + 1 + $reclen + 8 + $rlen + 1), 'the saved file has the expected layout');
my $rec = substr($saved, 5, $reclen + 8 + $rlen);
open(my $fh, '>', $state) or die "open $state: $!";
binmode $fh;
print $fh 'TTS4';
for my $i (0 .. $ntasks - 1)
{
	# job_id (int64) at 0, task_id (int32) at 8, seq (uint64) at 32
	my $r = $rec;
	substr($r, 0, 8) = pack('q', 1 + int($i / 100));
	substr($r, 8, 4) = pack('l', $i % 100);
	substr($r, 32, 8) = pack('Q', $i + 1);
	print $fh "\x01", $r;
}
print $fh "\x00";
close($fh) or die "close $state: $!";
$node->start;
# As soon as it accepts connections: the table as the tracker view shows it,
# until the restore is done.  Under an exclusive lock held for the whole
# file the view could only see 0 tasks (before) or all (after).
my $seen = tt_sql($node, qq{
	SET statement_timeout = '60s';
	DO \$\$
	DECLARE
		n int;
		partial int := 0;
	BEGIN
		LOOP
			SELECT tasks_tracked INTO n FROM task_tracker.tracker;
			IF n > 0 AND n < $ntasks THEN
				partial := partial + 1;
			END IF;
			EXIT WHEN n = $ntasks;
		END LOOP;
		PERFORM set_config('tt.partial', partial::text, false);
	END \$\$;
	SELECT current_setting('tt.partial')});
cmp_ok($seen, '>', 0, "the tracker view answered $seen times while the restore ran");
is(tt_sql($node, 'SELECT task_tracker.task_status(2000, 99)'), 'succeeded', 'the last task is restored');
tt_sql($node, 'SELECT task_tracker.cleanup_job(j) FROM generate_series(1, 2000) j');

tt_check_no_leftovers($node);
$node->stop;
done_testing();
