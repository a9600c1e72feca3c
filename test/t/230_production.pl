# Copyright: task_tracker authors.
#
# The production set-up of the README ("Production set-up"): coordinator ->
# worker connections authenticated by a client certificate, set with
# citus.node_conninfo, against workers whose only TCP line is
# "hostssl all all 127.0.0.1/32 cert map=coordinator" with a pg_ident map
# that lets the coordinator's one certificate log in as the application
# roles.  Certificates are made here with openssl (a CA, the workers' server
# certificate, the coordinator's client certificate, and a stranger's).
#
#  - citus.node_conninfo refuses the options the product controls (22023,
#    DETAIL naming the option) and unparsable values;
#  - jobs under both executors as two roles: pg_stat_ssl on the workers
#    shows TLS, the coordinator's certificate and the mapped role;
#  - authentication failures fail at once (no retry) with a message naming
#    role, node and database, the mechanism in the DETAIL and a HINT: no
#    client certificate, a role the map does not list, a stranger's
#    certificate; the tracker's own login failing (a role the worker asks a
#    password of) fails the task after one attempt, its stored error
#    carrying the HINT;
#  - an inactive placement is skipped; a task with no active placement is
#    refused with "node ... is not active".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use TaskTrackerTest;

# ---- certificates
my $dir = PostgreSQL::Test::Utils::tempdir('tt_certs');

sub openssl
{
	system_or_bail('openssl', @_);
	return;
}

openssl('req', '-new', '-x509', '-nodes', '-days', '2', '-subj', '/CN=tt-test-ca',
	'-keyout', "$dir/ca.key", '-out', "$dir/ca.crt");
