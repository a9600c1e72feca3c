# Copyright: task_tracker authors.
#
# The tracker's settings do what README ("Configuration") says:
#
# * citus.task_tracker_reuse_connections = on (default): a user's next task
#   runs on the session of the previous one (same backend pid); off: every
#   task gets a new session, closed after the task (long before the idle
#   timeout);
# * the idle-session cap: at most two sessions per running slot — with one
#   slot, a third user's task closes an idle session first;
# * citus.task_tracker_host: empty = the Unix socket (inet_client_addr() is
#   NULL in the task); '127.0.0.1' = TCP from 127.0.0.1;
# * citus.task_tracker_delay: while a task runs, the tracker wakes at least
#   every delay (its wakeups counter), and not much more often; a reload
#   takes effect.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

my $node = tt_node('settings', conf => qq{
citus.max_running_tasks_per_node = 1
citus.task_tracker_idle_connection_timeout = '120s'
listen_addresses = '127.0.0.1'
});
tt_create_role($node, $_) for qw(alice bob carol);
my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

my $probe = q{SELECT pg_backend_pid(), coalesce(host(inet_client_addr()), 'socket')};
my $job = 0;

# run_probe($user): one task of $user; returns (backend pid, client address)
sub run_probe
{
	my ($user) = @_;
	$job++;
	tt_sql($node, "SELECT task_tracker.assign_task($job, 0, " . tt_quote_literal($probe) . ')', user => $user);
	tt_wait_job($node, $job, user => $user, tasks => 1);
	my $r = tt_sql($node, "SELECT * FROM task_tracker.task_result($job, 0) AS t(p int, a text)", user => $user);
	tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => $user);
	return split /\|/, $r;
}

sub task_sessions
{
	return tt_sql($node, q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'});
}

# ---------------------------------------------------------------- reuse on, host ''
my ($p1, $a1) = run_probe('alice');
my ($p2, $a2) = run_probe('alice');
is($a1, 'socket', "citus.task_tracker_host = '': the tracker connects through the Unix socket");
is($p2, $p1, 'reuse_connections = on: the next task of the same user runs on the same session');
is(task_sessions(), '1', '... which stays open while idle');

# ---------------------------------------------------------------- idle cap
my ($pb) = run_probe('bob');
isnt($pb, $p1, "another user's task never gets alice's session");
ok($node->poll_query_until('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'}, '2'),
	'two idle sessions (alice, bob) with one running slot');
my ($pc) = run_probe('carol');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'}, '2'),
	"a third user's session: the tracker keeps at most two sessions per running slot")
  or diag(tt_sql($node, q{SELECT pid, usename, state FROM pg_stat_activity WHERE application_name = 'task_tracker'}));
cmp_ok(tt_sql($node, 'SELECT open_connections FROM task_tracker.tracker'), '<=', 2,
	'... and its open_connections counter agrees');
is(tt_sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pc"), '1', "... carol's new session is one of them");

# ---------------------------------------------------------------- reuse off, host 127.0.0.1, delay 1s
tt_sql($node, q{ALTER SYSTEM SET citus.task_tracker_reuse_connections = off;
	ALTER SYSTEM SET citus.task_tracker_host = '127.0.0.1';
	ALTER SYSTEM SET citus.task_tracker_delay = '1s'});
$node->restart;
$tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');
($p1, $a1) = run_probe('alice');
ok($node->poll_query_until('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'}, '0'),
	'reuse_connections = off: the session is closed after the task (idle timeout 120 s)');
($p2, $a2) = run_probe('alice');
isnt($p2, $p1, '... and the next task of the same user gets a new session');
is("$a1 $a2", '127.0.0.1 127.0.0.1', "citus.task_tracker_host = '127.0.0.1': the tracker connects over TCP");

# task_tracker_delay: a task blocked on a lock the test holds keeps the
# tracker busy; it then wakes once per delay
my $lock = $node->background_psql('postgres');
$lock->query_safe('SELECT pg_advisory_lock(4040)');
$job++;
tt_sql($node, "SELECT task_tracker.assign_task($job, 0, 'SELECT pg_advisory_lock(4040)')", user => 'alice');
ok($node->poll_query_until('postgres', "SELECT task_tracker.task_status($job, 0) = 'running'"),
	'a task is running (blocked on an advisory lock)');
my $w0 = tt_sql($node, 'SELECT wakeups FROM task_tracker.tracker');
my $t0 = time();
ok($node->poll_query_until('postgres', "SELECT wakeups >= $w0 + 3 FROM task_tracker.tracker"),
	'task_tracker_delay = 1s: the tracker wakes while a task runs');
my $slow = time() - $t0;
cmp_ok($slow, '>=', 1.9, sprintf('... about once a second (3 wakeups in %.1f s)', $slow));
tt_sql($node, q{ALTER SYSTEM SET citus.task_tracker_delay = '50ms'; SELECT pg_reload_conf()});
my $w1 = tt_sql($node, 'SELECT wakeups FROM task_tracker.tracker');
$t0 = time();
ok($node->poll_query_until('postgres', "SELECT wakeups >= $w1 + 40 FROM task_tracker.tracker"),
	'task_tracker_delay = 50ms after a reload: the tracker wakes more often');
my $fast = time() - $t0;
cmp_ok($fast, '<', 20, sprintf('... 40 wakeups in %.1f s (1 s delay: at least 40 s)', $fast));
$lock->query_safe('SELECT pg_advisory_unlock(4040)');
$lock->quit;
tt_wait_job($node, $job, user => 'alice', tasks => 1);
tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => 'alice');

tt_sql($node, q{ALTER SYSTEM RESET ALL; SELECT pg_reload_conf()});
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');
tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
