# Copyright: task_tracker authors.
#
# Coordinator + two workers: Ctrl-C (pg_cancel_backend), statement_timeout
# and pg_terminate_backend stop a running job under both executors and
# leave no remote query, connection in use, task or result file behind.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my @workers = map { tt_node("worker$_", quiet => 1) } (1, 2);
my @place = map { $_->host . ':' . $_->port } @workers;
tt_add_node($coord, $_) for @workers;
tt_create_role($coord, 'bob');
tt_create_role($_, 'bob') for @workers;

my $long_job = qq{SELECT count(*) FROM task_tracker.run_job(
	\$\$SELECT format('SELECT %s FROM pg_sleep(300)', s) AS query, ARRAY[p] AS placements
	  FROM generate_series(1, 4) s, unnest(ARRAY['$place[0]', '$place[1]']) p\$\$) AS t(n int);
};

my $sleeping = "SELECT (SELECT count(*) FROM pg_stat_activity "
  . "WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid())";

sub workers_busy
{
	my ($what) = @_;
	for my $i (0, 1)
	{
		ok($workers[$i]->poll_query_until('postgres', "$sleeping > 0"),
			"$what: remote queries running on worker " . ($i + 1));
	}
}

sub workers_clean
{
	my ($what) = @_;
	for my $i (0, 1)
	{
		my $w = $workers[$i];
		ok($w->poll_query_until('postgres', "$sleeping = 0"),
			"$what: remote queries stopped on worker " . ($i + 1));
		is(tt_sql($w, 'SELECT count(*) FROM task_tracker.tasks'), '0',
			"$what: no tasks left on worker " . ($i + 1));
		my @dirs = tt_job_dirs($w);
		is(scalar(@dirs), 0, "$what: no result files left on worker " . ($i + 1));
		is(tt_sql($w, "SELECT count(*) FROM pg_stat_activity WHERE state NOT IN ('idle') "
				. "AND application_name = 'task_tracker coordinator'"),
			'0', "$what: no coordinator connection busy on worker " . ($i + 1));
	}
	ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM task_tracker.jobs'),
		"$what: job gone from task_tracker.jobs");
}

for my $executor ('real-time', 'task-tracker')
{
	for my $how ('cancel', 'terminate')
	{
		my $what = "$executor, pg_${how}_backend";
		my $bg = $coord->background_psql('postgres', on_error_stop => 0,
			extra_params => [ '-U', 'bob' ]);
		$bg->query_until(qr/go/, "\\echo go\nSET citus.task_executor = '$executor';\n$long_job");
		workers_busy($what);
		ok($coord->poll_query_until('postgres',
				"SELECT count(*) = 1 FROM task_tracker.jobs WHERE state = 'running' AND user_name = 'bob'"),
			"$what: job running");
		my $pid = tt_sql($coord, "SELECT pid FROM task_tracker.jobs WHERE user_name = 'bob'");
		tt_sql($coord, "SELECT pg_${how}_backend($pid)");
		workers_clean($what);
		if ($how eq 'cancel')
		{
			$bg->query("\\echo done");
			like($bg->{stderr}, qr/canceling statement due to user request/, "$what: the job was canceled");
			is($bg->query('SELECT 1'), '1', "$what: the session goes on");
			$bg->quit;
		}
		else
		{
			$bg->{run}->finish;
		}
	}

	# statement_timeout
	my $what = "$executor, statement_timeout";
	my ($rc, $out, $err) = tt_psql($coord,
		"SET citus.task_executor = '$executor';\nSET statement_timeout = '1s';\n$long_job",
		user => 'bob');
	like($err, qr/canceling statement due to statement timeout/, "$what: the job timed out");
	workers_clean($what);

	# the same session runs the next job normally
	is(tt_sql($coord, "SET citus.task_executor = '$executor';\n"
			. "SELECT count(*) FROM task_tracker.run_job(\$\$SELECT 'SELECT 1' AS query, ARRAY['$place[0]', '$place[1]'] AS placements\$\$) AS t(n int)",
			user => 'bob'),
		'1', "$executor: a job after the cancels");
}

for my $i (0, 1)
{
	tt_check_no_leftovers($workers[$i], "worker " . ($i + 1));
}
$_->stop for ($coord, @workers);
done_testing();