for my $cert (
	[ 'server',      '/CN=127.0.0.1' ],
	[ 'coordinator', '/CN=tt-coordinator' ],
	[ 'stranger',    '/CN=stranger' ])
{
	my ($name, $subj) = @$cert;
	openssl('req', '-new', '-nodes', '-subj', $subj,
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
	openssl('x509', '-req', '-days', '2', '-in', "$dir/$name.csr",
		'-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key", '-CAcreateserial',
		'-out', "$dir/$name.crt");
	chmod 0600, "$dir/$name.key";
}

# ---- a coordinator and two workers with TLS and certificate authentication
my $os_user = getpwuid($<);
my $coord = tt_node('coordinator', quiet => 1);
my @workers = map {
	tt_node("worker$_", quiet => 1, conf => qq{
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
ssl_ca_file = '$dir/ca.crt'
citus.task_max_attempts = 3
})
} (1, 2);

for my $w (@workers)
{
	# No trust anywhere.  The Unix socket serves this script and the
	# tracker's libpq sessions, both running as the servers' OS user: peer
	# authentication with a map that lets that OS user (and only it) log in
	# as the roles the tasks run as (with
	# citus.task_tracker_use_background_workers = on the tracker needs no
	# line here at all, see 060).  dave must give a password there, and
	# has none.
	open(my $fh, '>', $w->data_dir . '/pg_hba.conf') or die;
	print $fh "local all dave scram-sha-256\n";
	print $fh "local all all peer map=local\n";
	print $fh "hostssl all all 127.0.0.1/32 cert map=coordinator\n";
	close $fh;
	$w->append_conf('pg_ident.conf', join('',
			(map { "coordinator tt-coordinator $_\n" } qw(alice bob dave)),
			(map { "local $os_user $_\n" } ($os_user, qw(alice bob carol)))));
	$w->reload;
	tt_sql($w, q{
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN; CREATE ROLE dave LOGIN;
});
}
tt_create_role($coord, $_) for qw(alice bob carol dave);
tt_sql($coord, sprintf('SELECT task_tracker.add_node(%s, %d)', "'127.0.0.1'", $_->port))
  for @workers;
my @place = map { '127.0.0.1:' . $_->port } @workers;

# ---- citus.node_conninfo: refused options
for my $bad (
	[ 'user=alice',                  'user' ],
	[ 'sslmode=require dbname=x',    'dbname' ],
	[ 'host=10.0.0.1',               'host' ],
	[ 'hostaddr=10.0.0.1',           'hostaddr' ],
	[ 'port=1',                      'port' ],
	[ 'client_encoding=LATIN1',      'client_encoding' ],
	[ 'application_name=x',          'application_name' ],
	[ 'connect_timeout=5',           'connect_timeout' ],
	[ 'options=-crole=postgres',     'options' ],
	[ 'password=secret',             'password' ],
	[ 'service=x',                   'service' ])
{
	my ($value, $option) = @$bad;
	my $err = tt_expect_error($coord,
		"ALTER SYSTEM SET citus.node_conninfo = " . tt_quote_literal($value),
		'22023', qr/citus\.node_conninfo must not set "\Q$option\E"/,
		"node_conninfo '$value'");
	like($err, qr/DETAIL:  Option "\Q$option\E" /, "node_conninfo '$value': DETAIL names the option");
}
tt_expect_error($coord, q{ALTER SYSTEM SET citus.node_conninfo = 'bogus=1'},
	'22023', qr/invalid value for parameter "citus\.node_conninfo"/, 'node_conninfo: unknown option');
tt_expect_error($coord, q{ALTER SYSTEM SET citus.node_conninfo = 'sslmode=''unterminated'},
	'22023', qr/invalid value for parameter "citus\.node_conninfo"/, 'node_conninfo: unparsable');
tt_expect_error($coord, q{SET citus.node_conninfo = 'sslmode=require'},
	'55P02', qr/parameter "citus\.node_conninfo" cannot be changed now/, 'node_conninfo: not per session');

my $job_ssl = sub {
	my ($executor, $user, $tasks) = @_;
	# the task reports the coordinator's connection(s) of its role to this node
	my $q = q{SELECT bool_and(s.ssl), min(a.usename::text), min(s.client_dn) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = ''task_tracker coordinator'' AND a.usename = current_user};
	return tt_psql($coord, qq{
SET citus.task_executor = '$executor';
SET citus.node_connection_timeout = '30s';
SELECT string_agg(concat_ws('|', ssl, usr, dn), ',') FROM task_tracker.run_job(
	\$\$SELECT '$q' AS query, p AS placements FROM (VALUES $tasks) v(p)\$\$) AS t(ssl bool, usr text, dn text);},
		user => $user, verbose => 1);
};
my $both = "(ARRAY['$place[0]']), (ARRAY['$place[1]'])";

# ---- no client certificate yet: authentication fails at once, with the HINT
for my $executor ('real-time', 'task-tracker')
{
	my $start = time;
	my ($rc, $out, $err) = $job_ssl->($executor, 'alice', "(ARRAY['$place[0]'])");
	my $elapsed = time - $start;
	isnt($rc, 0, "$executor, no client certificate: the job fails");
	like($err, qr/ERROR:  08001: could not authenticate as role "alice" to node \Q$place[0]\E, database "postgres"/,
		"$executor, no client certificate: role, node and database named");
	like($err, qr/DETAIL:  Mechanism tried: certificate authentication, but no client certificate was presented\./,
		"$executor, no client certificate: the mechanism");
	like($err, qr/HINT:  .*citus\.node_conninfo.*pg_hba\.conf/, "$executor, no client certificate: the HINT");
	cmp_ok($elapsed, '<', 15, "$executor, no client certificate: failed at once (node_connection_timeout is 30 s)");
}

# ---- the coordinator's certificate through citus.node_conninfo
tt_sql($coord, qq{ALTER SYSTEM SET citus.node_conninfo = 'sslmode=verify-ca sslrootcert=$dir/ca.crt sslcert=$dir/coordinator.crt sslkey=$dir/coordinator.key'; SELECT pg_reload_conf();});
$coord->poll_query_until('postgres', "SELECT current_setting('citus.node_conninfo') LIKE 'sslmode=verify-ca%'")
  or die 'node_conninfo not reloaded';

for my $executor ('real-time', 'task-tracker')
{
	for my $user ('alice', 'bob')
	{
		my ($rc, $out, $err) = $job_ssl->($executor, $user, $both);
		is($out, "t|$user|/CN=tt-coordinator,t|$user|/CN=tt-coordinator",
			"$executor as $user: TLS with the coordinator's certificate, mapped to $user on both workers")
		  or diag($err);
	}
}

# ---- a role the map does not list: certificate authentication fails, once
# per node (no retry), the task failing over from the first to the second
for my $executor ('real-time', 'task-tracker')
{
	my @pos = map { -s $_->logfile } @workers;
	my $start = time;
	my ($rc, $out, $err) = $job_ssl->($executor, 'carol', "(ARRAY['$place[0]', '$place[1]'])");
	my $elapsed = time - $start;
	isnt($rc, 0, "$executor, carol not in the map: the job fails");
	like($err, qr/ERROR:  08001: could not authenticate as role "carol" to node 127\.0\.0\.1:\d+, database "postgres"/,
		"$executor, carol: role, node and database named");
	like($err, qr/DETAIL:  Mechanism tried: certificate authentication\. .*certificate authentication failed for user "carol"/,
		"$executor, carol: the mechanism and the server's message");
	like($err, qr/HINT:  The coordinator logs in to worker nodes as the current user, with the options of citus\.node_conninfo/,
		"$executor, carol: the HINT");
	cmp_ok($elapsed, '<', 15, "$executor, carol: failed at once");
	for my $i (0, 1)
	{
		my $log = substr(slurp_file($workers[$i]->logfile), $pos[$i]);
		my $n = () = $log =~ /certificate authentication failed for user "carol"/g;
		is($n, 1, "$executor, carol: one attempt on worker " . ($i + 1) . ', not retried');
	}
}

# run_on_workers: the same error, as the failing node's row
{
	my $rows = tt_sql($coord, q{SELECT bool_or(success), count(*) FILTER (WHERE result LIKE 'could not authenticate as role "carol" to node 127.0.0.1:%' AND result LIKE '%HINT:  The coordinator logs in to worker nodes%') FROM task_tracker.run_on_workers('SELECT 1')},
		user => 'carol');
	is($rows, 'f|2', 'run_on_workers as carol: each node says it could not authenticate, with the HINT');
	is(tt_sql($coord, q{SELECT string_agg(result, ',') FROM task_tracker.run_on_workers('SELECT current_user')}, user => 'alice'),
		'alice,alice', 'run_on_workers as alice: runs on both workers');
}

# ---- a stranger's certificate (same CA, not in the map): refused too
tt_sql($coord, qq{ALTER SYSTEM SET citus.node_conninfo = 'sslmode=verify-ca sslrootcert=$dir/ca.crt sslcert=$dir/stranger.crt sslkey=$dir/stranger.key'; SELECT pg_reload_conf();});
$coord->poll_query_until('postgres', "SELECT current_setting('citus.node_conninfo') LIKE '%stranger.crt%'")
  or die 'node_conninfo not reloaded';
{
	my ($rc, $out, $err) = $job_ssl->('real-time', 'alice', "(ARRAY['$place[0]'])");
	like($err, qr/could not authenticate as role "alice" .*\n.*certificate authentication failed for user "alice"/,
		"a stranger's certificate: certificate authentication fails for alice");
}
tt_sql($coord, qq{ALTER SYSTEM SET citus.node_conninfo = 'sslmode=verify-ca sslrootcert=$dir/ca.crt sslcert=$dir/coordinator.crt sslkey=$dir/coordinator.key'; SELECT pg_reload_conf();});
$coord->poll_query_until('postgres', "SELECT current_setting('citus.node_conninfo') LIKE '%coordinator.crt%'")
  or die 'node_conninfo not reloaded';

# ---- the tracker's own login fails (dave must give a password on the
# worker's socket and has none): one attempt, the stored error has the HINT
tt_sql($workers[0], q{SET ROLE dave; SELECT task_tracker.assign_task(777, 1, 'SELECT 1')});
ok(tt_wait_job($workers[0], 777), 'dave: the task finished');
my $row = tt_sql($workers[0], q{SELECT status, attempts, error_sqlstate FROM task_tracker.tasks WHERE job_id = 777});
is($row, 'permanently_failed|1|08001', 'dave: permanently failed after one attempt (citus.task_max_attempts = 3)');
my $error = tt_sql($workers[0], q{SELECT error FROM task_tracker.tasks WHERE job_id = 777});
like($error, qr/^could not authenticate as role "dave" to the local server \(.*, port \d+\), database "postgres"/,
	'dave: the stored error names role, server and database');
like($error, qr/\nDETAIL:  Mechanism tried: password authentication, but no password was found/,
	'dave: the stored error names the mechanism');
like($error, qr/\nHINT:  The tracker logs in to its own server as the task's owner: set citus\.task_tracker_use_background_workers = on/,
	'dave: the stored error carries the HINT');
tt_sql($workers[0], q{SET ROLE dave; SELECT task_tracker.cleanup_job(777)});

# the same through the coordinator (task-tracker executor): the job's error
{
	my ($rc, $out, $err) = tt_psql($coord, qq{
SET citus.task_executor = 'task-tracker';
SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT 1' AS query, ARRAY['$place[0]'] AS placements\$\$) AS t(x int);},
		user => 'dave', verbose => 1);
	like($err, qr/could not authenticate as role "dave" to the local server.*\n(?:.*\n)*.*HINT:  The tracker logs in to its own server/,
		"dave through the coordinator: the tracker's error and HINT reach the user");
}

# ---- inactive placements are skipped
tt_sql($coord, "SELECT task_tracker.set_node_active('127.0.0.1', " . $workers[0]->port . ", false)");
for my $executor ('real-time', 'task-tracker')
{
	my $got = tt_sql($coord, qq{
SET citus.task_executor = '$executor';
SELECT string_agg(p::text, ',' ORDER BY p) FROM task_tracker.run_job(
	\$\$SELECT 'SELECT current_setting(''port'')::int' AS query, ARRAY['$place[0]', '$place[1]'] AS placements
	  FROM generate_series(1, 3)\$\$) AS t(p int);}, user => 'alice');
	my $p = $workers[1]->port;
	is($got, "$p,$p,$p", "$executor: tasks placed on an inactive node first run on their active placement");
	tt_expect_error($coord, qq{
SET citus.task_executor = '$executor';
SELECT * FROM task_tracker.run_job(\$\$SELECT 'SELECT 1' AS query, ARRAY['$place[1]'] AS placements
	UNION ALL SELECT 'SELECT 1', ARRAY['$place[0]']\$\$) AS t(x int);},
		'55000', qr/node \Q$place[0]\E is not active\nDETAIL:  Task 2 is placed on it\./,
		"$executor: a task with only an inactive placement is refused", user => 'alice');
}
tt_sql($coord, "SELECT task_tracker.set_node_active('127.0.0.1', " . $workers[0]->port . ", true)");

tt_sql($coord, q{ALTER SYSTEM RESET citus.node_conninfo; SELECT pg_reload_conf();});
tt_check_no_leftovers($_) for @workers;
$_->stop for ($coord, @workers);
done_testing();
