
# The saved task table ($PGDATA/pg_task_tracker/tasks.state) as the start
# may find it: damaged, truncated, unreadable, or not there because the save
# failed.  Whatever it finds, the node must start, say clearly in the log
# what it restored and what was wrong, and run tasks; a damaged file is kept
# as tasks.state.corrupt, and job directories that no restored task uses are
# removed.  (The real full disk at a stop: 206_disk_full.pl.)
#
# The table saved by a clean stop holds four finished tasks, in this order:
# job 10 task 0 (an in-memory result), job 10 task 1 (a result file), job 10
# task 2 (failed, with its error), job 11 task 0 (a result file).  Each case
# starts from that file (and the job directories it refers to), changed:
#
#   cut in the middle of the 4th task   -> 3 tasks restored, job 11's
#                                          directory removed
#   cut right before its end mark       -> all 4 restored, damage reported
#   the 2nd task's ids overwritten      -> 1 restored
#   a query length beyond the file      -> 0 restored, nothing allocated
#   the 1st task saved twice            -> 1 restored
#   a status no save writes             -> 2 restored
#   bytes after the end mark            -> 4 restored, damage reported
#   an empty file, a foreign file       -> 0 restored
#   a file the server cannot read       -> 0 restored
#   a leftover tasks.state.tmp          -> removed, the table restored
#   the marker of a failed save only    -> empty table, "could not save it",
#                                          not "after a crash"
#   the area read-only at the stop      -> the save fails, its marker goes
#                                          to $PGDATA, the start says so

use strict;
use warnings;

