
# A full disk (ENOSPC) under a worker's job-file area.
#
# $PGDATA/pg_task_tracker of worker 1 is put on a tmpfs of 2 MB, mounted by
# the privileged test helper of scripts/test.sh (verbs tmpfs-mount and
# tmpfs-umount, on a directory this OS user owns); the helper's absence
# (prove run by hand) skips the test with the reason.
#
# A. the tmpfs mounted on $PGDATA/pg_task_tracker of the running worker:
#    a result larger than the whole area fails permanently, after one
#    attempt (its statement completed: it is not run again), with 53100
#    naming the file and saying "No space left on device"; each attempt's partial file is removed, so the space comes
#    back; small (in-memory) and file results fit afterwards;
# B. the area filled up by another file: file results fail with 53100,
#    in-memory results and row-less tasks succeed, results already on the
#    area stay readable, and once space is freed the same task succeeds;
# C. the coordinator, with worker 1's area full: the task-tracker executor
#    fails the job with the worker's 53100 and a context naming the node
#    (or fails over to worker 2 when the task has a placement there); the
#    real-time executor does not use the worker's files and is not affected;
# D. the area as a symlink ($PGDATA/pg_task_tracker -> a tmpfs elsewhere):
#    the table saved at a clean stop is restored through it, cleanup_job and
#    the crash cleanup at start remove job directories through it, and the
#    symlink stays;
# E. the area full when `pg_ctl stop` saves the task table
#    (pg_task_tracker/tasks.state): the stop completes, the log says why the
#    save failed (No space left on device) and how many tasks are lost, no
#    partial state file is left taking space, only the small marker of the
#    failed save (tasks.state.lost); the start says the table starts empty
#    because the last shutdown could not save it (not "after a crash"),
#    consumes the marker, and the node runs tasks; once space is freed, file
#    results work again.
#
# Throughout, the tracker keeps its pid (except across the restarts of D
# and E) and no server process crashes; at the end no task, job directory
# or task session is left, and the tmpfs is unmounted.

use strict;
use warnings;

