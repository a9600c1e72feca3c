
# Connection set-up refused for a transient reason must not cost a task an
# attempt (README "Operations").
#
# The tracker runs each task over a session it opens as the task's owner.
# Under session churn that connection can be refused although nothing is
# wrong with the task: the server has no slot left (53300: "sorry, too many
# clients already", or the remaining slots are reserved for superusers), or
# the listen queue of the Unix socket is full (EAGAIN: "Resource temporarily
# unavailable").  The tracker then connects again after a back-off (a
# deadline of its one wait), for up to citus.node_connection_timeout after
# the first refusal, within the same attempt; only a refusal past that limit
# fails the attempt, with the server's message.  Other failures (a role that
# cannot log in, ...) fail the attempt at once, as before.
#
# The worker has max_connections = 6 with 3 of them reserved for
# superusers: three sessions held open by the test fill every slot alice
# may use, while the test itself (a superuser) still gets in.
#
# A. slots full: alice's tasks wait ("scheduled", attempt 1, the refusal in
#    their error, exactly as libpq words it); a waiting task is canceled by
#    cleanup_job at once; once the sessions are released the other succeeds
#    with attempts = 1;
# D. the postmaster stopped (SIGSTOP) and its listen queue filled: the
#    tracker's connect() fails with EAGAIN, the task waits, and succeeds with
#    attempts = 1 once the postmaster runs again;
# S. pg_ctl stop -m fast while a task waits: its attempt is given back, it is
#    saved queued and runs after the start with attempts = 1;
# B. slots full for longer than citus.node_connection_timeout (1 s here):
#    each attempt fails after the limit, the task ends permanently_failed
#    after citus.task_max_attempts attempts with 08001 and the server's
#    message, and the log says the tracker gave up;
# C. a NOLOGIN role: its task fails each attempt at once, with exactly the
#    server's message psql gets, and no retry.

use strict;
use warnings;

use Errno qw(EAGAIN);
use IO::Handle;
use Socket;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $conf = q{
max_connections = 6
superuser_reserved_connections = 3
citus.max_running_tasks_per_node = 2
citus.node_connection_timeout = '60s'
};
my $node = tt_node('churn', conf => $conf);
tt_create_role($node, 'alice');
my $sock = $node->host . '/.s.PGSQL.' . $node->port;
# The server's refusal, as libpq words it at its default verbosity, with
# the socket it tried.
my $refused_re =
  qr/^connection to server on socket "\Q$sock\E" failed: FATAL:  (?:remaining connection slots are reserved for non-replication superuser connections|sorry, too many clients already)$/;

my $pm_stopped;    # the postmaster's pid while it is stopped (SIGSTOP)
my @held;          # sessions held open

END
{
	kill 'CONT', $pm_stopped if $pm_stopped;
}

sub no_tracker_sessions
{
	my ($what) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'task_tracker'"),
		"$what: the tracker holds no session");
	return;
}

