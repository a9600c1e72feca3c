
# Copyright: task_tracker authors.
#
# Issue 9, defect 1 at a start: the tracker restores its saved table before
# its main loop (and its recovery block) runs, and restoring a query text,
# an error text or an in-memory result may have to grow the shared area:
# dsm_create then raises an ERROR when pg_dynshmem (/dev/shm) is full,
# although the allocation asks not to fail.  Before the fix that ERROR
# ended the tracker in the middle of the restore (FATAL: no recovery block
# yet); the next tracker restored the same file again, found its first
# task "saved twice", called the file corrupt and lost the rest.
#
# The server runs with dynamic_shared_memory_type = mmap and pg_dynshmem on
# a tmpfs of 8 MB.  300 tasks with query texts of 10 kB (3 MB in all, more
# than the area's in-place part) wait in the queue when the server stops;
# before the start the tmpfs is filled but for what the server's own start
# took (measured) and 256 kB.  Now the tracker does not exit: it restores
# the tasks whose texts fit, says why the others are not restored (no shared
# memory left for the query of task ...), runs the restored ones, and keeps
# the rest of the file aside.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my ($helper, $no_helper) = tt_priv_helper();
tt_skip_test("mounting a small tmpfs needs root: $no_helper") unless $helper;

my @mounted;
my $node;

END
{
	local $?;
	if (@mounted)
	{
		eval { $node->stop('immediate') if $node && defined $node->{_pid}; };
		tt_priv('tmpfs-umount', $_) for reverse @mounted;
	}
}

# free bytes of the file system holding $dir
sub free_bytes
{
	my ($dir) = @_;
	my ($avail, $bsize) = split ' ', `stat -f -c '%a %S' '$dir'`;
	return $avail * $bsize;
}

$node = tt_node('restore_shm', no_start => 1, conf => q{
dynamic_shared_memory_type = mmap
max_parallel_workers_per_gather = 0
citus.max_running_tasks_per_node = 1
});
my $dynshmem = $node->data_dir . '/pg_dynshmem';
tt_priv('tmpfs-mount', 8, $dynshmem) or BAIL_OUT("could not mount a tmpfs on $dynshmem");
push @mounted, $dynshmem;
my $empty = free_bytes($dynshmem);
$node->start;
tt_sql($node, 'CREATE EXTENSION task_tracker');
tt_create_role($node, 'alice');
tt_sql($node, q{CREATE TABLE public.ran (task int PRIMARY KEY); GRANT INSERT ON public.ran TO alice});
# what the server's own start takes there (statistics, the DSM control)
my $start_takes = $empty - free_bytes($dynshmem);
note("the server's start takes $start_takes bytes of pg_dynshmem");

# the only running slot waits on a gate; 300 tasks with 10 kB texts queue
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(2020)');
tt_sql($node, q{SELECT task_tracker.assign_task(200, 0, 'SELECT pg_advisory_xact_lock_shared(2020)')},
	user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '1'),
	'the only running slot waits on the gate');
my $n = 300;
tt_sql($node, qq{SELECT task_tracker.assign_tasks(201, array_agg(g),
	array_agg(format('INSERT INTO public.ran SELECT %s WHERE length(%L) > 0', g, repeat('q', 10000))))
	FROM generate_series(1, $n) g}, user => 'alice');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 201 AND status = 'assigned'}),
	$n, "$n tasks with 10 kB query texts are queued");
cmp_ok($empty - free_bytes($dynshmem), '>', $start_takes + 2 * 1024 * 1024,
	'... their texts took more than 2 MB of new segments in pg_dynshmem');

$node->stop('fast');
$gate->quit;

# fill the tmpfs but for what the start takes and 256 kB
my $leave = $start_takes + 256 * 1024;
my $fill = free_bytes($dynshmem) - $leave;
{
	open(my $fh, '>', "$dynshmem/filler") or die "open: $!";
	my $chunk = "\0" x 65536;
	while ($fill > 0)
	{
		my $w = syswrite($fh, $chunk, $fill < 65536 ? $fill : 65536);
		die "write: $!" unless defined $w;
		$fill -= $w;
	}
	close($fh);
}
note('free in pg_dynshmem before the start: ' . free_bytes($dynshmem));

my $log = tt_log_position($node);
$node->start;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM task_tracker.tracker WHERE pid IS NOT NULL}),
	'the server started, with a tracker');
$node->wait_for_log(qr/task tracker started/, $log);
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
my $text = slurp_file($node->logfile, $log);
like($text, qr/could not resize shared memory segment|No space left on device/,
	'restoring the texts hit the full pg_dynshmem for real');
unlike($text, qr/background worker "task tracker" \(PID \d+\) exited/,
	'the tracker did not exit in the middle of its restore');
is(scalar(() = $text =~ /task tracker started/g), 1, 'the tracker started once');
like($text, qr/task tracker state file "pg_task_tracker\/tasks.state" is corrupt; restored (\d+) tasks before the damage/,
	'the tasks that could not be restored are reported');
like($text, qr/There is no shared memory left for the query of task \(job 201, task \d+\)/,
	'... saying why: no shared memory for their query text');
unlike($text, qr/saved twice/, '... not as tasks saved twice');
my ($restored) = $text =~ /restored (\d+) tasks before the damage/;
$restored //= -1;
ok($restored > 0 && $restored < $n + 1,
	"some tasks were restored ($restored)");

unlink("$dynshmem/filler");
# (before the fix the restore's catch let go of the table's lock only, and
# the area's lock stayed held: the view then waited for it forever)
my ($count, $timed_out) = ('', 0);
$node->psql('postgres', 'SELECT count(*) FROM task_tracker.tasks',
	stdout => \$count, timeout => 30, timed_out => \$timed_out);
ok(!$timed_out, 'the tasks view answers (the restore left no lock held)');
if ($timed_out)
{
	done_testing();
	exit;
}
is($count, $restored, 'the table holds the restored tasks');
my %kept = map { split /\|/ } split /\n/,
  tt_sql($node, 'SELECT job_id, count(*) FROM task_tracker.tasks GROUP BY job_id');
tt_wait_job($node, $_, user => 'alice') for sort keys %kept;
is( tt_sql($node, q{SELECT count(*) FILTER (WHERE status <> 'succeeded') FROM task_tracker.tasks}),
	'0', 'every restored task ran and succeeded');
is(tt_sql($node, 'SELECT count(*) FROM public.ran'), $kept{201} // 0, '... once each');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'the tracker kept its pid');

tt_sql($node, "SELECT task_tracker.cleanup_job($_)", user => 'alice') for sort keys %kept;
unlink($node->data_dir . '/pg_task_tracker/tasks.state.corrupt');
tt_check_no_leftovers($node);
$node->stop;
for my $dir (reverse @mounted)
{
	tt_priv('tmpfs-umount', $dir) or diag("could not unmount $dir");
}
@mounted = ();
done_testing();