use File::Copy qw(copy);
use File::Path qw(rmtree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# small results stay in memory, larger ones go to files
my $node = tt_node('state', conf => "citus.task_result_inline_size = 1024\n");
tt_create_role($node, 'alice');
my $area = $node->data_dir . '/pg_task_tracker';
my $file_query = q{SELECT g, repeat('y', 100) FROM generate_series(1, 500) g};
my $file_sums = '500|125250';

tt_sql($node, qq{SELECT task_tracker.assign_tasks(10, '{0,1,2}', ARRAY['SELECT 7', \$q\$$file_query\$q\$, 'SELECT 1/0'])},
	user => 'alice');
tt_wait_job($node, 10, user => 'alice', tasks => 3);
tt_sql($node, qq{SELECT task_tracker.assign_task(11, 0, \$q\$$file_query\$q\$)}, user => 'alice');
tt_wait_job($node, 11, user => 'alice', tasks => 1);
is( tt_sql($node, q{SELECT string_agg(job_id || '/' || task_id || ':' || status, ',' ORDER BY job_id, task_id)
	FROM task_tracker.tasks}),
	'10/0:succeeded,10/1:succeeded,10/2:permanently_failed,11/0:succeeded', 'four finished tasks');
is(join(',', tt_job_dirs($node)), 'job_10,job_11', 'jobs 10 and 11 have result files');
$node->stop('fast');

my $pristine = PostgreSQL::Test::Utils::tempdir('pristine');
system('cp', '-a', "$area/.", $pristine) == 0 or die "cp $area failed";
my $saved = slurp_file("$pristine/tasks.state");

# The records of the file ("TTS4", then per task a byte 1, the fixed part of
# 224 bytes and its texts, then a byte 0); see src/worker/persist.c.
my $fixed = 'q l l L L l l Q q q q q a64 a64 a6 C x l l l l';
is(length(pack($fixed)), 224, 'the fixed part of a saved task is 224 bytes');
my @recs;
{
	my $pos = 4;
	while (ord(substr($saved, $pos, 1)) == 1)
	{
		my @f = unpack($fixed, substr($saved, $pos + 1, 224));
		my ($ql, $el, $rl) = @f[ 16, 17, 18 ];
		my $len = 1 + 224 + $ql + ($el > 0 ? $el : 0) + ($rl > 0 ? $rl : 0);
		push @recs, { start => $pos, len => $len, job => $f[0], task => $f[1] };
		$pos += $len;
	}
	is(substr($saved, 0, 4), 'TTS4', 'the saved table has the current format');
	is($pos, length($saved) - 1, '... its records end right before the end mark');
	is(join(',', map { "$_->{job}/$_->{task}" } @recs), '10/0,10/1,10/2,11/0', '... four tasks in order');
}
my $end = length($saved) - 1;    # offset of the end mark

# put_field($bytes, $rec, $offset, $packed): overwrite a field of a record
sub put_field
{
	my ($bytes, $rec, $offset, $packed) = @_;
	substr($bytes, $recs[$rec]{start} + 1 + $offset, length($packed)) = $packed;
	return $bytes;
}

# start_with(%case): put the pristine area back with tasks.state replaced,
# start, and check what the tracker restored and said
sub start_with
{
	my (%c) = @_;
	my $what = $c{name};

	rmtree($area);
	mkdir($area, 0700) or die "mkdir $area: $!";
	system('cp', '-a', "$pristine/.", $area) == 0 or die "cp $pristine failed";
	if (defined $c{bytes})
	{
		open(my $fh, '>', "$area/tasks.state") or die $!;
		binmode $fh;
		print $fh $c{bytes};
		close $fh;
	}
	elsif ($c{no_state})
	{
		unlink("$area/tasks.state") or die $!;
	}
	$c{setup}->() if $c{setup};

	my $pos = tt_log_position($node);
	$node->start;
	ok($node->wait_for_log(qr/task tracker started/, $pos), "$what: the node starts");
	my $log = slurp_file($node->logfile, $pos);
	if (defined $c{restored})
	{
		like($log, qr/LOG:  task tracker restored $c{restored} tasks from the last clean shutdown/,
			"$what: $c{restored} tasks restored");
	}
	if ($c{problem})
	{
		like($log,
			qr/WARNING:  task tracker state file "pg_task_tracker\/tasks\.state" is corrupt; restored $c{restored} tasks before the damage\n.*DETAIL:  $c{problem}\n.*HINT:  The file is kept as "pg_task_tracker\/tasks\.state\.corrupt"\./,
			"$what: the damage is reported") or diag($log);
		ok(-f "$area/tasks.state.corrupt", "$what: ... and the file is kept as tasks.state.corrupt");
	}
	else
	{
		unlike($log, qr/is corrupt/, "$what: no damage reported");
	}
	like($log, $c{log}, "$what: the log says so") if $c{log};
	unlike($log, qr/after a crash or unclean stop/, "$what: not reported as a crash") unless $c{crash};
	ok(!-e "$area/tasks.state" && !-e "$area/tasks.state.tmp" && !-e "$area/tasks.state.lost",
		"$what: the state file is consumed");

	my $have = tt_sql($node, q{SELECT coalesce(string_agg(job_id || '/' || task_id, ',' ORDER BY job_id, task_id), '')
		FROM task_tracker.tasks});
	is($have, $c{tasks}, "$what: the table holds " . ($c{tasks} eq '' ? 'nothing' : $c{tasks}));
	my %jobs = map { (split m{/})[0] => 1 } grep { $_ ne '' } split /,/, $have;
	is(join(',', tt_job_dirs($node)), join(',', map { "job_$_" } sort keys %jobs),
		"$what: job directories only of restored jobs");
	if ($have =~ m{10/1})
	{
		is(tt_sql($node, 'SELECT count(*), sum(g) FROM task_tracker.task_result(10, 1) AS t(g int, s text)',
				user => 'alice'),
			$file_sums, "$what: a restored file result reads");
	}
	if ($have =~ m{10/0})
	{
		is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(10, 0) AS t(x int)', user => 'alice'),
			'7', "$what: a restored in-memory result reads");
	}
	if ($have =~ m{10/2})
	{
		is(tt_sql($node, q{SELECT status || ':' || error_sqlstate || ':' || error FROM task_tracker.tasks
			WHERE job_id = 10 AND task_id = 2}),
			'permanently_failed:22012:division by zero', "$what: a restored failed task keeps its error");
	}

	# the node runs tasks
	tt_sql($node, q{SELECT task_tracker.assign_task(20, 0, 'SELECT 20')}, user => 'alice');
	tt_wait_job($node, 20, user => 'alice', tasks => 1);
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(20, 0) AS t(x int)', user => 'alice'), '20',
		"$what: the node runs tasks");

	tt_sql($node, "SELECT task_tracker.cleanup_job(j) FROM unnest('{10,11,20}'::bigint[]) j", user => 'alice');
	tt_check_no_leftovers($node, $what);
	tt_no_crash_in_log($node, $what);
	$node->stop('fast');
	return;
}

my $all = '10/0,10/1,10/2,11/0';

start_with(name => 'intact', bytes => $saved, restored => 4, tasks => $all);

start_with(
	name => 'cut in the 4th task',
	bytes => substr($saved, 0, $recs[3]{start} + 100),
	restored => 3,
	problem => 'The file ends in the middle of the record of saved task 4\.',
	log => qr/task tracker removed 1 job directories no restored task uses/,
	tasks => '10/0,10/1,10/2');

start_with(
	name => 'cut before the end mark',
	bytes => substr($saved, 0, $end),
	restored => 4,
	problem => 'The file ends after 4 saved tasks, without its end mark\.',
	tasks => $all);

start_with(
	name => 'ids overwritten',
	bytes => put_field($saved, 1, 0, "\xff" x 12),
	restored => 1,
	problem => 'Saved task 2 \(job -1, task -1\) cannot be restored: its job or task id is out of range\.',
	tasks => '10/0');

start_with(
	name => 'query length beyond the file',
	bytes => put_field($saved, 0, 208, pack('l', 0x7fffff00)),
	restored => 0,
	problem => 'Saved task 1 \(job 10, task 0\) cannot be restored: its texts are longer than the rest of the file\.',
	tasks => '');

start_with(
	name => 'a task saved twice',
	bytes => substr($saved, 0, $recs[1]{start}) . substr($saved, $recs[0]{start}, $recs[0]{len})
	  . substr($saved, $recs[1]{start}),
	restored => 1,
	problem => 'Saved task 2 \(job 10, task 0\) cannot be restored: it is saved twice\.',
	tasks => '10/0');

