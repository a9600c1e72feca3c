# Copyright: task_tracker authors.
#
# The stored result format (COPY text): values with every COPY escape,
# text that looks like an escape, non-ASCII text, NULLs, empty strings and
# every byte of a bytea come back byte for byte through task_result and
# task_result_copy, for queries the tracker runs as COPY (SELECT, VALUES,
# TABLE, INSERT/UPDATE/DELETE ... RETURNING) and for those it runs in
# single-row mode (SHOW, EXPLAIN, CALL, SELECT INTO); a COPY the server
# refuses (a DO ALSO rule) runs as the plain statement, once; row counts;
# errors read as without COPY; empty and zero-column results; the in-memory
# limit exactly and one byte over; chunks and skip_rows; results and queued
# tasks survive a restart; a result file of the 1.0 library still reads.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $inline = 1000;
my $node = tt_node('format',
	conf => "citus.task_result_inline_size = $inline\ncitus.task_max_attempts = 1\n"
	  . "citus.max_running_tasks_per_node = 1\n");
tt_create_role($node, 'alice');
my $alice_oid = tt_sql($node, "SELECT oid FROM pg_roles WHERE rolname = 'alice'");
my $area = $node->data_dir . '/pg_task_tracker';

# special characters are built with chr(), so no quoting layer can touch them
tt_sql($node, q{
CREATE TABLE vals (id int PRIMARY KEY, v text, b bytea);
INSERT INTO vals VALUES
	(1, 'a' || chr(92) || 'b' || chr(9) || 'c' || chr(10) || 'd' || chr(13) || 'e' || chr(8)
	    || 'f' || chr(12) || 'g' || chr(11) || 'h' || chr(1) || 'i' || chr(127) || 'j', NULL),
	(2, chr(92) || 'N', ''),
	(3, chr(92) || 'x41' || chr(92) || '101' || chr(92) || 't' || chr(92) || '.' || chr(92), NULL),
	(4, convert_from(decode('c3a9e282acf09d849ec3bc', 'hex'), 'UTF8'), NULL),
	(5, '', NULL),
	(6, NULL, (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g)),
	(7, chr(9) || 'x' || chr(9), NULL),
	(8, 'N', '\x5c4e');
CREATE TABLE log (id serial PRIMARY KEY, v text, b bytea);
CREATE TABLE ruled (v text);
CREATE TABLE ruled_audit (v text);
CREATE RULE audit AS ON INSERT TO ruled DO ALSO INSERT INTO ruled_audit VALUES (new.v);
CREATE PROCEDURE pick(i int, INOUT v text DEFAULT NULL, INOUT b bytea DEFAULT NULL)
	LANGUAGE sql AS $$ SELECT v, b FROM vals WHERE id = i $$;
CREATE PROCEDURE pad(n int, INOUT v text DEFAULT NULL)
	LANGUAGE sql AS $$ SELECT repeat('x', n) $$;
GRANT ALL ON vals, log, log_id_seq, ruled, ruled_audit TO alice;
});

# a digest of rows (id int, v text, b bytea) that tells NULL from ''
my $digest = q{md5(string_agg(format('%s|%s|%s', id, quote_nullable(v), quote_nullable(b)), ';' ORDER BY id))};
my $want = tt_sql($node, "SELECT $digest FROM vals");
my $want_v = tt_sql($node, "SELECT md5(string_agg(format('%s|%s', id, quote_nullable(v)), ';' ORDER BY id)) FROM vals");

# exact bytes: of a COPY of $query to a file, and of task_result_copy's chunks
my $copy_file = $node->basedir . '/copy.out';
sub copy_bytes
{
	my ($query) = @_;
	tt_sql($node, "COPY ($query) TO '$copy_file'");
	return slurp_file($copy_file);
}
sub stored_bytes
{
	my ($job, $task, $skip) = @_;
	$skip //= 0;
	my $hex = tt_sql($node, qq{
SELECT encode(convert_to(coalesce(string_agg(c, '' ORDER BY n), ''), 'UTF8'), 'hex')
  FROM task_tracker.task_result_copy($job, $task, $skip) WITH ORDINALITY AS x(c, n)});
	return pack('H*', $hex);
}
sub file_of
{
	my ($job, $task) = @_;
	return "$area/job_$job/task_$task.$alice_oid";
}

