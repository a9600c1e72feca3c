# Job expiry, roles and databases that cannot run tasks, and the library
# not being preloaded.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('lifecycle', conf => "citus.task_max_attempts = 2\n");

# ---- a role that cannot log in, and a role without CONNECT
tt_sql($node, q{
CREATE ROLE nologin_user NOLOGIN;
CREATE ROLE noconnect_user LOGIN;
CREATE DATABASE closed_db;
REVOKE CONNECT ON DATABASE closed_db FROM PUBLIC;
GRANT CONNECT ON DATABASE closed_db TO noconnect_user;
});
$node->safe_psql('closed_db', 'CREATE EXTENSION task_tracker');

# nologin_user assigns through SET ROLE: the task must run as that role and so fail
tt_sql($node, q{SET ROLE nologin_user; SELECT task_tracker.assign_task(1, 1, 'SELECT 1')});
ok(tt_wait_job($node, 1), 'task of a NOLOGIN role finished');
my $row = tt_sql($node,
	"SELECT status, attempts, error_sqlstate, error LIKE '%not permitted to log in%' FROM task_tracker.tasks WHERE job_id = 1");
is($row, 'permanently_failed|2|08001|t', 'NOLOGIN role: permanently_failed with the login error kept');

# noconnect_user loses CONNECT between assignment and the run: the tracker
# must not connect on its behalf.
tt_sql($node, q{REVOKE CONNECT ON DATABASE closed_db FROM noconnect_user});
$node->safe_psql('closed_db',
	q{SET ROLE noconnect_user; SELECT task_tracker.assign_task(2, 1, 'SELECT current_user')});
ok(tt_wait_job($node, 2, dbname => 'closed_db'), 'task of a role without CONNECT finished');
$row = $node->safe_psql('closed_db',
	"SELECT status, error LIKE '%permission denied for database%' FROM task_tracker.tasks WHERE job_id = 2");
is($row, 'permanently_failed|t', 'role without CONNECT: the task fails with permission denied');

# ---- a role dropped while its tasks are queued: block the tracker's only
# slot with a task waiting on an advisory lock we hold
tt_sql($node, q{ALTER SYSTEM SET citus.max_running_tasks_per_node = 1; SELECT pg_reload_conf();});
tt_create_role($node, 'doomed');
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(4242)');
tt_sql($node, q{SELECT task_tracker.assign_task(3, 1, 'SELECT pg_advisory_lock_shared(4242)')});
$node->poll_query_until('postgres',
	"SELECT status = 'running' FROM task_tracker.tasks WHERE job_id = 3 AND task_id = 1")
  or die 'blocking task did not start';
tt_sql($node, q{SELECT task_tracker.assign_task(4, 1, 'SELECT 1')}, user => 'doomed');
is(tt_sql($node, 'SELECT status FROM task_tracker.tasks WHERE job_id = 4'),
	'assigned', 'task of the doomed role is queued');
tt_sql($node, 'CREATE DATABASE gone_db');
$node->safe_psql('gone_db', q{CREATE EXTENSION task_tracker; SELECT task_tracker.assign_task(7, 1, 'SELECT 1')});
is(tt_sql($node, 'SELECT status, database_name FROM task_tracker.tasks WHERE job_id = 7'),
	'assigned|gone_db', 'task in the doomed database is queued');
tt_sql($node, 'DROP ROLE doomed');
tt_sql($node, 'DROP DATABASE gone_db');
$locker->query_safe('SELECT pg_advisory_unlock(4242)');
$locker->quit;
ok(tt_wait_job($node, 3), 'blocking task finished');
ok(tt_wait_job($node, 4), 'task of the dropped role finished');
$row = tt_sql($node,
	"SELECT status, error LIKE '%role \"doomed\" does not exist%' FROM task_tracker.tasks WHERE job_id = 4");
is($row, 'permanently_failed|t', 'dropped role: permanently_failed, role named in the error');
ok(tt_wait_job($node, 7), 'task of the dropped database finished');
$row = tt_sql($node,
	"SELECT status, error LIKE '%database \"gone_db\" does not exist%' FROM task_tracker.tasks WHERE job_id = 7");
is($row, 'permanently_failed|t', 'dropped database: permanently_failed, database named in the error');
tt_sql($node, q{ALTER SYSTEM RESET citus.max_running_tasks_per_node; SELECT pg_reload_conf();});

# the tracker keeps working after all that
tt_sql($node, q{SELECT task_tracker.assign_task(5, 1, 'SELECT 41 + 1')});
ok(tt_wait_job($node, 5), 'later task finished');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(5, 1) AS t(x int)'), '42',
	'tracker still runs tasks');

for my $job (1, 3, 4, 5, 7)
{
	tt_sql($node, "SELECT task_tracker.cleanup_job($job)");
}
$node->safe_psql('closed_db', 'SELECT task_tracker.cleanup_job(2)');

# ---- small results stay in shared memory, larger ones go to a file
tt_sql($node, q{SELECT task_tracker.assign_tasks(8, '{1,2}', ARRAY['SELECT g, md5(g::text) FROM generate_series(1, 10) g', 'SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 1000) g'])});
ok(tt_wait_job($node, 8), 'job 8 finished');
is(tt_sql($node, "SELECT count(*), sum(g) FROM task_tracker.task_result(8, 1) AS t(g int, h text)"),
	'10|55', 'small result reads back');
is(tt_sql($node, "SELECT count(*), sum(g), min(length(h)) FROM task_tracker.task_result(8, 2) AS t(g int, h text)"),
	'1000|500500|640', 'large result reads back');
my @files = glob($node->data_dir . '/pg_task_tracker/job_8/*');
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
$node->safe_psql('postgres', 'DROP DATABASE closed_db');
$node->stop;

# ---- the library not preloaded: clear error, nothing else breaks
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION task_tracker');
my ($rc, $out, $err) = $plain->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT task_tracker.assign_task(1, 1, 'SELECT 1')");
isnt($rc, 0, 'assign_task fails without preloading');
like($err, qr/55000: task_tracker must be loaded via shared_preload_libraries/,
	'error names shared_preload_libraries with SQLSTATE 55000');
($rc, $out, $err) = $plain->psql('postgres', 'SELECT count(*) FROM task_tracker.tasks');
like($err, qr/must be loaded via shared_preload_libraries/, 'tasks view says the same');
$plain->stop;

done_testing();