use File::Path qw(rmtree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my ($helper, $no_helper) = tt_priv_helper();
tt_skip_test("mounting a small tmpfs (a full disk) needs root: $no_helper") unless $helper;

my $MB = 2;
my @mounted;    # mount points to unmount at the end, whatever happens
my @nodes;

sub mount_tmpfs
{
	my ($dir) = @_;
	tt_priv('tmpfs-mount', $MB, $dir) or BAIL_OUT("could not mount a tmpfs on $dir");
	push @mounted, $dir;
	return;
}

sub umount_tmpfs
{
	my ($dir) = @_;
	my $ok = tt_priv('tmpfs-umount', $dir);
	@mounted = grep { $_ ne $dir } @mounted if $ok;
	return $ok;
}

END
{
	local $?;
	if (@mounted)
	{
		for my $n (@nodes)
		{
			eval { $n->stop('immediate') if defined $n->{_pid}; };
		}
		umount_tmpfs($_) for reverse @mounted;
	}
}

# fill($file): write $file until the file system is full
sub fill
{
	my ($file) = @_;
	my $chunk = "\0" x 65536;
	open(my $fh, '>', $file) or die "open $file: $!";
	binmode $fh;
	for (;;)
	{
		my $n = syswrite($fh, $chunk);
		next if defined $n;
		last if $!{ENOSPC};
		die "write $file: $!";
	}
	close($fh);    # nothing buffered: syswrite
	return -s $file;
}

# bytes used and available on the file system of $dir
sub fs_usage
{
	my ($dir) = @_;
	my $out = `stat -f -c '%b %a %S' '$dir'`;
	my ($blocks, $avail, $bsize) = split ' ', $out;
	return (($blocks - $avail) * $bsize, $avail * $bsize);
}

# task_* files left in the job directories of $area
sub task_files
{
	my ($area) = @_;
	my @files = sort glob("$area/job_*/task_*");
	return @files;
}

my $big_query  = q{SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g};   # ~4 MB
my $file_query = q{SELECT g, repeat('y', 100) FROM generate_series(1, 1000) g};    # ~110 kB
my $file_sums  = '1000|500500|100000';
my $sum_sql = q{SELECT count(*), sum(g), sum(length(s)) FROM task_tracker.task_result(%d, %d) AS t(g int, s text)};

# ---------------------------------------------------------------- nodes
my $worker_conf = "citus.max_running_tasks_per_node = 2\n";
my $coord = tt_node('coordinator', quiet => 1);
my $worker1 = tt_node('worker1', conf => $worker_conf);
my $worker2 = tt_node('worker2', quiet => 1, conf => $worker_conf);
@nodes = ($worker1, $worker2, $coord);
tt_add_node($coord, $_) for ($worker1, $worker2);
my $w1 = $worker1->host . ':' . $worker1->port;
my $w2 = $worker2->host . ':' . $worker2->port;
tt_create_role($worker1, 'alice');
tt_sql($worker1, q{CREATE TABLE public.done (v int); GRANT INSERT, SELECT ON public.done TO alice});

my $area = $worker1->data_dir . '/pg_task_tracker';
ok(-d $area && !-e "$area/tasks.state", 'worker 1 has its job-file area, without a state file');
my $tracker = tt_sql($worker1, 'SELECT pid FROM task_tracker.tracker');

# ---------------------------------------------------------------- A. result larger than the area
mount_tmpfs($area);
is(`stat -f -c %T '$area'`, "tmpfs\n", "A: a tmpfs of $MB MB is mounted on \$PGDATA/pg_task_tracker");

my $t0 = time();
tt_sql($worker1, "SELECT task_tracker.assign_task(1, 0, \$\$$big_query\$\$)", user => 'alice');
tt_wait_job($worker1, 1, user => 'alice', tasks => 1);
my ($status, $attempts, $state, $error) = split /\|/, tt_sql($worker1,
	'SELECT status, attempts, error_sqlstate, error FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 0',
	user => 'alice');
note(sprintf('A: the 4 MB result failed after %.2f s: %s', time() - $t0, $error // ''));
is($status, 'permanently_failed', 'A: a result larger than the area fails permanently');
is($attempts, '1',
	'A: ... after one attempt (its statement completed: it is not run again)');
is($state, '53100', 'A: ... with SQLSTATE 53100 (disk_full)');
like($error, qr{^the task's statement completed \(\d+ rows\), but its result could not be kept: could not write result file "pg_task_tracker/job_1/task_0\.\d+": No space left on device; the statement is not run again$},
	'A: ... and an error naming the file and the cause');
is(join(' ', task_files($area)), '', 'A: the partial result file is removed');
my ($used) = fs_usage($area);
cmp_ok($used, '<', 64 * 1024, "A: ... and the area is empty again ($used bytes used)");

tt_sql($worker1, "SELECT task_tracker.assign_tasks(1, '{1,2}', ARRAY['SELECT 42', \$\$$file_query\$\$])",
	user => 'alice');
tt_wait_job($worker1, 1, user => 'alice', tasks => 3);
is(tt_sql($worker1, 'SELECT * FROM task_tracker.task_result(1, 1) AS t(x int)', user => 'alice'), '42',
	'A: afterwards a small (in-memory) result succeeds');
is(tt_sql($worker1, sprintf($sum_sql, 1, 2), user => 'alice'), $file_sums,
	'A: ... and a 110 kB file result on the area');
is(scalar(my @files = task_files($area)), 1, 'A: ... which is the one file on the area');
is(tt_sql($worker1, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'A: tracker pid unchanged');

# ---------------------------------------------------------------- B. the area filled by another file
my $filler = "$area/filler";
my $filled = fill($filler);
my (undef, $avail) = fs_usage($area);
note("B: filler of $filled bytes, $avail bytes left");
is($avail, 0, 'B: the area is full');

tt_sql($worker1, qq{SELECT task_tracker.assign_tasks(2, '{0,1,2,3}', ARRAY[
	'SELECT 42',
	\$\$$file_query\$\$,
	'INSERT INTO public.done VALUES (2)',
	'SELECT g FROM generate_series(1, 100) g'])}, user => 'alice');
tt_wait_job($worker1, 2, user => 'alice', tasks => 4);
is( tt_sql($worker1, q{SELECT string_agg(task_id || ':' || status || ':' || coalesce(error_sqlstate, '-'), ','
		ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 2}, user => 'alice'),
	'0:succeeded:-,1:permanently_failed:53100,2:succeeded:-,3:succeeded:-',
	'B: on a full area a file result fails with 53100; in-memory results and an INSERT succeed');
like(tt_sql($worker1, 'SELECT error FROM task_tracker.tasks WHERE job_id = 2 AND task_id = 1', user => 'alice'),
	qr{^the task's statement completed \(\d+ rows\), but its result could not be kept: could not write result file "pg_task_tracker/job_2/task_1\.\d+": No space left on device; the statement is not run again$},
	'B: ... the error names the file and the cause');
is(tt_sql($worker1, 'SELECT count(*), sum(g) FROM task_tracker.task_result(2, 3) AS t(g int)', user => 'alice'),
	'100|5050', 'B: ... the in-memory result reads');
is(tt_sql($worker1, 'SELECT count(*) FROM public.done'), '1', 'B: ... the INSERT inserted its row');
is(tt_sql($worker1, sprintf($sum_sql, 1, 2), user => 'alice'), $file_sums,
	'B: a result file already on the full area still reads');
is(join(' ', map { s{.*/}{}r } task_files($area)), join(' ', map { s{.*/}{}r } glob("$area/job_1/task_2.*")),
	'B: no partial file of the failed task is left');

# ---------------------------------------------------------------- C. the coordinator
my $job_sql = sub {
	my ($executor, $query, @placements) = @_;
	my $pl = join(', ', map { "'$_'" } @placements);
	return "SET citus.task_executor = '$executor';
SELECT count(*), sum(g), sum(length(s)) FROM task_tracker.run_job(
	\$tl\$SELECT \$q\$$query\$q\$ AS query, ARRAY[$pl] AS placements\$tl\$) AS t(g int, s text)";
};
{
	my ($rc, $out, $err) = tt_psql($coord, $job_sql->('task-tracker', $file_query, $w1), verbose => 1);
	isnt($rc, 0, 'C: task-tracker, placement on the full worker only: the job fails');
	note("C: the coordinator's error:\n$err");
	like($err, qr{ERROR:  53100: the task's statement completed \(\d+ rows\), but its result could not be kept: could not write result file "[^"]*": No space left on device},
		'C: ... with the worker\'s 53100 and its message') or diag($err);
	like($err, qr{CONTEXT:  task \d+ of job \d+ on node \Q$w1\E}, 'C: ... naming the node') or diag($err);
	is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'C: ... no job left on the coordinator');
	ok(tt_poll_until($worker1, 'SELECT count(*) = 0 FROM task_tracker.tasks WHERE job_id > 2', 10),
		'C: ... and none on worker 1');

	is(tt_sql($coord, $job_sql->('task-tracker', $file_query, $w1, $w2)), $file_sums,
		'C: task-tracker, placements on both workers: the task fails over to worker 2');
	is(tt_sql($coord, $job_sql->('task-tracker', q{SELECT 7, 'small'}, $w1)), '1|7|5',
		'C: task-tracker, an in-memory result on the full worker succeeds');
	is(tt_sql($coord, $job_sql->('real-time', $file_query, $w1)), $file_sums,
		'C: real-time (rows streamed, no result file on the worker) is not affected');
	is(tt_sql($coord, 'SELECT count(*) FROM task_tracker.jobs'), '0', 'C: no job left on the coordinator');
}

# space freed: the same task succeeds, also through the coordinator
unlink($filler) or die "unlink $filler: $!";
tt_sql($worker1, "SELECT task_tracker.assign_task(2, 1, \$\$$file_query\$\$)", user => 'alice');
tt_wait_job($worker1, 2, user => 'alice', tasks => 4);
is(tt_sql($worker1, sprintf($sum_sql, 2, 1), user => 'alice'), $file_sums,
	'B: once space is freed the failed task, assigned again, succeeds');
is(tt_sql($coord, $job_sql->('task-tracker', $file_query, $w1)), $file_sums,
	'C: ... and so does the coordinator\'s task-tracker job on worker 1');
is(tt_sql($worker1, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'A-C: tracker pid unchanged');
tt_sql($worker1, 'SELECT task_tracker.cleanup_job(1); SELECT task_tracker.cleanup_job(2)', user => 'alice');
tt_check_no_leftovers($worker1, 'worker 1, A-C');
ok(umount_tmpfs($area), 'A-C: the tmpfs is unmounted from the running worker');

# ---------------------------------------------------------------- D. the area as a symlink
# finished tasks to carry over a clean stop: an in-memory and a file result
tt_sql($worker1, "SELECT task_tracker.assign_tasks(5, '{0,1}', ARRAY['SELECT 5', \$\$$file_query\$\$])",
	user => 'alice');
tt_wait_job($worker1, 5, user => 'alice', tasks => 2);
$worker1->stop('fast');
ok(-f "$area/tasks.state" && -d "$area/job_5", 'D: the clean stop saved the table; job 5 has its directory');
my $disk = PostgreSQL::Test::Utils::tempdir('disk_full');
mount_tmpfs($disk);
system('cp', '-a', "$area/.", $disk) == 0 or die "cp $area to $disk failed";
rmtree($area);
symlink($disk, $area) or die "symlink $disk $area: $!";

my $pos = tt_log_position($worker1);
$worker1->start;
ok($worker1->wait_for_log(qr/task tracker restored 2 tasks from the last clean shutdown/, $pos),
	'D: the saved table is restored through the symlink');
is(tt_sql($worker1, 'SELECT * FROM task_tracker.task_result(5, 0) AS t(x int)', user => 'alice'), '5',
	'D: ... its in-memory result reads');
is(tt_sql($worker1, sprintf($sum_sql, 5, 1), user => 'alice'), $file_sums, 'D: ... and its file result');
ok(!-e "$disk/tasks.state", 'D: ... and the state file is consumed');
tt_sql($worker1, 'SELECT task_tracker.cleanup_job(5)', user => 'alice');
ok(!-e "$disk/job_5" && !glob("$disk/dropped_*"), 'D: cleanup_job removes the job directory through the symlink');

tt_sql($worker1, "SELECT task_tracker.assign_task(6, 0, \$\$$file_query\$\$)", user => 'alice');
tt_wait_job($worker1, 6, user => 'alice', tasks => 1);
ok(-d "$disk/job_6", 'D: a new job writes its file through the symlink');
$worker1->stop('immediate');
$pos = tt_log_position($worker1);
$worker1->start;
ok( $worker1->wait_for_log(
		qr/task table starts empty after a crash or unclean stop; removed 1 leftover job directories/, $pos),
	'D: after an immediate stop the start removes the job directory through the symlink');
ok(!-e "$disk/job_6", 'D: ... it is gone');
ok(-l $area && readlink($area) eq $disk, 'D: ... and the symlink is kept');
is(tt_sql($worker1, 'SELECT count(*) FROM task_tracker.tasks'), '0', 'D: ... the table is empty');

# ---------------------------------------------------------------- E. full at pg_ctl stop
# 40 finished tasks with 1 kB query texts: a state file of some 50 kB, on an
# area with 8 kB left, so the save's write comes up short
my $pad = 'z' x 1000;
tt_sql($worker1, qq{SELECT task_tracker.assign_tasks(7, array_agg(i), array_agg(format('SELECT %s /* $pad */', i)))
	FROM generate_series(0, 39) i}, user => 'alice');
tt_wait_job($worker1, 7, user => 'alice', tasks => 40);
$filled = fill("$disk/filler");
truncate("$disk/filler", $filled - 8192) or die "truncate: $!";
(undef, $avail) = fs_usage($disk);
note("E: $avail bytes left on the area");
cmp_ok($avail, '<', 40 * 1000, 'E: less space left than the state file needs');

$pos = tt_log_position($worker1);
$t0 = time();
ok($worker1->stop('fast', fail_ok => 1), 'E: pg_ctl stop -m fast completes on a full area');
my $took = time() - $t0;
cmp_ok($took, '<', 30, sprintf('E: ... in bounded time (%.1f s)', $took));
my $stoplog = slurp_file($worker1->logfile, $pos);
like($stoplog, qr/task tracker could not save its task table to "pg_task_tracker\/tasks\.state\.tmp"/,
	'E: the log says the task table could not be saved')
  or diag($stoplog);
like($stoplog, qr/could not save its task table to "[^"]*": No space left on device/,
	'E: ... and why: No space left on device (a short write is a full disk)');
like($stoplog, qr/DETAIL:  40 tasks \(0 waiting to run, 40 finished\) are lost: could not write file "pg_task_tracker\/tasks\.state\.tmp"\. The next start begins with an empty task table\./,
	'E: ... which step failed and how many tasks are lost')
  or diag($stoplog);
note('E: left on the area after the stop: ' . join(' ', map { s{.*/}{}r . ' (' . (-s $_) . ' bytes)' } glob("$disk/*")));
ok(!-e "$disk/tasks.state.tmp" && !-e "$disk/tasks.state", 'E: no partial state file is left taking space');
ok(-f "$disk/tasks.state.lost", 'E: ... only the small marker of the failed save, which fits where it was');

$pos = tt_log_position($worker1);
$worker1->start;
ok( $worker1->wait_for_log(
		qr/task tracker: task table starts empty because the last shutdown could not save it; removed \d+ leftover job directories/,
		$pos),
	'E: the node starts on the full area; the log says the table starts empty because its save failed');
my $startlog = slurp_file($worker1->logfile, $pos);
like($startlog,
	qr/DETAIL:  The shutdown lost 40 tasks: could not write file "pg_task_tracker\/tasks\.state\.tmp": No space left on device\./,
	'E: ... how many tasks the failed save lost, and why')
  or diag($startlog);
unlike($startlog, qr/after a crash or unclean stop/, 'E: ... and does not call the clean stop a crash');
ok(!-e "$disk/tasks.state.lost", 'E: the marker is consumed by the start');
is(tt_sql($worker1, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 7'), '0',
	'E: the tasks of job 7 are gone (the table could not be saved)');
my $tracker2 = tt_sql($worker1, 'SELECT pid FROM task_tracker.tracker');
tt_sql($worker1, "SELECT task_tracker.assign_tasks(8, '{0,1}', ARRAY['SELECT 8', \$\$$file_query\$\$])",
	user => 'alice');
tt_wait_job($worker1, 8, user => 'alice', tasks => 2);
is( tt_sql($worker1, q{SELECT string_agg(task_id || ':' || status || ':' || coalesce(error_sqlstate, '-'), ','
		ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 8}, user => 'alice'),
	'0:succeeded:-,1:permanently_failed:53100', 'E: the node runs tasks; a file result fails while full');
unlink("$disk/filler") or die "unlink: $!";
tt_sql($worker1, "SELECT task_tracker.assign_task(8, 1, \$\$$file_query\$\$)", user => 'alice');
tt_wait_job($worker1, 8, user => 'alice', tasks => 2);
is(tt_sql($worker1, sprintf($sum_sql, 8, 1), user => 'alice'), $file_sums,
	'E: space freed: the file result succeeds');
is(tt_sql($worker1, 'SELECT pid FROM task_tracker.tracker'), $tracker2, 'E: tracker pid unchanged');
tt_sql($worker1, 'SELECT task_tracker.cleanup_job(8)', user => 'alice');

# ---------------------------------------------------------------- the end
tt_no_crash_in_log($_) for ($worker1, $worker2, $coord);
tt_check_no_leftovers($worker1, 'worker 1');
tt_check_no_leftovers($worker2, 'worker 2');
tt_check_no_leftovers($coord, 'coordinator');
$_->stop for ($coord, $worker2, $worker1);
unlink($area);
ok(umount_tmpfs($disk), 'the tmpfs is unmounted');
done_testing();
