
# Issue 9, defect 1: a task whose statement committed never runs again
# because the tracker could not keep its result, and the tracker survives
# the ERROR that failure raises.
#
# The fault is real: the server runs with dynamic_shared_memory_type = mmap
# and $PGDATA/pg_dynshmem on a tmpfs of 8 MB (the privileged test helper of
# scripts/test.sh mounts it), filled up once the server runs, so once the
# tracker's fixed 1 MB area of in-memory results is full, growing it
# (dsm_create of a new segment) raises an ERROR, although the allocation
# asks not to fail.  Before the
# fix that ERROR killed the tracker after the task's INSERT had committed;
# the restarted tracker requeued the task, and it ran again.
#
# A. Results that fill the area: every task's INSERT ... RETURNING
#    (logging into a table with a PRIMARY KEY) runs exactly once (one
#    attempt each, every row there once, every task succeeded: the result
#    went to its file instead), and the tracker keeps its pid.
# B. Results that cannot be kept at all (in-memory results off, the result
#    files' directory on a full tmpfs): the statements still run exactly
#    once; each task ends permanently_failed with its row count and an
#    error saying why its result is missing, after one attempt.

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

sub mount_tmpfs
{
	my ($dir, $mb) = @_;
	tt_priv('tmpfs-mount', $mb, $dir) or BAIL_OUT("could not mount a tmpfs on $dir");
	push @mounted, $dir;
	return;
}

# fill($file): write $file until its file system is full
sub fill
{
	my ($file) = @_;
	my $chunk = "\0" x 4096;
	open(my $fh, '>', $file) or die "open $file: $!";
	for (;;)
	{
		my $n = syswrite($fh, $chunk);
		next if defined $n;
		last if $!{ENOSPC};
		die "write $file: $!";
	}
	close($fh);
	return;
}

END
{
	local $?;
	if (@mounted)
	{
		eval { $node->stop('immediate') if $node && defined $node->{_pid}; };
		tt_priv('tmpfs-umount', $_) for reverse @mounted;
	}
}

$node = tt_node('once', no_start => 1, conf => q{
dynamic_shared_memory_type = mmap
max_parallel_workers_per_gather = 0
citus.max_running_tasks_per_node = 4
citus.task_result_inline_size = '64kB'
citus.task_result_memory = '64MB'
citus.task_max_attempts = 3
});
my $dynshmem = $node->data_dir . '/pg_dynshmem';
mount_tmpfs($dynshmem, 8);
is(`stat -f -c %T '$dynshmem'`, "tmpfs\n", 'pg_dynshmem is a tmpfs');
$node->start;
tt_sql($node, 'CREATE EXTENSION task_tracker');
tt_create_role($node, 'alice');
tt_sql($node, q{
CREATE TABLE public.log (task int PRIMARY KEY, pad text);
GRANT INSERT, SELECT ON public.log TO alice;
});
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
fill("$dynshmem/filler");

# assign $n tasks of job $job, task i inserting key $base + i and returning
# about 60 kB
sub assign_logging
{
	my ($job, $base, $n) = @_;
	my @ids = (0 .. $n - 1);
	my $queries = join(',', map {
		"'INSERT INTO public.log VALUES (" . ($base + $_) . ", repeat(''x'', 60000)) RETURNING task, pad'"
	} @ids);
	tt_sql($node, "SELECT task_tracker.assign_tasks($job, '{" . join(',', @ids) . "}', ARRAY[$queries])",
		user => 'alice');
	return;
}

