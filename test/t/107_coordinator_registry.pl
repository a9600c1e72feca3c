# Copyright: task_tracker authors.
#
# The coordinator's backend-local copy of the node registry:
#
# A. (issue 9, defect 11) a session's first load of the registry is cut
#    short by a cancel while it waits for a lock on the registry table; the
#    session's next job must still see every registered node (the copy was
#    marked valid before it was read, so it stayed empty: "not registered").
# B. a registry change (add_node, set_node_active, remove_node) made in one
#    session is seen by another session, which already holds a copy, at its
#    next job.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $workers[0]);

sub job_on
{
	my ($placement) = @_;
	return "SELECT n FROM task_tracker.run_job(\$\$SELECT 'SELECT 7' AS query, ARRAY['$placement'] AS placements\$\$) AS t(n int);";
}

# ---------------------------------------------------------------- A
my $b = $coord->background_psql('postgres', on_error_stop => 0);
my $bpid = $b->query_safe('SELECT pg_backend_pid()');
my $locker = $coord->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE task_tracker.node_registry IN ACCESS EXCLUSIVE MODE;');

$b->query_until(qr/started\n/, "\\echo started\n" . job_on($place[0]) . "\n");
ok( $coord->poll_query_until('postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $bpid"),
	'A: the first load of the registry waits for the lock');
tt_sql($coord, "SELECT pg_cancel_backend($bpid)");
$b->{stderr} = '';
my $out = $b->query('SELECT 1 AS after_cancel');
like($b->{stderr}, qr/canceling statement due to user request/, 'A: the job is canceled during the load');
is($out, '1', 'A: the session goes on');
$locker->query_safe('ROLLBACK');
$locker->quit;

$b->{stderr} = '';
$out = $b->query(job_on($place[0]));
is($b->{stderr}, '', 'A: the next job of the session sees the registered node')
  or diag($b->{stderr});
is($out, '7', 'A: ... and runs');

# ---------------------------------------------------------------- B
# $b holds a valid copy now; every change below comes from other sessions
sub b_job
{
	my ($placement) = @_;
	$b->{stderr} = '';
	my $o = $b->query("\\set VERBOSITY verbose\n" . job_on($placement));
	return ($o, $b->{stderr});
}

my ($o, $e) = b_job($place[1]);
like($e, qr/42704: node \Q$place[1]\E is not registered/, 'B: worker 2 is not registered yet');

tt_add_node($coord, $workers[1]);
($o, $e) = b_job($place[1]);
is($e, '', 'B: add_node in another session: seen at the next job') or diag($e);
is($o, '7', 'B: ... which runs on the new node');

tt_sql($coord, sprintf('SELECT task_tracker.set_node_active(%s, %d, false)',
		tt_quote_literal($workers[1]->host), $workers[1]->port));
($o, $e) = b_job($place[1]);
like($e, qr/55000: node \Q$place[1]\E is not active/, 'B: set_node_active(false) in another session: seen');

tt_sql($coord, sprintf('SELECT task_tracker.set_node_active(%s, %d, true)',
		tt_quote_literal($workers[1]->host), $workers[1]->port));
($o, $e) = b_job($place[1]);
is($o, '7', 'B: set_node_active(true) in another session: seen') or diag($e);

tt_sql($coord, sprintf('SELECT task_tracker.remove_node(%s, %d)',
		tt_quote_literal($workers[1]->host), $workers[1]->port));
($o, $e) = b_job($place[1]);
like($e, qr/42704: node \Q$place[1]\E is not registered/, 'B: remove_node in another session: seen');
($o, $e) = b_job($place[0]);
is($o, '7', 'B: the other node still runs jobs') or diag($e);
$b->quit;

tt_check_no_leftovers($_) for @workers;
$_->stop for ($coord, @workers);
done_testing();
