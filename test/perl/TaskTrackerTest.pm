
# Copyright: task_tracker authors.  Shared helpers of the TAP tests (test/t).

=pod

=head1 NAME

TaskTrackerTest - PostgreSQL::Test::Cluster helpers for task_tracker's TAP tests

=head1 SYNOPSIS

  use TaskTrackerTest;

  my $node = tt_node('worker', conf => "citus.max_running_tasks_per_node = 2");
  tt_create_role($node, 'alice');
  tt_sql($node, "SELECT task_tracker.assign_task(1, 0, 'SELECT 1')", user => 'alice');
  tt_wait_job($node, 1, user => 'alice', tasks => 1);
  tt_cleanup_and_check($node, [ [1, 'alice'] ]);
  $node->stop;

=head1 DESCRIPTION

Every helper waits on a condition (the product's own C<wait_for_tasks>, or
C<poll_query_until>), never for a fixed time.  Tests run their servers as the
unprivileged OS user that runs prove (scripts/test.sh uses C<postgres>); that
user owns the data directories, so it may read C<$PGDATA/pg_task_tracker> and
send signals to server processes.

=cut

package TaskTrackerTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename ();
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  tt_node
  tt_create_role
  tt_sql
  tt_psql
  tt_quote_ident
  tt_quote_literal
  tt_wait_job
  tt_task_counts
  tt_job_dirs
  tt_log_position
  tt_check_no_leftovers
  tt_cleanup_and_check
);

# Final states of a task (the others are assigned, scheduled, running,
# failed, cancel_requested).
our $FINAL = "('succeeded', 'permanently_failed', 'canceled')";

=pod

=head1 FUNCTIONS

=over

=item tt_node($name, %opts)

Create, configure and start a node with task_tracker preloaded, and run
C<CREATE EXTENSION task_tracker> in the C<postgres> database.  Options:
C<conf> (extra postgresql.conf lines), C<restart_after_crash> (default off, as
PostgreSQL::Test::Cluster sets it), C<quiet> (log_statement = none; use for
tests with many tasks), C<no_start>.

With C<$ENV{TT_BACKGROUND_WORKERS}> set (the C<*_bgw.pl> files run a test
again that way), the node runs its tasks in background workers
(C<citus.task_tracker_use_background_workers = on>, C<max_worker_processes>
raised to match); C<conf> comes after, so a test can still set either.

The cluster is UTF8 with the C locale so that role and database names with
non-ASCII letters work the same everywhere.

=cut

sub tt_node
{
	my ($name, %opts) = @_;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'task_tracker'
citus.task_tracker_delay = '50ms'
citus.task_tracker_idle_connection_timeout = '500ms'
max_connections = 60
max_prepared_transactions = 10
log_min_messages = info
restart_after_crash = } . ($opts{restart_after_crash} ? 'on' : 'off') . qq{
} . ($opts{quiet} ? "log_statement = none\n" : '')
	  . ($ENV{TT_BACKGROUND_WORKERS}
		? "citus.task_tracker_use_background_workers = on\nmax_worker_processes = 40\n"
		: '')
	  . ($opts{conf} // ''));

	return $node if $opts{no_start};

	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION task_tracker');
	return $node;
}

=pod

=item tt_quote_ident($name), tt_quote_literal($str)

SQL quoting done in Perl (for names with quotes, spaces and backslashes).

=cut

sub tt_quote_ident
{
	my ($s) = @_;
	$s =~ s/"/""/g;
	return qq{"$s"};
}

sub tt_quote_literal
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

=pod

=item tt_create_role($node, $name, %opts)

CREATE ROLE $name LOGIN (quoted, so any name works).  C<grant> = SQL to run
afterwards, with C<%ROLE%> replaced by the quoted name.

=cut