# hold($n): open $n superuser sessions and keep them open
sub hold
{
	my ($n) = @_;
	push @held, $node->background_psql('postgres') for 1 .. $n;
	is( tt_sql($node,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"),
		scalar(@held), "$n sessions hold the slots alice may use");
	return;
}

sub release
{
	eval { $_->quit; } for @held;
	@held = ();
	return;
}

# assign($job, $task, $query, $role): assign through the superuser's reserved
# slot, as $role
sub assign
{
	my ($job, $task, $query, $role) = @_;
	tt_sql($node, sprintf('SET ROLE %s; SELECT task_tracker.assign_task(%d, %d, %s)',
			$role // 'alice', $job, $task, tt_quote_literal($query)));
	return;
}

sub task_row
{
	my ($job, $cols) = @_;
	return tt_sql($node, "SELECT $cols FROM task_tracker.tasks WHERE job_id = $job AND task_id = 0");
}

my $tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

# ---------------------------------------------------------------- A. no slot left
no_tracker_sessions('A');
hold(3);
assign(1, 0, 'SELECT 42');
assign(3, 0, 'SELECT 3');
ok( tt_poll_until($node, q{SELECT count(*) = 2 FROM task_tracker.tasks
	WHERE job_id IN (1, 3) AND status = 'scheduled' AND attempts = 1 AND error_sqlstate = '08001'}, 30),
	'A: refused for want of a slot, both tasks wait in their first attempt');
like(task_row(1, 'error'), $refused_re,
	'A: ... the error says why, as libpq words it (no SQLSTATE, no LOCATION line)');
is(task_row(1, 'status || attempts'), 'scheduled1', 'A: ... and the task keeps waiting');

tt_sql($node, 'SELECT task_tracker.cleanup_job(3)');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks WHERE job_id = 3'), '0',
	'A: cleanup_job drops a task waiting to connect at once');

release();
tt_wait_job($node, 1, tasks => 1);
is(task_row(1, q{status || '|' || attempts || '|' || coalesce(error, '-')}), 'succeeded|1|-',
	'A: slots released: the task succeeds in its first attempt, the refusals cost none');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(1, 0) AS t(x int)'), '42', 'A: ... with its result');

# ---------------------------------------------------------------- D. listen queue full (EAGAIN)
no_tracker_sessions('D');
my $alice = $node->background_psql('postgres', extra_params => [ '-U', 'alice' ]);
my $eagain = do { local $! = EAGAIN; "$!" };
my $pm = $node->{_pid};
kill('STOP', $pm) or die "cannot stop the postmaster: $!";
$pm_stopped = $pm;
my @fakes;
my $full = 0;
for (1 .. 100000)
{
	socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
	$s->blocking(0);
	if (!connect($s, pack_sockaddr_un($sock)))
	{
		die "connect $sock: $!" unless $!{EAGAIN};
		$full = 1;
		last;
	}
	push @fakes, $s;
}
ok($full, 'D: the postmaster stopped, its listen queue is full after ' . scalar(@fakes) . ' connections');
$alice->query_safe(q{SELECT task_tracker.assign_task(4, 0, 'SELECT 4')});
# wait inside alice's session (nobody can connect now)
$alice->query_safe(qq{DO \$\$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
	WHILE NOT EXISTS (SELECT FROM task_tracker.tasks
			WHERE job_id = 4 AND strpos(error, '$eagain') > 0) LOOP
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'the task was not refused with EAGAIN';
		END IF;
		PERFORM pg_sleep(0.01);
	END LOOP;
END
\$\$});
my ($d_status, $d_error) = split /\|/,
  $alice->query_safe(q{SELECT status || attempts || '|' || error FROM task_tracker.tasks WHERE job_id = 4}), 2;
is($d_status, 'scheduled1', 'D: refused with EAGAIN, the task waits in its first attempt');
like($d_error, qr/^connection to server on socket "\Q$sock\E" failed: \Q$eagain\E$/m,
	"D: ... its error is libpq's: $eagain");
close($_) for @fakes;
@fakes = ();
kill('CONT', $pm);
$pm_stopped = undef;
$alice->query_safe('SELECT count(*) FROM task_tracker.wait_for_tasks(4, 60000)');
is($alice->query_safe(q{SELECT status || '|' || attempts FROM task_tracker.tasks WHERE job_id = 4}),
	'succeeded|1', 'D: the postmaster runs again: the task succeeds in its first attempt');
is($alice->query_safe('SELECT * FROM task_tracker.task_result(4, 0) AS t(x int)'), '4', 'D: ... with its result');
$alice->quit;

# ---------------------------------------------------------------- S. stop while a task waits
no_tracker_sessions('S');
hold(3);
assign(5, 0, 'SELECT 5');
ok( tt_poll_until($node, q{SELECT status = 'scheduled' AND error_sqlstate = '08001'
	FROM task_tracker.tasks WHERE job_id = 5}, 30),
	'S: a task waits for a slot');
my $pos = tt_log_position($node);
$node->stop('fast');
release();
ok($node->log_contains(qr/task tracker saved \d+ tasks/, $pos), 'S: the stop saved the table');

# ---------------------------------------------------------------- B. refused past the limit
$node->append_conf('postgresql.conf', "citus.node_connection_timeout = '1s'\ncitus.task_max_attempts = 2\n");
$pos = tt_log_position($node);
$node->start;
tt_wait_job($node, 5, tasks => 1);
is(task_row(5, q{status || '|' || attempts}), 'succeeded|1',
	'S: after the start the waiting task ran, the attempt it waited in given back');
$tracker = tt_sql($node, 'SELECT pid FROM task_tracker.tracker');

no_tracker_sessions('B');
hold(3);
assign(2, 0, 'SELECT 2');
tt_wait_job($node, 2, tasks => 1);
is(task_row(2, q{status || '|' || attempts || '|' || error_sqlstate}), 'permanently_failed|2|08001',
	'B: refused for longer than citus.node_connection_timeout: permanently failed after citus.task_max_attempts attempts');
like(task_row(2, 'error'), $refused_re, 'B: ... with the server\'s message');
is(task_row(2, q{finished_at - started_at >= interval '1 s'}), 't',
	'B: ... its last attempt tried for citus.node_connection_timeout');
ok( $node->log_contains(
		qr/task tracker gave up connecting as "alice" for task \(job 2, task 0\): refused \d+ times within citus\.node_connection_timeout \(1000 ms\)/,
		$pos),
	'B: ... and the log says the tracker gave up');
release();

# ---------------------------------------------------------------- C. not transient: at once, as before
tt_sql($node, 'CREATE ROLE carol NOLOGIN');
assign(6, 0, 'SELECT 6', 'carol');
tt_wait_job($node, 6, tasks => 1);
my (undef, undef, $psql_err) = tt_psql($node, 'SELECT 1', user => 'carol');
$psql_err =~ s/^psql: error: //;
$psql_err =~ s/\s+$//;
is(task_row(6, q{status || '|' || attempts || '|' || error_sqlstate}), 'permanently_failed|2|08001',
	'C: a NOLOGIN role: every attempt fails');
is(task_row(6, 'error'), $psql_err, "C: ... with exactly the server's message psql gets ($psql_err)");
ok(!$node->log_contains(qr/gave up connecting as "carol"/, $pos), 'C: ... at once, without retrying');

# ---------------------------------------------------------------- the end
tt_sql($node, "SELECT task_tracker.cleanup_job(j) FROM unnest('{1,2,4,5,6}'::bigint[]) j");
is(tt_sql($node, 'SELECT pid FROM task_tracker.tracker'), $tracker, 'tracker pid unchanged');
tt_no_crash_in_log($node);
tt_check_no_leftovers($node);
$node->stop;
done_testing();
