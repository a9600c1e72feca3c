
# Where a task's result is kept and when it goes: result files live under
# $PGDATA/pg_task_tracker/job_<id>/, are readable by the server's OS user
# only, and cleanup_job leaves no file behind; small results stay in shared
# memory and only larger ones get a file, both survive a restart; a job
# nobody asks about expires with its files.

use strict;
use warnings;

use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# results go to files whatever their size (in-memory results: below)
my $node = tt_node('files', conf => "citus.task_result_inline_size = 0\n");
tt_create_role($node, 'alice');
my $area = $node->data_dir . '/pg_task_tracker';

tt_sql($node, q{SELECT task_tracker.assign_tasks(91, '{0,1,2}', ARRAY[
	'SELECT g, repeat(''x'', 100) FROM generate_series(1, 5000) g',
	'SELECT 1',
	'SELECT 1/0'])}, user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(92, 0, 'SELECT 2')}, user => 'alice');
tt_wait_job($node, 91, user => 'alice', tasks => 3);
tt_wait_job($node, 92, user => 'alice', tasks => 1);

is(join(',', tt_job_dirs($node)), 'job_91,job_92', 'one directory per job');

my @files;
find(sub { push @files, $File::Find::name if -f $_ }, "$area/job_91");
ok(scalar(@files) >= 1, 'job 91 has result files') or diag(`ls -laR $area`);
for my $f (@files)
{
	my $mode = (stat $f)[2] & 07777;
	is(sprintf('%04o', $mode & 0077), '0000', "$f has owner-only permissions");
}
is( tt_sql($node, 'SELECT count(*), sum(g) FROM task_tracker.task_result(91, 0) AS r(g int, x text)',
		user => 'alice'),
	'5000|12502500', 'a bigger result reads back');

tt_sql($node, 'SELECT task_tracker.cleanup_job(91)', user => 'alice');
ok(!-e "$area/job_91", 'job 91 directory removed by cleanup_job');
is(join(',', tt_job_dirs($node)), 'job_92', 'the other job is untouched');
is(tt_sql($node, 'SELECT x FROM task_tracker.task_result(92, 0) AS r(x int)', user => 'alice'),
	'2', 'and its result still reads');

tt_sql($node, 'SELECT task_tracker.cleanup_job(92)', user => 'alice');
tt_check_no_leftovers($node);

# nothing but the (possibly) saved state remains in the area
if (-d $area)
{
	my @left;
	find(sub { push @left, $File::Find::name if -f $_ && $File::Find::name =~ m{/job_} }, $area);
	is(scalar(@left), 0, 'no result file anywhere') or diag("@left");
}

$node->stop;

# ---- small results stay in shared memory, larger ones go to a file
$node = tt_node('memory');
tt_sql($node, q{SELECT task_tracker.assign_tasks(8, '{1,2}', ARRAY['SELECT g, md5(g::text) FROM generate_series(1, 10) g', 'SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 1000) g'])});
ok(tt_wait_job($node, 8), 'job 8 finished');
is(tt_sql($node, "SELECT count(*), sum(g) FROM task_tracker.task_result(8, 1) AS t(g int, h text)"),
	'10|55', 'small result reads back');
is(tt_sql($node, "SELECT count(*), sum(g), min(length(h)) FROM task_tracker.task_result(8, 2) AS t(g int, h text)"),
	'1000|500500|640', 'large result reads back');
@files = glob($node->data_dir . '/pg_task_tracker/job_8/*');
is(scalar(@files), 1, 'only the large result has a file')
  or diag("files: @files");
like($files[0] // '', qr{/task_2\.\d+$}, 'the file is the large task\'s');
ok(tt_sql($node, 'SELECT query_text_bytes FROM task_tracker.tracker') > 0, 'tracker view still reports texts');
# a restart keeps both kinds of result
$node->restart;
is(tt_sql($node, "SELECT count(*), sum(g) FROM task_tracker.task_result(8, 1) AS t(g int, h text)"),
	'10|55', 'small in-memory result survives pg_ctl restart');
is(tt_sql($node, "SELECT count(*), sum(g) FROM task_tracker.task_result(8, 2) AS t(g int, h text)"),
	'1000|500500', 'file result survives pg_ctl restart');
tt_sql($node, 'SELECT task_tracker.cleanup_job(8)');

# ---- job expiry: a job nobody asks about is reaped with its files
tt_sql($node, q{ALTER SYSTEM SET citus.task_tracker_job_expiry = '1s'; SELECT pg_reload_conf();});
tt_sql($node, q{SELECT task_tracker.assign_task(6, 1, 'SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 1000) g')});
ok(tt_wait_job($node, 6), 'job 6 finished');
ok(scalar(grep { $_ eq 'job_6' } tt_job_dirs($node)) == 1, 'job 6 has a result directory');
my $pos = tt_log_position($node);
ok($node->poll_query_until('postgres',
		'SELECT count(*) = 0 FROM task_tracker.tasks WHERE job_id = 6'),
	'expired job is removed by the tracker');
$node->wait_for_log(qr/task tracker removed 1 jobs nobody asked about/, $pos);
is(scalar(grep { $_ eq 'job_6' } tt_job_dirs($node)), 0, 'its directory is gone');
tt_sql($node, q{ALTER SYSTEM RESET citus.task_tracker_job_expiry; SELECT pg_reload_conf();});

tt_check_no_leftovers($node);
$node->stop;
done_testing();