sub tt_create_role
{
	my ($node, $name, %opts) = @_;
	my $q = tt_quote_ident($name);
	$node->safe_psql('postgres', "CREATE ROLE $q LOGIN");
	if ($opts{grant})
	{
		(my $g = $opts{grant}) =~ s/%ROLE%/$q/g;
		$node->safe_psql($opts{dbname} // 'postgres', $g);
	}
	return;
}

=pod

=item tt_sql($node, $sql, %opts)

safe_psql as C<user> (default: the bootstrap superuser) in C<dbname>
(default postgres); returns stdout, dies on error.

=item tt_psql($node, $sql, %opts)

psql as C<user> in C<dbname>; returns (exit code, stdout, stderr) and never
dies.  C<verbose> => 1 adds VERBOSITY verbose so stderr carries the SQLSTATE.

=cut

sub _user_params
{
	my (%opts) = @_;
	return defined $opts{user} ? [ '-U', $opts{user} ] : [];
}

sub tt_sql
{
	my ($node, $sql, %opts) = @_;
	return $node->safe_psql($opts{dbname} // 'postgres',
		$sql, extra_params => _user_params(%opts));
}

sub tt_psql
{
	my ($node, $sql, %opts) = @_;
	my ($out, $err) = ('', '');
	$sql = "\\set VERBOSITY verbose\n$sql" if $opts{verbose};
	my $rc = $node->psql(
		$opts{dbname} // 'postgres', $sql,
		stdout => \$out,
		stderr => \$err,
		on_error_stop => 1,
		extra_params => _user_params(%opts));
	return ($rc, $out, $err);
}

=pod

=item tt_wait_job($node, $job, %opts)

Wait until every task of job C<$job> is in a final state (succeeded,
permanently_failed, canceled) and, when C<tasks> is given, until the job has
that many tasks.  Waits inside the server with the product's own
C<task_tracker.wait_for_tasks> (run as C<user>, the job's owner, in
C<dbname>), looping until the C<task_tracker.tasks> view agrees; gives up
after C<timeout> seconds (default: the TAP default timeout).  Returns true
on success, and reports a test failure otherwise.

=cut

sub tt_wait_job
{
	my ($node, $job, %opts) = @_;
	my $timeout = $opts{timeout} // $PostgreSQL::Test::Utils::timeout_default;
	my $ntasks = $opts{tasks} // -1;
	my $sql = qq{
DO \$tt_wait\$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '$timeout seconds';
	pending bigint;
	total bigint;
BEGIN
	LOOP
		SELECT count(*) FILTER (WHERE status NOT IN $FINAL), count(*)
		  INTO pending, total
		  FROM task_tracker.tasks WHERE job_id = $job;
		EXIT WHEN pending = 0 AND ($ntasks < 0 OR total = $ntasks);
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'job % not finished after $timeout s: % of % tasks pending',
				$job, pending, total;
		END IF;
		PERFORM * FROM task_tracker.wait_for_tasks($job, 1000);
	END LOOP;
END
\$tt_wait\$;
};
	my ($rc, $out, $err) = tt_psql($node, $sql, %opts);
	if ($rc != 0)
	{
		diag("tt_wait_job($job): $err");
		diag(tt_sql($node,
			"SELECT job_id, task_id, status, attempts, error FROM task_tracker.tasks WHERE job_id = $job ORDER BY task_id LIMIT 50"));
		fail("job $job finished");
		return 0;
	}
	return 1;
}

=pod

=item tt_task_counts($node, $job)

Hash status => number of tasks of the job (as seen by the superuser).

=cut

sub tt_task_counts
{
	my ($node, $job) = @_;
	my $out = tt_sql($node,
		"SELECT status, count(*) FROM task_tracker.tasks WHERE job_id = $job GROUP BY 1 ORDER BY 1");
	my %h;
	for my $line (split /\n/, $out)
	{
		my ($s, $n) = split /\|/, $line;
		$h{$s} = $n;
	}
	return \%h;
}

=pod

=item tt_job_dirs($node)

The job_* entries of C<$PGDATA/pg_task_tracker> (an empty list when the
directory does not exist).

=cut

sub tt_job_dirs
{
	my ($node) = @_;
	my $dir = $node->data_dir . '/pg_task_tracker';
	return () unless -d $dir;
	opendir(my $dh, $dir) or die "cannot open $dir: $!";
	my @jobs = sort grep { /^job_/ } readdir($dh);
	closedir($dh);
	return @jobs;
}

=pod

=item tt_log_position($node)

Current size of the server log, to pass to wait_for_log / log_contains so
that only later lines count.

=cut

sub tt_log_position
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

=pod

=item tt_check_no_leftovers($node, $what)

The final check every test ends with: no rows in task_tracker.tasks, no
job_* directory under $PGDATA/pg_task_tracker, and (after the tracker's idle
connection timeout) no backend with application_name 'task_tracker'.

=cut

sub tt_check_no_leftovers
{
	my ($node, $what) = @_;
	$what = defined $what ? " ($what)" : '';
	is(tt_sql($node, 'SELECT count(*) FROM task_tracker.tasks'),
		'0', "no tasks left$what");
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'task_tracker'"),
		"no task_tracker backends left$what");
	my @dirs = tt_job_dirs($node);
	is(scalar(@dirs), 0, "no job directories left$what")
	  or diag("left: @dirs");
	return;
}

