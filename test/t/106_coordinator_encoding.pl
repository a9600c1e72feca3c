# Copyright: task_tracker authors.
#
# Encodings on the coordinator's connections (issue 9, defect 3): a UTF8
# coordinator database and a LATIN1 worker database of the same name.  Every
# coordinator connection states client_encoding = the coordinator database's
# encoding, so the worker converts both ways: non-ASCII literals of a task
# query arrive as the same characters, non-ASCII rows come back as the same
# characters, a character LATIN1 cannot hold is a clear error (22P05), and a
# role whose settings on the worker say client_encoding = SQL_ASCII changes
# nothing.  Under both executors, and for run_on_workers.
#
# Values are compared as hex bytes (textsend), never through Perl strings.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $coord = tt_node('coordinator', quiet => 1);
my $worker = tt_node('worker', quiet => 1);
my $place = $worker->host . ':' . $worker->port;

# the database "lat": UTF8 on the coordinator, LATIN1 on the worker
$coord->safe_psql('postgres', 'CREATE DATABASE lat');
$worker->safe_psql('postgres',
	"CREATE DATABASE lat TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'");
for my $n ($coord, $worker)
{
	$n->safe_psql('lat', 'CREATE EXTENSION task_tracker');
	tt_create_role($n, 'alice');
}
is($worker->safe_psql('lat', 'SHOW server_encoding'), 'LATIN1', 'worker database lat is LATIN1');
is($coord->safe_psql('lat', 'SHOW server_encoding'), 'UTF8', 'coordinator database lat is UTF8');

# on the worker: alice's sessions default to SQL_ASCII (bytes as they are);
# a table of LATIN1 text: 'été' is e9 74 e9 there
$worker->safe_psql('lat', q{
ALTER ROLE alice SET client_encoding = 'SQL_ASCII';
CREATE TABLE latin_rows (id int, s text);
INSERT INTO latin_rows VALUES (1, U&'\00e9t\00e9');
GRANT SELECT ON latin_rows TO alice;
});
is($worker->safe_psql('lat', 'SELECT encode(textsend(s), \'hex\') FROM latin_rows'),
	'e974e9', 'the worker stores LATIN1 bytes');

# on the coordinator: the tasks, built with U& escapes (UTF8 text there)
tt_sql($coord, sprintf(q{SELECT task_tracker.add_node(%s, %d)},
		tt_quote_literal($worker->host), $worker->port), dbname => 'lat');
$coord->safe_psql('lat', qq{
CREATE TABLE task_out (id int, query text, placements text[]);
-- out: a literal with non-ASCII letters; its octet length on the worker
INSERT INTO task_out VALUES
 (1, format('SELECT %L::text AS s, octet_length(%L::text) AS n', U&'\\00e9t\\00e9', U&'\\00e9t\\00e9'),
  ARRAY['$place']),
-- back: LATIN1 rows of the worker
 (2, 'SELECT s, octet_length(s) AS n FROM latin_rows', ARRAY['$place']);
CREATE TABLE task_bad (query text, placements text[]);
-- a character LATIN1 has not
INSERT INTO task_bad VALUES (format('SELECT %L::text', U&'\\0101'), ARRAY['$place']);
GRANT SELECT ON task_out, task_bad TO alice;
});

for my $executor ('real-time', 'task-tracker')
{
	for my $user ('postgres', 'alice')
	{
		my $what = "$executor as $user";
		my ($rc, $out, $err) = tt_psql($coord, qq{
SET citus.task_executor = '$executor';
SELECT encode(textsend(s), 'hex'), n
  FROM task_tracker.run_job('SELECT query, placements FROM task_out ORDER BY id') AS t(s text, n int)
 ORDER BY n, 1;
}, dbname => 'lat', user => $user, verbose => 1);
		is($rc, 0, "$what: the job runs") or diag($err);
		is($out, "c3a974c3a9|3\nc3a974c3a9|3",
			"$what: 'été' goes out and comes back as the same characters (3 letters on the worker)");

		my $err2 = tt_expect_error($coord, qq{
SET citus.task_executor = '$executor';
SELECT * FROM task_tracker.run_job('SELECT query, placements FROM task_bad') AS t(s text);
}, '22P05', 'character with byte sequence 0xc4 0x81 in encoding "UTF8" has no equivalent in encoding "LATIN1"',
			"$what: a character LATIN1 cannot hold", dbname => 'lat', user => $user);
	}
}

# a real-time task that changes client_encoding itself: a clear error, the
# connection is not kept, and the session's next job gets the same bytes
{
	my ($out, $err) = ('', '');
	$coord->psql('lat', qq{
\\set VERBOSITY verbose
SELECT encode(textsend(s), 'hex'), n FROM task_tracker.run_job(
	\$\$SELECT 'SET client_encoding = ''SQL_ASCII''; SELECT s, octet_length(s) AS n FROM latin_rows' AS query,
	         ARRAY['$place'] AS placements\$\$) AS t(s text, n int);
SELECT encode(textsend(s), 'hex'), n
  FROM task_tracker.run_job('SELECT query, placements FROM task_out ORDER BY id') AS t(s text, n int)
 ORDER BY n, 1;
}, stdout => \$out, stderr => \$err, on_error_stop => 0, extra_params => [ '-U', 'alice' ]);
	like($err, qr/ERROR:  0A000: a task may not change client_encoding \(to SQL_ASCII\)/,
		'real-time: a task that changes client_encoding is an error');
	is($out, "c3a974c3a9|3\nc3a974c3a9|3", '... and the next job of the session gets the same characters');
}

# run_on_workers: the same connections
is( tt_sql($coord, q{SELECT result FROM task_tracker.run_on_workers(
		format('SELECT octet_length(%L::text)', U&'\00e9t\00e9'))}, dbname => 'lat', user => 'alice'),
	'3', 'run_on_workers: a non-ASCII command arrives as the same characters');
is( tt_sql($coord, q{SELECT encode(textsend(result), 'hex') FROM task_tracker.run_on_workers(
		'SELECT s FROM latin_rows')}, dbname => 'lat', user => 'alice'),
	'c3a974c3a9', 'run_on_workers: a LATIN1 row comes back as the same characters');

tt_check_no_leftovers($worker);
$coord->stop;
$worker->stop;
done_testing();
