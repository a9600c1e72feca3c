
# Copyright: task_tracker authors.
#
# Results, errors and query texts cross databases of different encodings
# (issue 9, defect 3, worker side): a task's rows and texts are stored in the
# encoding of the database it ran in; a session of another database gets the
# right characters, or a clear error (22P05) when a character has no
# equivalent -- never the stored bytes as they are.  Bytes are checked with
# textsend() (the raw bytes of a text value).
#
#   LATIN1 task read from the UTF8 database:
#     task_result, task_result_copy     -> converted (c3a9 for e-acute)
#     wait_for_task_results             -> no rows inline (NULL: they would
#                                          need a conversion);
#                                          task_result_copy converts
#     wait_for_tasks' error, tasks view -> converted
#   UTF8 task read from the LATIN1 database:
#     e-acute                           -> e9
#     a-ogonek (not in LATIN1)          -> 22P05 from task_result(_copy);
#                                          '?' in the tasks view (it must not
#                                          fail)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('enc');
$node->safe_psql('postgres',
	q{CREATE DATABASE lat ENCODING LATIN1 LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('lat', 'CREATE EXTENSION task_tracker');
is($node->safe_psql('lat', 'SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()'),
	'LATIN1', 'the worker database is LATIN1');

# hex of the raw bytes of a text expression
sub hex_of { return "encode(textsend($_[0]), 'hex')"; }

# --- a LATIN1 task, read from the UTF8 database --------------------------
# job 1: rows in memory; 'caf' || e-acute, built in the LATIN1 database
tt_sql($node, q{SELECT task_tracker.assign_task(1, 0, $$SELECT 'caf' || chr(233) AS v$$)},
	dbname => 'lat');
tt_wait_job($node, 1, dbname => 'lat', tasks => 1);
is(tt_sql($node, 'SELECT ' . hex_of('v') . ' FROM task_tracker.task_result(1, 0) AS t(v text)'),
	'636166c3a9', 'task_result in UTF8 gives UTF8 bytes of a LATIN1 task');
is(tt_sql($node, 'SELECT ' . hex_of("string_agg(c, '')")
		  . ' FROM task_tracker.task_result_copy(1, 0) c'),
	'636166c3a90a', 'task_result_copy in UTF8 gives UTF8 bytes');
is(tt_sql($node, q{SELECT } . hex_of('v') . q{ FROM task_tracker.task_result(1, 0) AS t(v text)},
		dbname => 'lat'),
	'636166e9', 'the LATIN1 database itself gets the LATIN1 bytes');

# job 2: wait_for_task_results from the UTF8 database must not hand out the
# LATIN1 bytes inline
tt_sql($node, q{SELECT task_tracker.assign_task(2, 0, $$SELECT 'caf' || chr(233) AS v$$)},
	dbname => 'lat');
tt_wait_job($node, 2, dbname => 'lat', tasks => 1);
my $inline = tt_sql($node,
	q{SELECT coalesce(} . hex_of('result') . q{, 'null') || '|' || dropped
	  FROM task_tracker.wait_for_task_results(2, 1000)});
# (rows that would need a conversion are never inline: attach_reported_rows
# leaves them to task_result_copy, which converts)
is($inline, 'null|false', 'wait_for_task_results in UTF8: no LATIN1 bytes inline, the task is kept');
is(tt_sql($node, 'SELECT ' . hex_of("string_agg(c, '')")
		  . ' FROM task_tracker.task_result_copy(2, 0) c'),
	'636166c3a90a', '... and task_result_copy fetches them converted');

# job 3: an error text with e-acute, raised in the LATIN1 database
tt_sql($node, q{SET client_encoding = 'UTF8';
	SELECT task_tracker.assign_task(3, 0, $q$DO $x$ BEGIN RAISE EXCEPTION 'bad café'; END $x$ $q$)},
	dbname => 'lat');
tt_wait_job($node, 3, dbname => 'lat', tasks => 1);
is(tt_sql($node, q{SELECT position('\xc3a9'::bytea IN textsend(error)) > 0
	  AND position('\xe9'::bytea IN textsend(error)) = 0
	  FROM task_tracker.wait_for_tasks(3, 1000)}),
	't', 'wait_for_tasks in UTF8: the LATIN1 error text converted');
is(tt_sql($node, q{SELECT position('\xc3a9'::bytea IN textsend(error)) > 0
	  AND position('\xc3a9'::bytea IN textsend(query)) > 0
	  FROM task_tracker.tasks WHERE job_id = 3}),
	't', 'tasks view in UTF8: LATIN1 query and error converted');

# --- UTF8 tasks, read from the LATIN1 database ----------------------------
tt_sql($node, q{SELECT task_tracker.assign_tasks(4, '{0,1}',
	ARRAY[$$SELECT 'caf' || chr(233) AS v$$, $$SELECT 'x' || chr(261) || 'y' AS v$$])});
tt_wait_job($node, 4, tasks => 2);
is(tt_sql($node, 'SELECT ' . hex_of('v') . ' FROM task_tracker.task_result(4, 0) AS t(v text)',
		dbname => 'lat'),
	'636166e9', 'task_result in LATIN1 gives LATIN1 bytes of a UTF8 task');
my ($rc, $out, $err) = tt_psql($node,
	'SELECT ' . hex_of('v') . ' FROM task_tracker.task_result(4, 1) AS t(v text)',
	dbname => 'lat', verbose => 1);
like($err, qr/ERROR:  22P05: character with byte sequence 0xc4 0x85 in encoding "UTF8" has no equivalent in encoding "LATIN1"/,
	'a character LATIN1 lacks: 22P05 from task_result, not other bytes');
is($out, '', '... and no row');
($rc, $out, $err) = tt_psql($node,
	q{SELECT count(*) FROM task_tracker.task_result_copy(4, 1)},
	dbname => 'lat', verbose => 1);
like($err, qr/ERROR:  22P05/, '... and from task_result_copy');
is(tt_sql($node, q{SELECT } . hex_of('query') . q{ = } . hex_of(q{$$SELECT 'x' || chr(261) || 'y' AS v$$})
	. q{ FROM task_tracker.tasks WHERE job_id = 4 AND task_id = 1}, dbname => 'lat'),
	't', 'the tasks view in LATIN1 shows an ASCII query as it is');

# a query text with a character LATIN1 lacks: the view shows '?', never the
# UTF8 bytes (it must not fail for one task)
tt_sql($node, q{SELECT task_tracker.assign_task(5, 0, 'SELECT ''ą'' AS v')});
tt_wait_job($node, 5, tasks => 1);
is(tt_sql($node, q{SELECT } . hex_of('query') . q{ FROM task_tracker.tasks WHERE job_id = 5},
		dbname => 'lat'),
	unpack('H*', q{SELECT '?' AS v}), "tasks view in LATIN1: '?' for a character it cannot show");

tt_cleanup_and_check($node, [ [ 1, undef, 'lat' ], [ 2, undef, 'lat' ], [ 3, undef, 'lat' ],
	[ 4, undef, 'postgres' ], [ 5, undef, 'postgres' ] ]);
$node->stop;
done_testing();
