# Copyright: task_tracker authors.
#
# Two refusals of README "Errors you can get" that need the tracker in a
# particular moment:
#
# * 57P03 "task tracker is not ready": the tracker has not restored its
#   table within citus.node_connection_timeout.  Made real without any hook:
#   the state file is replaced by a named pipe, so the tracker's restore
#   blocks in open() until the test opens the pipe for writing.  Meanwhile
#   assign_task fails with 57P03 after the caller's
#   citus.node_connection_timeout (and queues nothing); once the pipe is
#   opened and closed, the tracker finds an empty (corrupt) state file, says
#   so, keeps it aside and starts, and assigning works.
# * 55006 "job N is being cleaned up": the tracker is stopped (SIGSTOP)
#   while cleanup_job waits for it to stop the job's running task; an
#   assign into that job is refused with 55006; once the tracker goes on,
#   cleanup_job returns and the job id can be used again.
use strict;
use warnings;

use POSIX qw(mkfifo);
use Fcntl;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# (a long task_tracker_delay: while the 55006 task waits, the tracker sleeps
# in its wait and holds no lock when it is stopped)
my $node = tt_node('notready', conf => "citus.max_running_tasks_per_node = 2\ncitus.task_tracker_delay = '100s'\n");
tt_create_role($node, 'alice');

# ---------------------------------------------------------------- 57P03
$node->stop('fast');
my $state = $node->data_dir . '/pg_task_tracker/tasks.state';
unlink($state);
mkfifo($state, 0600) or die "mkfifo $state: $!";

my $released = 0;
sub release_fifo
{
	return if $released;
	$released = 1;
	# the tracker has the pipe open for reading: open it for writing and
	# close it, which ends the tracker's read (an empty file)
	sysopen(my $fh, $state, O_WRONLY) or die "open $state for writing: $!";
	close($fh);
	return;
}
END
{
	# never leave a server whose tracker hangs in open()
	local $?;
	if (!$released && -p $state)
	{
		if (sysopen(my $fh, $state, O_WRONLY | O_NONBLOCK)) { close($fh); }
	}
}

# (pg_ctl start waits for connections, not for the tracker)
my $logpos = tt_log_position($node);
$node->start;
tt_expect_error($node, q{SET citus.node_connection_timeout = '200ms'; SELECT task_tracker.assign_task(2, 0, 'SELECT 1')},
	'57P03', 'task tracker is not ready', 'assign_task while the tracker restores its table', user => 'alice');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'), '0', '... nothing was queued');
ok(!$node->log_contains('task tracker started', $logpos), '... the tracker had not started');
release_fifo();
ok($node->wait_for_log(qr/task tracker started/, $logpos), 'once the pipe is closed, the tracker starts');
ok($node->log_contains('task tracker state file "pg_task_tracker/tasks.state" is corrupt; restored 0 tasks', $logpos),
	'... saying that the state file was not a saved table');
ok(!-e $state, '... and the pipe is no longer the state file');
unlink("$state.corrupt");
tt_sql($node, q{SELECT task_tracker.assign_task(2, 0, 'SELECT 1')}, user => 'alice');
tt_wait_job($node, 2, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT task_tracker.task_status(2, 0)', user => 'alice'), 'succeeded', 'the tracker runs tasks');
tt_sql($node, 'SELECT task_tracker.cleanup_job(2)', user => 'alice');

# ---------------------------------------------------------------- 55006
my $lock = $node->background_psql('postgres');
$lock->query_safe('SELECT pg_advisory_lock(4141)');
tt_sql($node, q{SELECT task_tracker.assign_task(3, 0, 'SELECT pg_advisory_lock(4141)')}, user => 'alice');
ok($node->poll_query_until('postgres', q{SELECT task_tracker.task_status(3, 0) = 'running'}),
	'job 3 has a running task');
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
# stop the tracker only while it sleeps in its wait (state S), never in
# the middle of a pass that may hold its lock
sub proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return '?';
	my $st = <$fh>;
	close($fh);
	return $st =~ /\)\s+(\S)/ ? $1 : '?';
}
# (with the task blocked and a delay of 100 s nothing wakes it)
my $until = time() + $PostgreSQL::Test::Utils::timeout_default;
usleep(10_000) while proc_state($tracker) ne 'S' && time() < $until;
is(proc_state($tracker), 'S', 'the tracker sleeps in its wait');
kill('STOP', $tracker) or die "SIGSTOP $tracker: $!";

my $cleanup = tt_start_psql($node, [ 'SELECT task_tracker.cleanup_job(3)' ], user => 'alice', timeout => 60);
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query = 'SELECT task_tracker.cleanup_job(3)' AND wait_event_type = 'Extension'}),
	'cleanup_job(3) waits for the (stopped) tracker');
tt_expect_error($node, q{SELECT task_tracker.assign_task(3, 1, 'SELECT 1')},
	'55006', 'job 3 is being cleaned up', 'assign_task into a job being cleaned up', user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_tasks(3, '{2,3}', '{"SELECT 1","SELECT 2"}')},
	'55006', 'job 3 is being cleaned up', 'assign_tasks into a job being cleaned up', user => 'alice');
kill('CONT', $tracker);
my ($rc, $out, $err) = tt_finish_psql($cleanup);
is($rc, 0, 'cleanup_job returns once the tracker goes on') or diag($err);
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 3'), '0', '... and job 3 is gone');
$lock->query_safe('SELECT pg_advisory_unlock(4141)');
$lock->quit;
tt_sql($node, q{SELECT task_tracker.assign_task(3, 1, 'SELECT 1')}, user => 'alice');
tt_wait_job($node, 3, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT task_tracker.task_status(3, 1)', user => 'alice'), 'succeeded',
	'the job id can be used again after the cleanup');
tt_sql($node, 'SELECT task_tracker.cleanup_job(3)', user => 'alice');

is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');
tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
