
# Issue 9, defect 4: the tracker signals only backends of this server.
# citus.task_tracker_host points at a proxy (a stand-in for a pooler) that
# forwards to this same server but reports another process's pid in its
# BackendKeyData: the pid of a bystander process of the same OS user.  The
# tracker used to cancel with kill(PQbackendPID(conn), SIGINT), later
# SIGTERM: the bystander died and the task's statement went on.  Now the
# identity query shows the session's backend is not the pid the connection
# reported, so the tracker signals nothing.  Nor does it send a cancel
# request: the proxy, like a frozen pooler, accepts cancel connections and
# never answers, and PQcancel (which the tracker used next) waits for that
# answer with no timeout, so cleanup_job hung with the whole tracker.  The
# tracker closes the session instead; the server, with
# client_connection_check_interval set, stops the statement: it stops, the
# bystander lives, cleanup_job returns.

use strict;
use warnings;

use IO::Select;
use IO::Socket::UNIX;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskTrackerTest;

my $node = tt_node('signals_proxy');
tt_create_role($node, 'alice');
my $port = $node->port;
my $real = $node->host . "/.s.PGSQL.$port";
my $pdir = PostgreSQL::Test::Utils::tempdir_short();
my $psock = "$pdir/.s.PGSQL.$port";

# the bystander: a process of ours that must not get any signal
my $bystander = fork();
die "fork: $!" unless defined $bystander;
if ($bystander == 0)
{
	POSIX::pause() while 1;
	POSIX::_exit(0);
}

# proxy($listener, $real, $fake_pid): forward connections; replace the pid of
# BackendKeyData with $fake_pid; a CancelRequest gets no answer, ever
sub proxy
{
	my ($server, $target, $fake) = @_;
	my $sel = IO::Select->new($server);
	my (%peer, %inbuf, %from_server, %started, %keys, @frozen);
	for (;;)
	{
		for my $fh ($sel->can_read)
		{
			if ($fh == $server)
			{
				my $c = $server->accept or next;
				$sel->add($c);
				$inbuf{$c} = '';
				$started{$c} = 0;
				next;
			}
			my $buf;
			my $n = sysread($fh, $buf, 65536);
			if (!$n)
			{
				my $other = $peer{$fh};
				for my $h (grep { defined } $fh, $other)
				{
					$sel->remove($h);
					delete $peer{$h};
					close($h);
				}
				next;
			}
			if ($from_server{$fh})
			{
				my $c = $peer{$fh};
				if (!$started{$c})
				{
					# parse messages until BackendKeyData
					$inbuf{$fh} .= $buf;
					$buf = '';
					while (length($inbuf{$fh}) >= 5)
					{
						my ($type, $len) = unpack('a N', $inbuf{$fh});
						last if length($inbuf{$fh}) < 1 + $len;
						my $msg = substr($inbuf{$fh}, 0, 1 + $len, '');
						if ($type eq 'K')
						{
							my ($pid, $key) = unpack('x5 N N', $msg);
							$keys{$key} = $pid;
							$msg = pack('a N N N', 'K', 12, $fake, $key);
							$started{$c} = 1;
						}
						$buf .= $msg;
					}
					if ($started{$c})
					{
						$buf .= $inbuf{$fh};
						$inbuf{$fh} = '';
					}
				}
				syswrite($c, $buf) if defined $c && length $buf;
				next;
			}
			if (!$peer{$fh})
			{
				# the first message of a client: a startup packet or a cancel
				$inbuf{$fh} .= $buf;
				next if length($inbuf{$fh}) < 8;
				my ($len, $code) = unpack('N N', $inbuf{$fh});
				next if length($inbuf{$fh}) < $len;
				if ($code == 80877102)
				{
					# frozen: keep the cancel connection open, never answer
					$sel->remove($fh);
					push @frozen, $fh;
					next;
				}
				my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $target) or die "connect: $!";
				$peer{$fh} = $s;
				$peer{$s} = $fh;
				$from_server{$s} = 1;
				$inbuf{$s} = '';
				$sel->add($s);
				syswrite($s, $inbuf{$fh});
				$inbuf{$fh} = '';
				next;
			}
			syswrite($peer{$fh}, $buf);
		}
	}
}

# listening before the fork: the proxy is ready once it runs
my $listener = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $psock, Listen => 64)
  or die "listen $psock: $!";
my $proxy = fork();
die "fork: $!" unless defined $proxy;
if ($proxy == 0)
{
	proxy($listener, $real, $bystander);
	POSIX::_exit(0);
}
END
{
	kill 'KILL', grep { defined && $_ > 0 } $proxy, $bystander;
}
close($listener);

$node->append_conf('postgresql.conf',
	"citus.task_tracker_host = '$pdir'\nclient_connection_check_interval = '100ms'\n");
$node->reload;
ok( $node->poll_query_until('postgres', qq{SELECT current_setting('citus.task_tracker_host') = '$pdir'}),
	'the tracker connects through the proxy');

tt_sql($node, q{SELECT task_tracker.assign_task(207, 0, 'SELECT pg_sleep(600)')}, user => 'alice');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'task_tracker'
		    AND query LIKE '%pg_sleep(600)%' AND state = 'active'}, '1'),
	'the task runs, through the proxy');
is(tt_sql($node, 'SELECT backend_pid FROM task_tracker.tasks WHERE job_id = 207'), $bystander,
	'the connection reported the bystander\'s pid as its backend');

my ($rc, $out, $err) = tt_psql($node,
	q{SET statement_timeout = '30s'; SELECT task_tracker.cleanup_job(207)}, user => 'alice');
is($rc, 0, 'cleanup_job returns') or diag($err);
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%'
		    AND pid <> pg_backend_pid()}, '0'),
	'the statement was stopped (its session closed, no cancel request)');
is(waitpid($bystander, POSIX::WNOHANG()), 0, 'the bystander got no signal: it still runs');

tt_check_no_leftovers($node);
$node->stop;
done_testing();