=pod

=item tt_cleanup_and_check($node, \@jobs)

cleanup_job for each [job_id, user, dbname] of @jobs (as that user), then
tt_check_no_leftovers.

=cut

sub tt_cleanup_and_check
{
	my ($node, $jobs) = @_;
	for my $j (@$jobs)
	{
		my ($job, $user, $db) = @$j;
		tt_sql($node, "SELECT task_tracker.cleanup_job($job)",
			user => $user, dbname => $db);
	}
	tt_check_no_leftovers($node);
	return;
}

=pod

=back

=cut

=pod

=head1 MORE FUNCTIONS (reliability tests, test/t/2*.pl)

=over

=item tt_expect_error($node, $sql, $code, $message_re, $name, %opts)

Run C<$sql> with C<tt_psql> (VERBOSITY verbose; C<user>, C<dbname> as there)
and check that it fails with C<ERROR:  $code: > followed by a message
matching C<$message_re>.  C<$code> may be a regexp (C<qr/22003|42704/>).
Returns the stderr text.

=cut

sub tt_expect_error
{
	my ($node, $sql, $code, $message_re, $name, %opts) = @_;
	my ($rc, $out, $err) = tt_psql($node, $sql, %opts, verbose => 1);
	my $c = ref($code) ? $code : quotemeta($code);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	isnt($rc, 0, "$name: fails");
	like($err, qr/ERROR:  (?:$c): (?:$message_re)/, "$name: $code")
	  or diag("sql: $sql");
	return $err;
}

=pod

=item tt_postmaster_pid($node)

The pid in the first line of C<$PGDATA/postmaster.pid> (undef when missing).

=cut

sub tt_postmaster_pid
{
	my ($node) = @_;
	my $f = $node->data_dir . '/postmaster.pid';
	open(my $fh, '<', $f) or return undef;
	my $pid = <$fh>;
	close($fh);
	chomp $pid if defined $pid;
	return $pid;
}

=pod

=item tt_no_crash_in_log($node, $what)

Test that the server log holds no sign of a crashed process
("terminated by signal", "server process ... was terminated",
"terminating any other active server processes").

=cut

sub tt_no_crash_in_log
{
	my ($node, $what) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
	my @bad = grep { /terminated by signal|server process .* was terminated|terminating any other active server processes|PANIC/ }
	  split /\n/, $log;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	is(scalar(@bad), 0, 'no crash in the server log' . (defined $what ? " ($what)" : ''))
	  or diag(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]));
	return;
}

push @EXPORT, qw(tt_expect_error tt_postmaster_pid tt_no_crash_in_log);

=pod

=back

=cut



=pod

=head1 MORE FUNCTIONS (coordinator reliability tests, test/t/22*.pl)

=over

=item tt_poll_until($node, $sql, $seconds, $expected)

poll_query_until with its own bound of C<$seconds> (instead of the TAP
default timeout), so that "in bounded time" is part of the assertion.
Returns true when C<$sql> returned C<$expected> (default 't') in time.

=cut

use IPC::Run ();

sub tt_poll_until
{
	my ($node, $sql, $seconds, $expected) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $seconds;
	return $node->poll_query_until('postgres', $sql, $expected // 't');
}

=pod

=item tt_restart_fast($node)

C<pg_ctl restart -m fast> (waits until the server accepts connections again).

=cut

sub tt_restart_fast
{
	my ($node) = @_;
	PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-m', 'fast', '-D',
		$node->data_dir, '-l', $node->logfile, 'restart');
	$node->_update_pid(1);
	return;
}

=pod

=item tt_rerun_with_background_workers($file)