start_with(
	name => 'a status no save writes',
	bytes => put_field($saved, 2, 12, pack('l', 2)),    # TT_RUNNING
	restored => 2,
	problem => 'Saved task 3 \(job 10, task 2\) cannot be restored: its status is invalid\.',
	tasks => '10/0,10/1');

start_with(
	name => 'bytes after the end mark',
	bytes => $saved . 'garbage',
	restored => 4,
	problem => 'The file goes on after the end of its 4 tasks\.',
	tasks => $all);

start_with(
	name => 'an empty file',
	bytes => '',
	restored => 0,
	problem => 'The file is too short to be a saved task table\.',
	tasks => '');

start_with(
	name => 'a foreign file',
	bytes => "PGDMP\0\0\0" x 100,
	restored => 0,
	problem => 'The file does not start with the mark of a saved task table\.',
	tasks => '');

start_with(
	name => 'an unreadable file',
	bytes => $saved,
	setup => sub { chmod(0000, "$area/tasks.state") or die "chmod: $!"; },
	restored => 0,
	problem => 'Could not open the file: Permission denied\.',
	tasks => '');

start_with(
	name => 'a leftover temporary file',
	bytes => $saved,
	setup => sub { copy("$area/tasks.state", "$area/tasks.state.tmp") or die "copy: $!"; },
	restored => 4,
	tasks => $all);

start_with(
	name => 'the marker of a failed save',
	no_state => 1,
	setup => sub {
		open(my $fh, '>', "$area/tasks.state.lost") or die $!;
		print $fh "4\ncould not write file \"pg_task_tracker/tasks.state.tmp\": No space left on device\n";
		close $fh;
	},
	log => qr/LOG:  task tracker: task table starts empty because the last shutdown could not save it; removed 2 leftover job directories\n.*DETAIL:  The shutdown lost 4 tasks: could not write file "pg_task_tracker\/tasks\.state\.tmp": No space left on device\./,
	tasks => '');

# a save that fails without a full disk: the area read-only at the stop, so
# not even the marker fits there; it goes to $PGDATA
{
	my $what = 'an unwritable area at the stop';
	rmtree($area);
	mkdir($area, 0700) or die "mkdir $area: $!";
	system('cp', '-a', "$pristine/.", $area) == 0 or die "cp $pristine failed";
	my $pos = tt_log_position($node);
	$node->start;
	ok($node->wait_for_log(qr/task tracker restored 4 tasks from the last clean shutdown/, $pos),
		"$what: the table is restored");
	chmod(0500, $area) or die "chmod: $!";
	$pos = tt_log_position($node);
	$node->stop('fast');
	chmod(0700, $area) or die "chmod: $!";
	my $log = slurp_file($node->logfile, $pos);
	like($log,
		qr/LOG:  task tracker could not save its task table to "pg_task_tracker\/tasks\.state\.tmp": Permission denied\n.*DETAIL:  4 tasks \(0 waiting to run, 4 finished\) are lost: could not create file "pg_task_tracker\/tasks\.state\.tmp"\. The next start begins with an empty task table\./,
		"$what: the stop says the save failed, why, and what is lost") or diag($log);
	my $root_marker = $node->data_dir . '/pg_task_tracker.lost';
	ok(-f $root_marker && !-e "$area/tasks.state.lost" && !-e "$area/tasks.state" && !-e "$area/tasks.state.tmp",
		"$what: the marker of the failed save is in \$PGDATA");

	$pos = tt_log_position($node);
	$node->start;
	ok($node->wait_for_log(qr/task tracker started/, $pos), "$what: the node starts");
	$log = slurp_file($node->logfile, $pos);
	like($log,
		qr/LOG:  task tracker: task table starts empty because the last shutdown could not save it; removed 2 leftover job directories\n.*DETAIL:  The shutdown lost 4 tasks: could not create file "pg_task_tracker\/tasks\.state\.tmp": Permission denied\./,
		"$what: the start says the table starts empty because the save failed") or diag($log);
	unlike($log, qr/after a crash or unclean stop/, "$what: not reported as a crash");
	ok(!-e $root_marker, "$what: the marker is consumed");
	is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'), '0', "$what: the table is empty");
	tt_sql($node, q{SELECT task_tracker.assign_task(20, 0, 'SELECT 20')}, user => 'alice');
	tt_wait_job($node, 20, user => 'alice', tasks => 1);
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(20, 0) AS t(x int)', user => 'alice'), '20',
		"$what: the node runs tasks");
	tt_sql($node, 'SELECT task_tracker.cleanup_job(20)', user => 'alice');
	tt_check_no_leftovers($node, $what);
	$node->stop('fast');
}

start_with(
	name => 'no state file (a crash)',
	no_state => 1,
	crash => 1,
	log => qr/LOG:  task tracker: task table starts empty after a crash or unclean stop; removed 2 leftover job directories/,
	tasks => '');

done_testing();