# ---- job 1: queries run as COPY and in single-row mode
my $q = 'SELECT id, v, b FROM vals ORDER BY id';
my @tasks = (
	[ 0, $q ],
	[ 1, "SELECT id, v, b, repeat('p', 200) AS p FROM vals ORDER BY id" ],    # a file
	[ 2, "TABLE vals" ],
	[ 3, "$q;" ],
	[ 4, "/* lead */ $q -- trailing comment" ],
	[ 5, ";$q" ],
	[ 6, "VALUES (1, 'a'), (2, NULL)" ],
	(map { [ 10 + $_, "CALL pick($_)" ] } 1 .. 8),
	[ 20, 'SHOW search_path' ],
	[ 21, 'EXPLAIN (COSTS OFF) SELECT * FROM generate_series(1, 3) g WHERE g > 1' ],
	[ 30, 'INSERT INTO log (v, b) SELECT v, b FROM vals ORDER BY id RETURNING id, v, b' ],
	[ 31, 'INSERT INTO ruled SELECT v FROM vals ORDER BY id RETURNING v' ],
	[ 40, 'SELECT id, v FROM vals WHERE false' ],
	[ 41, 'SELECT FROM vals' ],
	[ 42, 'SELECT 1 AS a INTO TEMP t_into' ],
	[ 43, 'SELECT 1 AS a INTO TEMP t_into2 UNION SELECT 2' ],
	[ 50, 'SELECT 1/0' ],
	[ 51, q{SELECT 'x'::int} ],
	[ 52, 'SELECT nocol FROM vals' ],
	[ 53, 'SHOW no_such_setting' ],);
my $logpos = tt_log_position($node);
tt_sql($node,
	'SELECT task_tracker.assign_tasks(1, ARRAY['
	  . join(',', map { $_->[0] } @tasks) . '], ARRAY['
	  . join(',', map { tt_quote_literal($_->[1]) } @tasks) . '])',
	user => 'alice');
tt_wait_job($node, 1, user => 'alice', tasks => scalar(@tasks));

# where rows were expected: succeeded, with the right row count
is( tt_sql($node, q{SELECT string_agg(task_id || ':' || result_rows, ',' ORDER BY task_id)
  FROM task_tracker.tasks WHERE job_id = 1 AND status = 'succeeded'}),
	'0:8,1:8,2:8,3:8,4:8,5:8,6:2,11:1,12:1,13:1,14:1,15:1,16:1,17:1,18:1,20:1,21:2,30:8,31:8,40:0,41:8,42:1,43:2',
	'succeeded tasks and their row counts');
for my $t (0, 1, 2, 3, 4, 5)
{
	is(tt_sql($node, "SELECT $digest FROM task_tracker.task_result(1, $t) AS t(id int, v text, b bytea"
			  . ($t == 1 ? ', p text' : '') . ')'),
		$want, "task $t: every value back exactly (task_result)");
}
is(stored_bytes(1, 0), copy_bytes($q), 'stored result is byte for byte what COPY writes');
is(stored_bytes(1, 1), copy_bytes("SELECT id, v, b, repeat('p', 200) AS p FROM vals ORDER BY id"),
	'... also when stored in a file');
ok(!-e file_of(1, 0) && -e file_of(1, 1), 'the small result is in memory, the larger one in a file');
is(stored_bytes(1, 5), copy_bytes($q), 'a statement after an empty one, run plainly, is stored the same');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(1, 6) AS t(a int, b text)'), "1|a\n2|", 'VALUES');

# the single-row path escapes values exactly as COPY would
is( tt_sql($node, q{SELECT md5(string_agg(format('%s|%s|%s', i, quote_nullable(v), quote_nullable(b)), ';' ORDER BY i))
  FROM generate_series(1, 8) i, task_tracker.task_result(1, 10 + i) AS t(v text, b bytea)}),
	$want, 'CALL (single-row mode): every value back exactly');
