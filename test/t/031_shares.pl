
# Copyright: task_tracker authors.
#
# What all users share cannot be exhausted by one (issue 9, defect 7, worker
# side):
#
#   citus.max_tracked_tasks_per_user     -> a user past its share gets 53400
#                                           naming the setting; another user
#                                           and a superuser can still assign;
#                                           a batch is all or nothing; a
#                                           cleanup gives the share back
#   citus.task_result_memory lowered     -> in-memory results restored at a
#   across a restart                        start go to result files instead
#                                           of exceeding it, and read the same
#   the text and result area             -> hard bound: long query texts run
#                                           into 53200, the area does not grow
#                                           without end

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('shares', conf => "citus.max_tracked_tasks_per_node = 64\n"
	  . "citus.max_tracked_tasks_per_user = 4\n");
tt_create_role($node, 'alice');
tt_create_role($node, 'bob');
is(tt_sql($node, 'SHOW citus.max_tracked_tasks_per_user'), '4', 'the per-user share is a setting');

# --- the per-user share ---------------------------------------------------
tt_sql($node, q{SELECT task_tracker.assign_tasks(1, '{0,1,2}', ARRAY['SELECT 1','SELECT 2','SELECT 3'])},
	user => 'alice');
tt_expect_error($node,
	q{SELECT task_tracker.assign_tasks(2, '{0,1}', ARRAY['SELECT 1','SELECT 2'])},
	'53400', qr/user's share of the task table is full/, 'a batch past the share: 53400',
	user => 'alice');
my ($rc, $out, $err) = tt_psql($node,
	q{SELECT task_tracker.assign_tasks(2, '{0,1}', ARRAY['SELECT 1','SELECT 2'])},
	user => 'alice', verbose => 1);
like($err, qr/citus\.max_tracked_tasks_per_user/, '... naming the setting');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 2}), '0',
	'... and nothing of the batch is assigned');
tt_sql($node, q{SELECT task_tracker.assign_task(2, 0, 'SELECT 4')}, user => 'alice');
tt_expect_error($node, q{SELECT task_tracker.assign_task(2, 1, 'SELECT 5')},
	'53400', qr/user's share of the task table is full/, 'the 5th task of alice: 53400',
	user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_tasks(3, '{0,1,2,3}', ARRAY['SELECT 1','SELECT 2','SELECT 3','SELECT 4'])},
	user => 'bob');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE user_name = 'bob'}), '4',
	'bob still gets his whole share');
tt_sql($node, q{SELECT task_tracker.assign_tasks(4, '{0,1,2,3,4,5}', ARRAY['SELECT 1','SELECT 2','SELECT 3','SELECT 4','SELECT 5','SELECT 6'])});
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE job_id = 4}), '6',
	'a superuser is held to the node capacity only');
tt_wait_job($node, $_->[0], user => $_->[1]) for ([1, 'alice'], [2, 'alice'], [3, 'bob'], [4, undef]);
tt_sql($node, 'SELECT task_tracker.cleanup_job(1)', user => 'alice');
tt_sql($node, q{SELECT task_tracker.assign_task(5, 0, 'SELECT 6')}, user => 'alice');
is(tt_sql($node, q{SELECT count(*) FROM task_tracker.tasks WHERE user_name = 'alice'}), '2',
	'a cleanup gives the share back');
tt_wait_job($node, 5, user => 'alice');
tt_sql($node, "SELECT task_tracker.cleanup_job($_->[0])", user => $_->[1])
  for ([2, 'alice'], [3, 'bob'], [4, undef], [5, 'alice']);

# --- a lowered citus.task_result_memory at a restart ----------------------
tt_sql($node, q{SELECT task_tracker.assign_tasks(6, '{0,1,2}',
	ARRAY['SELECT 10 AS v', 'SELECT 20 AS v', 'SELECT 30 AS v'])});
tt_wait_job($node, 6, tasks => 3);
is(join(',', tt_job_dirs($node)), '', 'small results are kept in memory, no file');
$node->stop('fast');
$node->append_conf('postgresql.conf', "citus.task_result_memory = 0\n");
my $logpos = tt_log_position($node);
$node->start;
$node->wait_for_log(qr/task tracker restored 3 tasks from the last clean shutdown/, $logpos);
my @files = glob($node->data_dir . '/pg_task_tracker/job_6/task_*');
is(scalar(@files), 3, 'restored results that do not fit in citus.task_result_memory go to files');
is(tt_sql($node, q{SELECT string_agg(v::text, ',' ORDER BY v) FROM (
	SELECT * FROM task_tracker.task_result(6, 0) AS t(v int) UNION ALL
	SELECT * FROM task_tracker.task_result(6, 1) AS t(v int) UNION ALL
	SELECT * FROM task_tracker.task_result(6, 2) AS t(v int)) r}),
	'10,20,30', '... and read the same');
tt_sql($node, 'SELECT task_tracker.cleanup_job(6)');

# --- the hard bound of the text area --------------------------------------
# With citus.task_result_memory = 0 the area may hold its first segment and
# the text allowance (16 MB for 64 tasks); 40 query texts of 1 MB do not fit.
my $assigned = tt_sql($node, q{
	DO $$
	DECLARE
		n int := 0;
	BEGIN
		FOR i IN 0..39 LOOP
			BEGIN
				PERFORM task_tracker.assign_task(7, i,
					'SELECT length(''' || repeat('x', 1000000) || ''')');
				n := n + 1;
			EXCEPTION WHEN OTHERS THEN
				RAISE NOTICE 'stopped at % with %: %', i, SQLSTATE, SQLERRM;
				EXIT;
			END;
		END LOOP;
		PERFORM set_config('tt.assigned', n::text, false);
	END $$;
	SELECT current_setting('tt.assigned')});
ok($assigned >= 8 && $assigned < 40, "long query texts stop at the area's bound ($assigned of 40 assigned)");
($rc, $out, $err) = tt_psql($node,
	q{SELECT task_tracker.assign_task(7, 40, 'SELECT length(''' || repeat('x', 1000000) || ''')')},
	verbose => 1);
like($err, qr/ERROR:  53200: out of shared memory for task query texts/, '... with 53200');
tt_wait_job($node, 7);
tt_sql($node, 'SELECT task_tracker.cleanup_job(7)');
is(tt_sql($node, q{SELECT FROM task_tracker.assign_task(8, 0, 'SELECT length(''' || repeat('x', 1000000) || ''')');
	SELECT count(*) FROM task_tracker.tasks WHERE job_id = 8}),
	'1', 'after a cleanup the memory is there again');
tt_wait_job($node, 8);
tt_sql($node, 'SELECT task_tracker.cleanup_job(8)');

tt_check_no_leftovers($node);
$node->stop;
done_testing();