# ---------------------------------------------------------------- assign
# A batch whose last query text needs the area to grow (3 MB) fails with
# the ERROR dsm_create raises; the texts it stored before it (the three
# short ones) are given back, not left in the area for good.
{
	my $texts = tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker');
	my ($rc, $out, $err) = tt_psql($node, q{SET citus.max_task_query_size = '4MB';
		SELECT task_tracker.assign_tasks(148, '{0,1,2,3}', ARRAY['SELECT 1', 'SELECT 2', 'SELECT 3',
			'SELECT length(''' || repeat('x', 3000000) || ''')'])}, verbose => 1);
	isnt($rc, 0, 'assign: a batch whose last text cannot be kept fails');
	like($err, qr/could not resize shared memory segment .*No space left on device/, '... with the ERROR')
	  or diag($err);
	is(tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker'), $texts,
		'... and the texts it stored before are given back');
	is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 148'), '0', '... nothing is queued');
}

# ---------------------------------------------------------------- A
# (the four running slots are held by gate tasks until A and C are both
# queued, so that C's query texts are stored while the area has room)
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(1515)');
tt_sql($node, q{SELECT task_tracker.assign_tasks(149, '{0,1,2,3}',
	array_fill('SELECT pg_advisory_xact_lock_shared(1515)'::text, ARRAY[4]))}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		  AND wait_event_type = 'Lock' AND wait_event = 'advisory'}, '4'),
	'the four running slots wait on the gate');
my $log = tt_log_position($node);
assign_logging(150, 0, 40);
# C: tasks that fail with an error text of 60 kB, queued behind A
{
	my @ids = (0 .. 19);
	my $queries = join(',', map {
		"'DO \$\$BEGIN INSERT INTO public.log VALUES (" . (500 + $_)
		  . ", NULL); RAISE EXCEPTION ''%'', repeat(''e'', 60000); END\$\$'"
	} @ids);
	tt_sql($node, "SELECT task_tracker.assign_tasks(152, '{" . join(',', @ids) . "}', ARRAY[$queries])",
		user => 'alice');
}
$gate->query_safe('SELECT pg_advisory_unlock(1515)');
$gate->quit;
tt_wait_job($node, 150, user => 'alice', tasks => 40);
ok($node->log_contains(qr/could not resize shared memory segment|No space left on device/, $log),
	'A: growing the area of results failed for real (the log has the error)');
is(tt_sql($node, q{SELECT status || ' ' || count(*) || ' ' || max(attempts)
	FROM task_tracker.tasks WHERE job_id = 150 GROUP BY status}),
	'succeeded 40 1', 'A: all 40 tasks succeeded after one attempt each');
is(tt_sql($node, 'SELECT count(*), count(DISTINCT task) FROM public.log WHERE task < 1000'),
	'40|40', 'A: every INSERT ran exactly once');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker,
	'A: the tracker survived the ERROR (same pid)');
ok(!$node->log_contains(qr/task tracker started/, $log),
	'A: the tracker did not start again');
is(tt_sql($node, 'SELECT count(*), min(length(pad)) FROM task_tracker.task_result(150, 39) AS t(task int, pad text)',
		user => 'alice'),
	'1|60000', 'A: the last task\'s result is whole');

# ---------------------------------------------------------------- C
# The area is full (A's results are in it) and cannot grow: the error
# texts of C's failing tasks (60 kB each) cannot be kept either.  Storing
# one raises the same ERROR (fail_attempt -> set_task_error); before the
# fix it killed the tracker, which then requeued the task's attempt.  Now
# every attempt runs once, each task ends permanently_failed with its
# SQLSTATE (its text only when it fitted), and the tracker keeps its pid.
tt_wait_job($node, 152, user => 'alice', tasks => 20);
is(tt_sql($node, q{SELECT status || ' ' || count(*) || ' ' || min(attempts) || ' ' || max(attempts) || ' ' || max(error_sqlstate)
	FROM task_tracker.tasks WHERE job_id = 152 GROUP BY status}),
	'permanently_failed 20 3 3 P0001',
	'C: the 20 failing tasks ended permanently_failed after their 3 attempts, with their SQLSTATE');
cmp_ok(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 152 AND error IS NULL'),
	'>', 0, 'C: some error texts could not be kept (the fault was hit)');
is(tt_sql($node, 'SELECT count(*) FROM public.log WHERE task BETWEEN 500 AND 519'),
	'0', 'C: every attempt rolled back (nothing of a failed task is left)');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker,
	'C: the tracker survived (same pid)');
ok(!$node->log_contains(qr/task tracker started/, $log),
	'C: the tracker did not start again');
tt_sql($node, 'SELECT task_tracker.cleanup_job(152)', user => 'alice');
tt_sql($node, 'SELECT task_tracker.cleanup_job(149)', user => 'alice');

# ---------------------------------------------------------------- B
tt_sql($node, 'SELECT task_tracker.cleanup_job(150)', user => 'alice');
my $area = $node->data_dir . '/pg_task_tracker';
mount_tmpfs($area, 1);
fill("$area/filler");
$node->append_conf('postgresql.conf', "citus.task_result_inline_size = 0\n");
$node->reload;
ok($node->poll_query_until('postgres', q{SELECT current_setting('citus.task_result_inline_size') = '0'}),
	'B: in-memory results are off');

assign_logging(151, 1000, 8);
tt_wait_job($node, 151, user => 'alice', tasks => 8);
is(tt_sql($node, q{SELECT status || ' ' || count(*) || ' ' || max(attempts) || ' ' || min(result_rows) || ' ' || max(error_sqlstate)
	FROM task_tracker.tasks WHERE job_id = 151 GROUP BY status}),
	'permanently_failed 8 1 1 53100',
	'B: the 8 tasks ended permanently_failed after one attempt, with their row count and 53100 (disk full)');
like(tt_sql($node, 'SELECT error FROM task_tracker.tasks WHERE job_id = 151 AND task_id = 0'),
	qr/^the task's statement completed \(1 rows\), but its result could not be kept: could not write result file .*No space left on device; the statement is not run again$/,
	'B: the error says the statement completed and why its result is missing');
is(tt_sql($node, 'SELECT count(*), count(DISTINCT task) FROM public.log WHERE task >= 1000'),
	'8|8', 'B: every INSERT ran exactly once');
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker,
	'B: the tracker kept its pid');

unlink("$area/filler", "$dynshmem/filler");
tt_sql($node, 'SELECT task_tracker.cleanup_job(151)', user => 'alice');
tt_check_no_leftovers($node);
$node->stop;
# (test.sh's exit trap unmounts whatever this could not)
for my $dir (reverse @mounted)
{
	tt_priv('tmpfs-umount', $dir) or diag("could not unmount $dir");
}
@mounted = ();
done_testing();