for my $id (1 .. 8)
{
	is(stored_bytes(1, 10 + $id), copy_bytes("SELECT v, b FROM vals WHERE id = $id"),
		"CALL pick($id): stored as COPY writes it");
}
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(1, 20) AS t(s text)', user => 'alice'),
	tt_sql($node, 'SHOW search_path', user => 'alice'), 'SHOW');
is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(1, 21) AS t(s text)'),
	tt_sql($node, 'EXPLAIN (COSTS OFF) SELECT * FROM generate_series(1, 3) g WHERE g > 1'), 'EXPLAIN');

# what ran as COPY and what did not (the server log has every statement)
ok($node->log_contains(qr/COPY \(SELECT id, v, b FROM vals ORDER BY id\n\s*\) TO STDOUT/, $logpos),
	'a SELECT runs as COPY');
ok($node->log_contains(qr/COPY \(SELECT id, v, b FROM vals ORDER BY id\n\s*\) TO STDOUT/, $logpos)
	  && !$node->log_contains(qr/COPY \(SELECT id, v, b FROM vals ORDER BY id;/, $logpos),
	'the trailing semicolon stays outside');
ok(!$node->log_contains(qr/COPY \((?:CALL|SHOW|EXPLAIN)/, $logpos), 'CALL, SHOW, EXPLAIN run as they are');

# INSERT ... RETURNING: as COPY, once; into a table with a DO ALSO rule,
# which COPY refuses: as the plain statement, still once, in one attempt
is(tt_sql($node, 'SELECT count(*), md5(string_agg(format(\'%s|%s\', quote_nullable(v), quote_nullable(b)), \';\' ORDER BY id)) FROM log'),
	'8|' . tt_sql($node, q{SELECT md5(string_agg(format('%s|%s', quote_nullable(v), quote_nullable(b)), ';' ORDER BY id)) FROM vals}),
	'INSERT ... RETURNING inserted every row once');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.task_result(1, 30) AS t(id int, v text, b bytea) JOIN log USING (id, v)'),
	'7', 'its result is the inserted rows (the NULL does not join)');
ok($node->log_contains(qr/COPY \(INSERT INTO log/, $logpos), 'INSERT ... RETURNING ran as COPY');
is(tt_sql($node, 'SELECT (SELECT count(*) FROM ruled), (SELECT count(*) FROM ruled_audit), (SELECT attempts FROM task_tracker.tasks WHERE job_id = 1 AND task_id = 31)'),
	'8|8|1', 'DO ALSO rule: the statement ran once, in one attempt');
is(tt_sql($node, "SELECT md5(string_agg(format('%s|%s', n, quote_nullable(v)), ';' ORDER BY n)) FROM ROWS FROM (task_tracker.task_result(1, 31) AS (v text)) WITH ORDINALITY AS t(v, n)"),
	$want_v, 'DO ALSO rule: its RETURNING rows, exactly');
ok($node->log_contains(qr/COPY \(INSERT INTO ruled/, $logpos), 'the COPY was tried first');
tt_sql($node, q{SELECT task_tracker.assign_tasks(6, '{0,1}', ARRAY[
	'UPDATE log SET v = v WHERE id <= 3 RETURNING id',
	'DELETE FROM log WHERE id > 100 RETURNING id'])}, user => 'alice');
tt_wait_job($node, 6, user => 'alice', tasks => 2);
is(tt_sql($node, 'SELECT string_agg(task_id || \':\' || status || \':\' || result_rows, \',\' ORDER BY task_id) FROM task_tracker.tasks WHERE job_id = 6'),
	'0:succeeded:3,1:succeeded:0', 'UPDATE and DELETE ... RETURNING');
is(tt_sql($node, 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM task_tracker.task_result(6, 0) AS t(id int)'),
	'1,2,3', 'UPDATE ... RETURNING rows');

# empty results and zero columns
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.task_result(1, 40) AS t(id int, v text)'), '0', 'empty result');
is(stored_bytes(1, 40), '', 'empty result: no line');
tt_expect_error($node, 'SELECT * FROM task_tracker.task_result(1, 40) AS t(id int)', '42804',
	'task result has 2 columns but the column definition list has 1', 'empty result, wrong width');
is(stored_bytes(1, 41), "\n" x 8, 'zero columns: one empty line per row');
tt_expect_error($node, 'SELECT * FROM task_tracker.task_result(1, 41) AS t(x int)', '42804',
	'task result has 0 columns but the column definition list has 1', 'zero columns, read with one');
is(tt_sql($node, 'SELECT count(*) FROM task_tracker.task_result(1, 42) AS t(a int)'), '0',
	'SELECT INTO: no rows, counted (it does not run as COPY)');

# errors read as they do without COPY
is( tt_sql($node, q{SELECT string_agg(format('%s %s %s', task_id, error_sqlstate, error), E'\n' ORDER BY task_id)
  FROM task_tracker.tasks WHERE job_id = 1 AND task_id >= 50}),
	qq{50 22012 division by zero\n51 22P02 invalid input syntax for type integer: "x"\n}
	  . qq{52 42703 column "nocol" does not exist\n53 42704 unrecognized configuration parameter "no_such_setting"},
	'errors of statements run as COPY read like the plain ones');

# ---- job 2: the in-memory limit, exactly and one byte over (8 bytes of
# header, then the line and its newline)
my $at = $inline - 8 - 1;
tt_sql($node, qq{SELECT task_tracker.assign_tasks(2, '{0,1,2,3}', ARRAY[
	'SELECT repeat(''x'', $at)', 'SELECT repeat(''x'', @{[ $at + 1 ]})',
	'CALL pad($at)', 'CALL pad(@{[ $at + 1 ]})'])}, user => 'alice');
tt_wait_job($node, 2, user => 'alice', tasks => 4);
ok(!-e file_of(2, 0), "a result of exactly $inline bytes stays in memory");
ok(-e file_of(2, 1), 'one byte more goes to a file');
ok(!-e file_of(2, 2) && -e file_of(2, 3), '... the same in single-row mode');
is(tt_sql($node, 'SELECT string_agg(length(x)::text, \',\' ORDER BY t) FROM generate_series(0, 3) t, task_tracker.task_result(2, t) AS r(x text)'),
	join(',', $at, $at + 1, $at, $at + 1), 'both read back whole');

# ---- job 3: chunks of whole lines, and skip_rows
my $big = 'SELECT g, repeat(md5(g::text), 10) FROM generate_series(1, 5000) g';
tt_sql($node, qq{SELECT task_tracker.assign_tasks(3, '{0,1}', ARRAY[
	'$big', 'SELECT 1, repeat(''y'', 3000000), 2'])}, user => 'alice');
tt_wait_job($node, 3, user => 'alice', tasks => 2);
is( tt_sql($node, q{SELECT count(*) > 1, bool_and(right(c, 1) = E'\n'), max(octet_length(c)) <= 65536
  FROM task_tracker.task_result_copy(3, 0) c}),
	't|t|t', 'a large result comes in chunks of whole lines of at most 64 kB');
my $all = copy_bytes($big);
is(stored_bytes(3, 0), $all, 'the chunks together are what COPY writes');
my @lines = split /(?<=\n)/, $all;
is(stored_bytes(3, 0, 4990), join('', @lines[4990 .. 4999]), 'skip_rows skips whole rows');
is(stored_bytes(3, 0, 5000), '', 'skipping every row leaves nothing');
is(tt_sql($node, q{SELECT (SELECT count(*) FROM (SELECT task_tracker.task_result_copy(3, 0) LIMIT 2) x),
  (SELECT count(*) FROM (SELECT c FROM task_tracker.task_result_copy(3, 0) c LIMIT 1) y)}),
	'2|1', 'reading stops early without harm (select list, FROM)');
is(tt_sql($node, q{SELECT count(*), min(octet_length(c)) FROM task_tracker.task_result_copy(3, 1) c}),
	'1|3000005', 'a line longer than a chunk is a chunk of its own');

# ---- lines with escapes COPY TO never writes (octal, hex, \c for any other
# c, an escaped tab) read exactly as COPY FROM reads them
{
	my $lines = join('', "\\101\\x42\t\\x4g\\z\\q\ta\\\tb\n",
		"\\N\t\\\\N\t\\N\n", "\t\t\n", "\\7\\07\\177\t\\b\\f\\v\\r\\n\\t\tx\\\\\n");
	my $file = $node->basedir . '/escapes.copy';
	open(my $fh, '>', $file) or die $!;
	binmode $fh;
	print $fh $lines;
	close $fh;
	open($fh, '>', file_of(3, 1)) or die $!;
	binmode $fh;
	print $fh 'TTR2', pack('L', 3), $lines;
	close $fh;
	my $cols = q{string_agg(format('%s|%s|%s', quote_nullable(a), quote_nullable(b), quote_nullable(c)), ';')};
	tt_sql($node, "CREATE TABLE copied (a text, b text, c text); COPY copied FROM '$file'");
	is(tt_sql($node, "SELECT $cols FROM task_tracker.task_result(3, 1) AS t(a text, b text, c text)"),
		tt_sql($node, "SELECT $cols FROM copied"), 'escapes are read as COPY FROM reads them');
	is(stored_bytes(3, 1), $lines, '... and handed out as stored');
	tt_sql($node, 'DROP TABLE copied');
}

# ---- a result file of the 1.0 library ("TTR1": type oids, then per value
# an int32 length, -1 for NULL, and its text) reads the same
{
	my $rows = tt_sql($node, q{
SELECT string_agg(concat_ws(',', encode(convert_to(id::text, 'UTF8'), 'hex'),
		coalesce(encode(convert_to(v, 'UTF8'), 'hex'), '-'),
		coalesce(encode(convert_to(b::text, 'UTF8'), 'hex'), '-'),
		encode(convert_to(repeat('p', 200), 'UTF8'), 'hex')), ';' ORDER BY id) FROM vals});
	my $data = 'TTR1' . pack('L', 4) . pack('L4', 23, 25, 17, 25);
	for my $row (split /;/, $rows)
	{
		for my $hex (split /,/, $row, -1)
		{
			if ($hex eq '-') { $data .= pack('l', -1); next; }
			my $bytes = pack('H*', $hex);
			$data .= pack('l', length($bytes)) . $bytes;
		}
	}
	my $before = stored_bytes(1, 1);
	open(my $fh, '>', file_of(1, 1)) or die $!;
	binmode $fh;
	print $fh $data;
	close $fh;
	is(tt_sql($node, "SELECT $digest FROM task_tracker.task_result(1, 1) AS t(id int, v text, b bytea, p text)"),
		$want, '1.0 result file: task_result reads it');
	is(stored_bytes(1, 1), $before, '1.0 result file: task_result_copy turns it into the same COPY text');
	is(stored_bytes(1, 1, 7), join('', (split /(?<=\n)/, $before)[7]), '... and skips rows in it');

	# a larger one comes in chunks of whole lines of at most 64 kB too
	$data = 'TTR1' . pack('L', 2) . pack('L2', 23, 25);
	$data .= pack('l', length($_)) . $_ . pack('l', 1000) . ('z' x 1000) for (1 .. 300);
	open($fh, '>', file_of(3, 0)) or die $!;
	binmode $fh;
	print $fh $data;
	close $fh;
	is(stored_bytes(3, 0), copy_bytes(q{SELECT g, repeat('z', 1000) FROM generate_series(1, 300) g}),
		'larger 1.0 result file: the same COPY text');
	is(tt_sql($node, q{SELECT count(*) > 1, bool_and(right(c, 1) = E'\n'), max(octet_length(c)) <= 65536
  FROM task_tracker.task_result_copy(3, 0) c}), 't|t|t', '... in chunks of whole lines of at most 64 kB');
}

# ---- a restart keeps results (memory and files) and queued tasks, which
# still run as COPY afterwards
# (one task runs at a time on this node)
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(4242)');
tt_sql($node, q{SELECT task_tracker.assign_task(4, 0, 'SELECT pg_advisory_lock_shared(4242)')}, user => 'alice');
$node->poll_query_until('postgres',
	"SELECT status = 'running' FROM task_tracker.tasks WHERE job_id = 4 AND task_id = 0")
  or die 'blocking task did not start';
tt_sql($node, qq{SELECT task_tracker.assign_task(4, 1, '$q')}, user => 'alice');
is(tt_sql($node, 'SELECT status FROM task_tracker.tasks WHERE job_id = 4 AND task_id = 1'),
	'assigned', 'a task is queued at the restart');
my %kept = map { $_ => stored_bytes(1, $_) } (0, 1, 12, 41);
$logpos = tt_log_position($node);
tt_restart_fast($node);
eval { $locker->quit; };    # its session ended with the restart, and the lock with it
tt_wait_job($node, 4, user => 'alice', tasks => 2);
is(tt_sql($node, "SELECT $digest FROM task_tracker.task_result(4, 1) AS t(id int, v text, b bytea)"),
	$want, 'the queued task ran after the restart');
ok($node->log_contains(qr/COPY \(SELECT id, v, b FROM vals ORDER BY id\n\s*\) TO STDOUT/, $logpos),
	'... as COPY');
is(stored_bytes(1, $_), $kept{$_}, "result of task $_ kept across the restart") for (sort keys %kept);

tt_cleanup_and_check($node, [ map { [ $_, 'alice' ] } (1, 2, 3, 4, 6) ]);

# ---- the task table saved by the 1.0 library ("TTS3", without copy_len;
# in-memory results in its "TTR1" format), as a server restarted on the new
# library finds it: restored, the queued task runs (as a plain statement),
# the kept result reads
{
	my $dbid = tt_sql($node, "SELECT oid FROM pg_database WHERE datname = 'postgres'");
	my $saved = sub {
		my (%t) = @_;
		my $rec = pack('q l l L L l l Q q q q q a64 a64 a6 C x l l l x4',
			$t{job}, $t{task}, $t{status}, $alice_oid, $dbid, 6, $t{attempts}, $t{seq},
			$t{rows}, 0, 0, 0, 'alice', 'postgres', '', 0,
			length($t{query}), -1, defined $t{result} ? length($t{result}) : -1);
		return "\x01" . $rec . $t{query} . ($t{result} // '');
	};
	my $result = 'TTR1' . pack('L', 2) . pack('L2', 25, 25)
	  . pack('l', 6) . 'legacy' . pack('l', -1)
	  . pack('l', 3) . "a\tb" . pack('l', 0);
	$node->stop('fast');
	open(my $fh, '>', "$area/tasks.state") or die $!;
	binmode $fh;
	print $fh 'TTS3',
	  $saved->(job => 7, task => 0, status => 0, attempts => 0, seq => 1, rows => -1,
		query => 'SELECT 7 AS x'),
	  $saved->(job => 7, task => 1, status => 3, attempts => 1, seq => 2, rows => 2,
		query => 'SELECT 1', result => $result),
	  "\x00";
	close $fh;
	$logpos = tt_log_position($node);
	$node->start;
	ok($node->wait_for_log(qr/task tracker restored 2 tasks/, $logpos), '1.0 task table restored');
	tt_wait_job($node, 7, user => 'alice', tasks => 2);
	is(tt_sql($node, 'SELECT status, result_rows FROM task_tracker.tasks WHERE job_id = 7 ORDER BY task_id'),
		"succeeded|1\nsucceeded|2", 'its queued task ran, its finished one is kept');
	is(tt_sql($node, 'SELECT * FROM task_tracker.task_result(7, 0) AS t(x int)'), '7', 'the queued task\'s result');
	ok($node->log_contains(qr/(?:execute <unnamed>|statement): SELECT 7 AS x/, $logpos),
		'... run as the plain statement');
	is(tt_sql($node, q{SELECT a, quote_nullable(b) FROM task_tracker.task_result(7, 1) AS t(a text, b text)}),
		"legacy|NULL\na\tb|''", 'the 1.0 in-memory result reads');
	is(stored_bytes(7, 1), "legacy\t\\N\na\\tb\t\n", '... and as COPY text');
	tt_cleanup_and_check($node, [ [ 7, 'alice' ] ]);
}

$node->stop;
done_testing();
