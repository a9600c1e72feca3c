
# Role and database names with quotes, spaces, '=', backslashes and
# non-ASCII letters can assign and run tasks; the task really runs as that
# role in that database, and no name can inject connection options
# (SPEC §8).  This file is UTF-8; names are handled as UTF-8 bytes.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('names');

my @roles = (
	q{o'brien = \ ü},
	q{we"ird\\role dbname=postgres user=postgres},
	q{Ünïcødé Ωmega},
);
my $db = q{tt db 'x' = \ "ü" host=/nonexistent};
my $qdb = tt_quote_ident($db);

tt_sql($node, "CREATE DATABASE $qdb TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => $db);
tt_sql($node, 'CREATE TABLE public.t (who text)', dbname => $db);

my $job = 80;
for my $role (@roles)
{
	tt_create_role($node, $role);
	my $qr = tt_quote_ident($role);
	tt_sql($node, "GRANT CONNECT, CREATE ON DATABASE $qdb TO $qr; GRANT SELECT, INSERT ON public.t TO $qr",
		dbname => $db);

	tt_sql($node, q{SELECT task_tracker.assign_tasks(} . $job . q{, '{0,1}', ARRAY[
		'SELECT current_user, session_user, current_database()',
		'INSERT INTO public.t SELECT current_user'])},
		user => $role, dbname => $db);
	tt_wait_job($node, $job, user => $role, dbname => $db, tasks => 2);

	is( tt_sql($node,
			"SELECT cu, su, db FROM task_tracker.task_result($job, 0) AS r(cu name, su name, db name)",
			user => $role, dbname => $db),
		"$role|$role|$db",
		"task runs as role [$role] in database [$db]");
	is( tt_sql($node, "SELECT user_name, database_name, status FROM task_tracker.tasks WHERE job_id = $job ORDER BY task_id LIMIT 1"),
		"$role|$db|succeeded",
		"tasks view shows role [$role] and the database");
	is( tt_sql($node, 'SELECT count(*) FROM public.t WHERE who = current_user', user => $role, dbname => $db),
		'1', "INSERT task ran as [$role]");
	is(tt_sql($node, 'SELECT task_tracker.task_status(' . $job . ', 1)', user => $role, dbname => $db),
		'succeeded', 'task_status works for that role');

	tt_sql($node, "SELECT task_tracker.cleanup_job($job)", user => $role, dbname => $db);
	$job++;
}

# the same odd role in the postgres database
my $role = $roles[0];
tt_sql($node, qq{SELECT task_tracker.assign_task(90, 0, 'SELECT current_user, current_database()')},
	user => $role);
tt_wait_job($node, 90, user => $role, tasks => 1);
is( tt_sql($node, 'SELECT u, d FROM task_tracker.task_result(90, 0) AS r(u name, d name)', user => $role),
	"$role|postgres", 'odd role in the postgres database');
tt_sql($node, 'SELECT task_tracker.cleanup_job(90)', user => $role);

# no backend ever ran as a superuser on the roles' behalf
is( tt_sql($node, 'SELECT count(*) FROM public.t WHERE who = current_user', dbname => $db),
	'0', 'no task ran as the superuser');

tt_check_no_leftovers($node);
$node->stop;
done_testing();
