
# Issue 9, defect 3 (the tracker's side): every task session is started with
# client_encoding set to the task's database encoding, so neither the
# role's settings (ALTER ROLE ... SET client_encoding) nor the server's
# environment (PGCLIENTENCODING) changes the bytes a result holds; and a
# task that sets client_encoding itself does not get rows in another
# encoding stored: its statement ran, so it does not run again, and it ends
# permanently_failed with 22021 (before: it succeeded with wrongly encoded
# bytes in its result).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

# the server's environment asks for another encoding
my $node;
{
	local $ENV{PGCLIENTENCODING} = 'SQL_ASCII';
	$node = tt_node('session_encoding');
}
tt_create_role($node, 'alice');
tt_sql($node, q{
ALTER ROLE alice SET client_encoding = 'LATIN1';
CREATE DATABASE dl1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
GRANT CREATE ON DATABASE dl1 TO alice;
});
tt_sql($node, 'CREATE EXTENSION task_tracker', dbname => 'dl1');

# UTF8 database: a character LATIN1 lacks (the euro sign) arrives intact
tt_sql($node, q{SELECT task_tracker.assign_task(190, 0, $$SELECT chr(233) || chr(8364) AS v$$)},
	user => 'alice');
tt_wait_job($node, 190, user => 'alice', tasks => 1);
is(tt_sql($node, 'SELECT status FROM task_tracker.tasks WHERE job_id = 190'),
	'succeeded', 'UTF8 database: the task succeeded despite the role\'s client_encoding');
is(tt_sql($node, q{SELECT encode(convert_to(v, 'UTF8'), 'hex') FROM task_tracker.task_result(190, 0) AS t(v text)},
		user => 'alice'),
	'c3a9e282ac', 'UTF8 database: the result holds the right bytes');

# LATIN1 database: the result is in LATIN1, read back as the same character
tt_sql($node, q{SELECT task_tracker.assign_task(191, 0, $$SELECT convert_from('\xe9'::bytea, 'LATIN1') AS v$$)},
	user => 'alice', dbname => 'dl1');
tt_wait_job($node, 191, user => 'alice', tasks => 1, dbname => 'dl1');
is(tt_sql($node, q{SELECT encode(convert_to(v, 'LATIN1'), 'hex') FROM task_tracker.task_result(191, 0) AS t(v text)},
		user => 'alice', dbname => 'dl1'),
	'e9', 'LATIN1 database: the result holds the right character');

# a task that changes client_encoding before its row is sent: a procedure's
# OUT value (a CALL runs as it is, not as COPY), converted to LATIN1
tt_sql($node, q{CREATE PROCEDURE public.latin(OUT v text) LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('client_encoding', 'LATIN1', false);
	v := chr(233);
END $$});
tt_sql($node, q{SELECT task_tracker.assign_task(192, 0, 'CALL public.latin(NULL)')},
	user => 'alice');
tt_wait_job($node, 192, user => 'alice', tasks => 1);
is(tt_sql($node, q{SELECT status || ' ' || attempts || ' ' || error_sqlstate FROM task_tracker.tasks WHERE job_id = 192}),
	'permanently_failed 1 22021', 'a task that changed client_encoding is not kept, and not run again');
like(tt_sql($node, q{SELECT error FROM task_tracker.tasks WHERE job_id = 192}),
	qr/the task changed client_encoding to LATIN1; its rows must arrive in its database's encoding, UTF8/,
	'the error says why');

tt_cleanup_and_check($node, [ [ 190, 'alice', 'postgres' ], [ 191, 'alice', 'dl1' ],
	[ 192, 'alice', 'postgres' ] ]);
$node->stop;
done_testing();
