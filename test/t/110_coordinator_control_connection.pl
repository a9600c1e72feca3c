# Copyright: task_tracker authors.
#
# Coordinator + two workers: the control connection (issue 12).  A job asks
# for one idle connection per node beside its task connections; it counts
# in the coordinator's connection budget (task_tracker.connection_pool shows
# it, in_use and idle), and a cancel goes over it: the workers see no new
# connection from the coordinator between the cancel and the end of the
# cleanup, under both executors, even in the session's first job.  With a
# budget of one connection per node there is no room for it: the session
# keeps to its one connection, and a cancel still works (over a connection
# set up for it, as before).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1, conf => "log_connections = on\n") } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;

# 2 remote statements per worker
my $long_job = qq{SELECT count(*) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep(300)', s) AS query, ARRAY[p] AS placements
	  FROM generate_series(1, 2) s, unnest(ARRAY['$place[0]', '$place[1]']) p\$\$) AS t(n int);
};
my $sleeping = "SELECT count(*) FROM pg_stat_activity "
  . "WHERE query LIKE '%pg_sleep(300)%' AND query NOT LIKE '%assign_task%' AND pid <> pg_backend_pid()";
my $coord_conns = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker coordinator'";
my $new_coord_conn = qr/connection authorized: .*application_name=task_tracker coordinator/;

sub pool_row
{
	my ($w) = @_;
	return tt_sql($coord,
		'SELECT in_use, idle FROM task_tracker.connection_pool WHERE node_port = ' . $w->port);
}

# cancel a job of 2 x pg_sleep per worker in a new session; $with_control:
# whether the session should hold a control connection to each worker
sub cancel_job
{
	my ($executor, $with_control) = @_;
	my $what = "$executor, " . ($with_control ? 'control connection' : 'no room for one');
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	# no liveness probe of a silent node (it would leave a spare connection)
	$bg->query_until(qr/go/,
		"\\echo go\nSET citus.node_connection_timeout = '10min';\n"
		  . "SET citus.task_executor = '$executor';\n$long_job");
	for my $w (@workers)
	{
		ok($w->poll_query_until('postgres', "SELECT ($sleeping) = 2"),
			"$what: remote statements running on " . $w->name);
	}
	# real-time: two task connections per node; task-tracker: one
	my $task_conns = $executor eq 'real-time' ? 2 : 1;
	my $expect = $with_control ? $task_conns + 1 : $task_conns;
	for my $w (@workers)
	{
		# the control connection is set up beside the job, idle
		ok( $coord->poll_query_until(
				'postgres',
				'SELECT in_use = ' . $expect . ' AND idle = ' . ($with_control ? 1 : 0)
				  . ' FROM task_tracker.connection_pool WHERE node_port = ' . $w->port),
			"$what: the budget counts $expect connections to " . $w->name . ' (' . pool_row($w) . ')');
		is(tt_sql($w, $coord_conns), $expect,
			"$what: " . $w->name . " sees as many coordinator connections");
	}
	my @pos = map { tt_log_position($_) } @workers;
	my $pid = tt_sql($coord, "SELECT pid FROM task_tracker.jobs WHERE state = 'running'");
	tt_sql($coord, "SELECT pg_cancel_backend($pid)");
	$bg->query("\\echo done");
	like($bg->{stderr}, qr/canceling statement due to user request/, "$what: the job was canceled");
	for my $i (0, 1)
	{
		my $w = $workers[$i];
		ok($w->poll_query_until('postgres', "SELECT ($sleeping) = 0"),
			"$what: remote statements stopped on " . $w->name);
		my $log = slurp_file($w->logfile, $pos[$i]);
		my $new = () = $log =~ /$new_coord_conn/g;
		if ($with_control)
		{
			is($new, 0, "$what: no new coordinator connection to " . $w->name . ' at the cancel');
		}
		else
		{
			cmp_ok($new, '>=', 1, "$what: the cancel connected to " . $w->name . ' (no control connection)');
		}
	}
	is($bg->query('SELECT 1'), '1', "$what: the session goes on");
	$bg->quit;
	ok($coord->poll_query_until('postgres', 'SELECT coalesce(sum(in_use), 0) = 0 FROM task_tracker.connection_pool'),
		"$what: every slot given back when the session ends");
}

cancel_job($_, 1) for ('real-time', 'task-tracker');

# a budget of one connection per node: no room for a control connection
$coord->append_conf('postgresql.conf', "citus.max_shared_pool_size = 1\n");
$coord->reload;
ok($coord->poll_query_until('postgres', q{SELECT current_setting('citus.max_shared_pool_size') = '1'}),
	'budget of 1 in force');
cancel_job('task-tracker', 0);

$coord->append_conf('postgresql.conf', "citus.max_shared_pool_size = 0\n");
$coord->reload;
tt_check_no_leftovers($_, $_->name) for @workers;
$coord->stop;
$_->stop for @workers;
done_testing();
