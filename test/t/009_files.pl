
# Result files live under $PGDATA/pg_task_tracker/job_<id>/, are readable by
# the server's OS user only, and cleanup_job leaves no file behind.

use strict;
use warnings;

use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# results go to files whatever their size (in-memory results: 050_lifecycle.pl)
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
done_testing();