Run test C<$file> (a name in the caller's directory) again with its nodes in
background-worker mode (C<$ENV{TT_BACKGROUND_WORKERS}>, see C<tt_node>): the
C<*_bgw.pl> files are this one call.

=cut

sub tt_rerun_with_background_workers
{
	my ($file) = @_;
	my $path = File::Spec->rel2abs(File::Basename::dirname((caller)[1]) . "/$file");
	$ENV{TT_BACKGROUND_WORKERS} = 1;
	do $path or die($@ || "$path: $!");
	return;
}

=pod

=item tt_start_psql($node, \@commands, %opts)

Start psql (C<-XAtq>, ON_ERROR_STOP, VERBOSITY verbose) in the background
running each of C<@commands> with C<-c>, as C<user>; returns a hash with
C<h> (the IPC::Run handle), C<out> and C<err> (scalar refs).  C<timeout>
(seconds, default 60) bounds it.  Finish it with C<tt_finish_psql>.

=item tt_finish_psql($p)

Wait for it; returns (exit code or undef on time-out, stdout, stderr).

=cut

sub tt_start_psql
{
	my ($node, $commands, %opts) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ($node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-v', 'VERBOSITY=verbose', '-d', $node->connstr($opts{dbname} // 'postgres'),
		@{ _user_params(%opts) }, map { ('-c', $_) } @$commands);
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($opts{timeout} // 60));
	return { h => $h, out => \$out, err => \$err };
}

sub tt_finish_psql
{
	my ($p) = @_;
	my $ok = eval { $p->{h}->finish; 1 };
	if (!$ok)
	{
		eval { $p->{h}->kill_kill; };
		return (undef, ${ $p->{out} }, ${ $p->{err} } . "\n(timed out: $@)");
	}
	return ($p->{h}->result(0), ${ $p->{out} }, ${ $p->{err} });
}

push @EXPORT, qw(tt_poll_until tt_restart_fast tt_start_psql tt_finish_psql);

=pod

=back

=cut

=pod

=over

=item tt_add_node($coord, $worker, $port)

Register $worker (a node started with tt_node) on $coord with
task_tracker.add_node, by its socket directory and port ($port overrides the
port, e.g. for a closed one).

=back

=cut

push @EXPORT, 'tt_add_node';

sub tt_add_node
{
	my ($coord, $worker, $port) = @_;
	return tt_sql($coord, sprintf("SELECT task_tracker.add_node(%s, %d)",
			tt_quote_literal($worker->host), $port // $worker->port));
}

=pod

=head1 MORE FUNCTIONS (tests that need root: 206_disk_full.pl, 222_partition.pl)

scripts/test.sh lets the postgres OS user run one root-owned helper,
C</usr/local/libexec/task_tracker-test-priv> (scripts/tt-test-priv), through
C<sudo -n> for the length of a run; it accepts only fixed verbs on fixed
names (see its header).  A developer running prove by hand usually has
neither it nor the capabilities: the tests then skip with the reason.

=over

=item tt_skip_test($why)

Skip the whole test file with the reason (a C<skip_all> plan: prove prints
"skipped: $why" and "Result: NOTESTS"; scripts/test.sh counts the file as
skipped, never as passed, and prints the reason).  Call it before any
assertion.

=item tt_priv_helper()

In list context (\@command, $why): the command prefix that runs the
privileged helper (C<sudo -n /usr/local/libexec/task_tracker-test-priv>) when
this OS user may run it, else undef and the reason (also when
scripts/test.sh runs with C<TT_PRIV=0>: the helper another, concurrent run
installed is not this run's to use).

=item tt_priv(@args)

Run the helper with C<@args>; true when it succeeded (its output is shown as
a note, its errors as a diag).

=back

=cut

our $TT_PRIV_BIN = '/usr/local/libexec/task_tracker-test-priv';

sub tt_skip_test
{
	my ($why) = @_;
	plan(skip_all => $why);    # exits
	return;
}

my @tt_priv_helper;

sub tt_priv_helper
{
	@tt_priv_helper = _tt_priv_probe() unless @tt_priv_helper;
	return @tt_priv_helper;
}

sub _tt_priv_probe
{
	# scripts/test.sh with TT_PRIV=0: never borrow the grant of another run
	return (undef, 'TT_PRIV=0: this run grants no privileged test helper')
	  if defined $ENV{TT_PRIV} && $ENV{TT_PRIV} eq '0';
	my $sudo = (grep { -x $_ } qw(/usr/bin/sudo /bin/sudo))[0];
	return (undef, "the privileged test helper $TT_PRIV_BIN is not installed (scripts/test.sh installs it)")
	  unless -x $TT_PRIV_BIN;
	return (undef, 'sudo is not installed') unless $sudo;
	my @cmd = ($sudo, '-n', $TT_PRIV_BIN);
	my ($out, $err) = ('', '');
	IPC::Run::run([ @cmd, 'check' ], '<', \undef, '>', \$out, '2>', \$err);
	return (\@cmd, undef) if $out eq "ok\n";
	chomp $err;
	return (undef, "OS user uid $< may not run $TT_PRIV_BIN through sudo -n ($err)");
}

sub tt_priv
{
	my (@args) = @_;
	my ($cmd, $why) = tt_priv_helper();
	if (!$cmd)
	{
		diag("tt_priv(@args): $why");
		return 0;
	}
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ @$cmd, @args ], '<', \undef, '>', \$out, '2>', \$err);
	note("task_tracker-test-priv @args: " . ($ok ? 'ok' : 'failed') . ($out ne '' ? "\n$out" : ''));
	diag("task_tracker-test-priv @args: $err") if !$ok || $err ne '';
	return $ok;
}

push @EXPORT, qw(tt_skip_test tt_priv_helper tt_priv);

=pod

=item tt_start_proxy(server => $unix_socket, listen_unix => $path | listen_port => $port, [cut_marker => $text, cut_log => $file, [inject => $bytes, inject_back => $n]])

Start a byte-for-byte proxy (a child perl process) in front of a server's
Unix socket, listening on a Unix socket path or on 127.0.0.1:port.  With
cut_marker, the first connection on which the server sends that text is
closed on both sides before the text is passed on, and "cut" is appended
to cut_log.  With inject as well, that connection is not closed: the
bytes inject are slipped in inject_back bytes (default 0) before the text,
and "injected" is appended to cut_log instead.  Returns (IPC::Run harness,
proxy pid); the caller ends it with kill_kill.

=cut

my $tt_proxy_code = <<'EOF';
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
my ($listen, $server_path, $marker, $log, $inject, $back) = @ARGV;
$inject = pack('H*', $inject);    # hex on the command line: it may hold NULs
my $l;
if ($listen =~ /^\d+$/)
{
	$l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $listen, Listen => 16, ReuseAddr => 1);
}
else
{
	unlink $listen;
	$l = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $listen, Listen => 16);
}
die "cannot listen on $listen: $!" unless $l;
my $sel = IO::Select->new($l);
my (%peer, %from_server, %tail);
my $cut = ($marker eq '');
$| = 1;
print "ready $$\n";
sub close_pair
{
	my ($fh) = @_;
	my $other = $peer{$fh};
	for my $s ($fh, $other)
	{
		next unless $s;
		$sel->remove($s);
		delete $peer{$s};
		delete $from_server{$s};
		delete $tail{$s};
		close($s);
	}
}
while (1)
{
	for my $fh ($sel->can_read)
	{
		if ($fh == $l)
		{
			my $c = $l->accept or next;
			my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $server_path);
			if (!$s) { close($c); next; }
			$peer{$c} = $s;
			$peer{$s} = $c;
			$from_server{$s} = 1;
			$tail{$s} = '';
			$sel->add($c, $s);
			next;
		}
		next unless $peer{$fh};
		my $buf;
		my $n = sysread($fh, $buf, 65536);
		if (!$n) { close_pair($fh); next; }
		if ($from_server{$fh} && !$cut)
		{
			my $seen = $tail{$fh} . $buf;
			if (index($seen, $marker) >= 0)
			{
				$cut = 1;
				open(my $lf, '>>', $log) or die;
				print $lf ($inject eq '' ? "cut\n" : "injected\n");
				close($lf);
				if ($inject eq '')
				{
					close_pair($fh);
					next;
				}
				my $at = index($buf, $marker) - $back;
				substr($buf, $at < 0 ? 0 : $at, 0) = $inject;
			}
			$tail{$fh} = substr($seen, -length($marker));
		}
		my $off = 0;
		while ($off < length($buf))
		{
			my $w = syswrite($peer{$fh}, $buf, length($buf) - $off, $off);
			if (!defined $w) { close_pair($fh); last; }
			$off += $w;
		}
	}
}
EOF

sub tt_start_proxy
{
	my (%o) = @_;
	my $listen = $o{listen_unix} // $o{listen_port};
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ $^X, '-e', $tt_proxy_code, $listen, $o{server}, $o{cut_marker} // '', $o{cut_log} // '',
		  unpack('H*', $o{inject} // ''), $o{inject_back} // 0 ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(300));
	$h->pump until $out =~ /ready (\d+)/;
	return ($h, $1);
}

push @EXPORT, qw(tt_start_proxy);

1;
