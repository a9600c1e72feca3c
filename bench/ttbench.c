/*-------------------------------------------------------------------------
 *
 * ttbench.c
 *	  The libpq client of the task_tracker benchmark (bench/run compiles it
 *	  with gcc -lpq).  It times SQL calls one by one with CLOCK_MONOTONIC
 *	  and prints one JSON object per measurement on stdout.
 *
 *	  ttbench lat    -d CONN [-n N] [-w W] [-S SETUP]... [-e K -E SQL] [-x VALUE] -s SQL
 *		Runs SQL N times (after W untimed warm-up runs) on one connection with
 *		PQexec and times each call.  "{i}" in SQL and in -E is replaced by
 *		the iteration number (1, 2, ... counting the warm-up runs).  -x
 *		checks the first value of the last result.  -E runs, untimed, after
 *		every K-th iteration (e.g. a cleanup).
 *
 *	  ttbench par    -d CONN -c K -N TOTAL [-n N] [-w W] [-S SETUP]... -s SQL
 *		Splits 1..TOTAL into K contiguous slices and runs SQL ("{lo}",
 *		"{hi}" replaced by each slice's bounds) on K connections at once;
 *		times the wall clock until all K are done.  Repeated N times.
 *
 *	  ttbench copy   -d CONN [-n N] [-w W] -s "COPY (...) TO STDOUT"
 *		Times a COPY TO STDOUT read to the end with PQgetCopyData, and
 *		counts its bytes.
 *
 *	  ttbench cancel -d COORD -p WORKER1 -p WORKER2 -L LOG1 -L LOG2 -k EXPECT
 *	                 [-n N] [-w W] [-S SETUP]... -q POLLSQL -s JOBSQL
 *		Sends JOBSQL to the coordinator, polls both workers with POLLSQL
 *		(which must return one count) until EXPECT remote backends run.
 *		Then, by server clocks and without polling: a second coordinator
 *		session calls pg_cancel_backend() on the first and reads its own
 *		clock_timestamp() (t0); t1 is the latest "canceling statement due
 *		to user request" line of a pg_sleep(30) statement in the workers'
 *		logs LOG1, LOG2 (log_line_prefix = '%n [%p] ').  Reports t1 - t0,
 *		and the time until the client got its error, of N rounds after W
 *		(default 1) uncounted ones in which the session's connections to
 *		the workers are set up (the targets are for warm connections).
 *
 *	  Output: {"n":..,"median_ms":..,"p95_ms":..,"min_ms":..,"max_ms":..,
 *	  "mean_ms":..,"samples_ms":[...]} plus mode-specific fields.
 *	  Errors: a message on stderr and exit status 1.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_SETUP	16
#define MAX_CONNS	64

static const char *conninfo;
static const char *worker_conninfo[2];
static const char *sql;
static const char *every_sql;
static const char *expect_value;
static const char *poll_sql;
static const char *log_path[2];
static const char *setup_sql[MAX_SETUP];
static int	nsetup;
static int	iterations = 10;
static int	warmup = 1;
static int	every = 0;
static int	nconns = 1;
static long total = 0;
static int	expect_remote = 1;

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void
die(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "ttbench: ");
	fprintf(stderr, fmt, a ? a : "", b ? b : "");
	fprintf(stderr, "\n");
	exit(1);
}

/* replace every occurrence of key in s by the decimal value v (caller frees) */
static char *
subst(const char *s, const char *key, long v)
{
	char		num[32];
	size_t		klen = strlen(key), nlen, cap;
	char	   *out, *o;
	const char *p;

	snprintf(num, sizeof(num), "%ld", v);
	nlen = strlen(num);
	cap = strlen(s) * (nlen > klen ? nlen : 1) + 1;
	out = o = malloc(cap + 64);
	for (p = s; *p;)
	{
		if (strncmp(p, key, klen) == 0)
		{
			memcpy(o, num, nlen);
			o += nlen;
			p += klen;
		}
		else
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

static PGconn *
connect_or_die(const char *ci)
{
	PGconn	   *c = PQconnectdb(ci);

	if (PQstatus(c) != CONNECTION_OK)
		die("connection failed: %s%s", PQerrorMessage(c), NULL);
	return c;
}

/* run a statement, die unless it succeeded; returns the last result */
static PGresult *
exec_ok(PGconn *c, const char *q)
{
	PGresult   *r = PQexec(c, q);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
	{
		char		buf[300];

		snprintf(buf, sizeof(buf), "%.290s", q);
		die("%s  [statement: %s]", PQresultErrorMessage(r), buf);
	}
	return r;
}

static void
run_setup(PGconn *c)
{
	for (int i = 0; i < nsetup; i++)
		PQclear(exec_ok(c, setup_sql[i]));
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a, y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted samples */
static double
pct(const double *s, int n, double p)
{
	int			k;

	if (n == 0)
		return 0;
	k = (int) (p * n + 0.999999) - 1;
	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return s[k];
}

static double
median(const double *s, int n)
{
	if (n == 0)
		return 0;
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* print the stats object; extra is appended verbatim (",\"k\":v" or "") */
static void
print_stats(double *samples, int n, const char *extra)
{
	double		sum = 0;
	double	   *sorted = malloc(sizeof(double) * (n ? n : 1));

	memcpy(sorted, samples, sizeof(double) * n);
	qsort(sorted, n, sizeof(double), cmp_double);
	for (int i = 0; i < n; i++)
		sum += samples[i];
	printf("{\"n\":%d,\"median_ms\":%.4f,\"p95_ms\":%.4f,\"min_ms\":%.4f,"
		   "\"max_ms\":%.4f,\"mean_ms\":%.4f",
		   n, median(sorted, n), pct(sorted, n, 0.95), n ? sorted[0] : 0,
		   n ? sorted[n - 1] : 0, n ? sum / n : 0);
	if (n <= 200)
	{
		printf(",\"samples_ms\":[");
		for (int i = 0; i < n; i++)
			printf("%s%.4f", i ? "," : "", samples[i]);
		printf("]");
	}
	printf("%s}\n", extra ? extra : "");
	free(sorted);
}

static int
mode_lat(void)
{
	PGconn	   *c = connect_or_die(conninfo);
	double	   *samples = malloc(sizeof(double) * iterations);
	int			n = 0;

	run_setup(c);
	for (int it = 1; it <= warmup + iterations; it++)
	{
		char	   *q = subst(sql, "{i}", it);
		double		t0 = now_ms(), t1;
		PGresult   *r = exec_ok(c, q);

		t1 = now_ms();
		if (expect_value)
		{
			const char *v = (PQntuples(r) > 0 && PQnfields(r) > 0) ? PQgetvalue(r, 0, 0) : "(no row)";

			if (strcmp(v, expect_value) != 0)
				die("unexpected result \"%s\" (expected \"%s\")", v, expect_value);
		}
		PQclear(r);
		free(q);
		if (it > warmup)
			samples[n++] = t1 - t0;
		if (every > 0 && every_sql && it % every == 0)
		{
			q = subst(every_sql, "{i}", it);
			PQclear(exec_ok(c, q));
			free(q);
		}
	}
	print_stats(samples, n, NULL);
	PQfinish(c);
	return 0;
}

static int
mode_par(void)
{
	PGconn	   *c[MAX_CONNS];
	double	   *samples = malloc(sizeof(double) * iterations);
	int			n = 0;

	if (nconns < 1 || nconns > MAX_CONNS || total < nconns)
		die("bad -c or -N%s%s", NULL, NULL);
	for (int k = 0; k < nconns; k++)
	{
		c[k] = connect_or_die(conninfo);
		run_setup(c[k]);
	}
	for (int it = 1; it <= warmup + iterations; it++)
	{
		double		t0 = now_ms();
		int			busy = nconns;
		int			isbusy[MAX_CONNS];

		for (int k = 0; k < nconns; k++)
		{
			long		lo = total * k / nconns + 1;
			long		hi = total * (k + 1) / nconns;
			char	   *a = subst(sql, "{lo}", lo);
			char	   *q = subst(a, "{hi}", hi);

			if (!PQsendQuery(c[k], q))
				die("send failed: %s%s", PQerrorMessage(c[k]), NULL);
			free(a);
			free(q);
			isbusy[k] = 1;
		}
		while (busy > 0)
		{
			struct pollfd pfd[MAX_CONNS];
			int			map[MAX_CONNS], np = 0;

			for (int k = 0; k < nconns; k++)
				if (isbusy[k])
				{
					pfd[np].fd = PQsocket(c[k]);
					pfd[np].events = POLLIN;
					map[np++] = k;
				}
			if (poll(pfd, np, -1) < 0 && errno != EINTR)
				die("poll failed%s%s", NULL, NULL);
			for (int j = 0; j < np; j++)
			{
				int			k = map[j];
				PGresult   *r;

				if (!(pfd[j].revents & (POLLIN | POLLERR | POLLHUP)))
					continue;
				if (!PQconsumeInput(c[k]))
					die("connection lost: %s%s", PQerrorMessage(c[k]), NULL);
				while (!PQisBusy(c[k]))
				{
					r = PQgetResult(c[k]);
					if (r == NULL)
					{
						isbusy[k] = 0;
						busy--;
						break;
					}
					if (PQresultStatus(r) != PGRES_TUPLES_OK &&
						PQresultStatus(r) != PGRES_COMMAND_OK)
						die("%s%s", PQresultErrorMessage(r), NULL);
					PQclear(r);
				}
			}
		}
		if (it > warmup)
			samples[n++] = now_ms() - t0;
	}
	print_stats(samples, n, NULL);
	for (int k = 0; k < nconns; k++)
		PQfinish(c[k]);
	return 0;
}

static int
mode_copy(void)
{
	PGconn	   *c = connect_or_die(conninfo);
	double	   *samples = malloc(sizeof(double) * iterations);
	int			n = 0;
	long long	bytes = 0;
	char		extra[64];

	run_setup(c);
	for (int it = 1; it <= warmup + iterations; it++)
	{
		double		t0 = now_ms();
		PGresult   *r = PQexec(c, sql);
		char	   *buf;
		int			len;

		if (PQresultStatus(r) != PGRES_COPY_OUT)
			die("COPY failed: %s%s", PQresultErrorMessage(r), NULL);
		PQclear(r);
		bytes = 0;
		while ((len = PQgetCopyData(c, &buf, 0)) > 0)
		{
			bytes += len;
			PQfreemem(buf);
		}
		if (len == -2)
			die("COPY read failed: %s%s", PQerrorMessage(c), NULL);
		while ((r = PQgetResult(c)) != NULL)
		{
			if (PQresultStatus(r) != PGRES_COMMAND_OK)
				die("COPY failed: %s%s", PQresultErrorMessage(r), NULL);
			PQclear(r);
		}
		if (it > warmup)
			samples[n++] = now_ms() - t0;
	}
	snprintf(extra, sizeof(extra), ",\"bytes\":%lld", bytes);
	print_stats(samples, n, extra);
	PQfinish(c);
	return 0;
}

static long
poll_count(PGconn *c)
{
	PGresult   *r = exec_ok(c, poll_sql);
	long		v = atol(PQgetvalue(r, 0, 0));

	PQclear(r);
	return v;
}

/*
 * The server-clock cancel method (issue 12).  Worker logs carry
 * log_line_prefix = '%n [%p] ' (epoch with milliseconds, then the pid), so
 * every "canceling statement due to user request" line says when a remote
 * statement stopped, by the same clock as the coordinator's
 * clock_timestamp().  A cancelled statement's ERROR line is followed by its
 * STATEMENT line from the same pid; only statements containing
 * STATEMENT_MARK count (the job's own remote statements, not the
 * coordinator's wait or cleanup calls).
 */
#define CANCEL_LINE		"canceling statement due to user request"
#define STATEMENT_MARK	"pg_sleep(30)"
#define MAX_PIDS		256

typedef struct LogScan
{
	FILE	   *f;				/* the worker's server log */
	long		offset;			/* where this round's lines begin */
	int			npids;			/* pids with a cancel line not yet paired */
	long		pid[MAX_PIDS];
	double		at[MAX_PIDS];	/* epoch ms of that cancel line */
} LogScan;

static long
log_size(const char *path)
{
	FILE	   *f = fopen(path, "r");
	long		n;

	if (!f)
		die("cannot open log %s%s", path, NULL);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	return n;
}

/*
 * Read the lines added to the log since the last call; count the cancelled
 * job statements stopped at or after t0 (epoch ms) into *found and keep the
 * latest of their times in *last.  A partial last line is left for the next
 * call.
 */
static void
log_scan(LogScan *ls, double t0, int *found, double *last)
{
	char		line[8192];

	fseek(ls->f, ls->offset, SEEK_SET);
	while (fgets(line, sizeof(line), ls->f))
	{
		size_t		len = strlen(line);
		double		at;
		long		pid;
		char	   *p;

		if (len == 0 || line[len - 1] != '\n')
			break;				/* not complete yet */
		ls->offset = ftell(ls->f);
		at = strtod(line, &p) * 1000.0;
		if (p == line || sscanf(p, " [%ld]", &pid) != 1)
			continue;			/* a continuation line */
		if (strstr(line, CANCEL_LINE))
		{
			/*
			 * %n is cut to the millisecond: a line of the millisecond t0
			 * falls in stopped at or after t0 (a cancel faster than 1 ms
			 * was not counted at all before)
			 */
			if (at + 1.0 > t0 && ls->npids < MAX_PIDS)
			{
				ls->pid[ls->npids] = pid;
				ls->at[ls->npids++] = at;
			}
		}
		else if (strstr(line, "STATEMENT:"))
		{
			for (int i = 0; i < ls->npids; i++)
			{
				if (ls->pid[i] != pid)
					continue;
				if (strstr(line, STATEMENT_MARK))
				{
					(*found)++;
					if (ls->at[i] > *last)
						*last = ls->at[i];
				}
				ls->pid[i] = ls->pid[--ls->npids];
				ls->at[i] = ls->at[ls->npids];
				break;
			}
		}
	}
}

static double
epoch_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int
mode_cancel(void)
{
	PGconn	   *coord = connect_or_die(conninfo);
	PGconn	   *ctl = connect_or_die(conninfo);
	PGconn	   *w[2];
	double	   *stopped = malloc(sizeof(double) * iterations);
	double	   *client = malloc(sizeof(double) * iterations);
	int			n = 0, missing = 0;
	char		extra[4096], cancel_sql[128];
	size_t		off;

	run_setup(coord);
	snprintf(cancel_sql, sizeof(cancel_sql),
			 "SELECT extract(epoch FROM clock_timestamp())::float8 * 1000, pg_cancel_backend(%d)",
			 PQbackendPID(coord));
	w[0] = connect_or_die(worker_conninfo[0]);
	w[1] = connect_or_die(worker_conninfo[1]);
	/* the first -w rounds warm the job's connections up and are not counted */
	for (int it = 1; it <= warmup + iterations; it++)
	{
		LogScan		ls[2];
		double		t0, last = 0, deadline;
		int			found = 0;
		PGresult   *r;

		/* nothing of the previous round may still run */
		deadline = now_ms() + 30000;
		while (poll_count(w[0]) + poll_count(w[1]) > 0)
		{
			if (now_ms() > deadline)
				die("remote backends of the previous round still run%s%s", NULL, NULL);
			usleep(2000);
		}
		for (int i = 0; i < 2; i++)
		{
			ls[i].offset = log_size(log_path[i]);
			ls[i].npids = 0;
			ls[i].f = fopen(log_path[i], "r");
		}
		if (!PQsendQuery(coord, sql))
			die("send failed: %s%s", PQerrorMessage(coord), NULL);
		/* before the cancel: wait until the job's statements all run */
		deadline = now_ms() + 20000;
		while (poll_count(w[0]) + poll_count(w[1]) < expect_remote)
		{
			if (now_ms() > deadline)
				die("the job's remote backends did not all start%s%s", NULL, NULL);
			usleep(2000);
			if (!PQconsumeInput(coord))
				die("coordinator connection lost: %s%s", PQerrorMessage(coord), NULL);
			if (!PQisBusy(coord))
			{
				r = PQgetResult(coord);
				die("the job ended before it was cancelled: %s%s",
					r ? PQresultErrorMessage(r) : "", NULL);
			}
		}

		/* t0: the coordinator's clock as pg_cancel_backend() is called */
		r = exec_ok(ctl, cancel_sql);
		t0 = atof(PQgetvalue(r, 0, 0));
		PQclear(r);

		/* the client's error: wait on the socket, no polling of anything */
		deadline = now_ms() + 10000;
		client[n] = 10000;
		for (;;)
		{
			struct pollfd pfd = {PQsocket(coord), POLLIN, 0};

			if (!PQconsumeInput(coord))
				die("coordinator connection lost: %s%s", PQerrorMessage(coord), NULL);
			if (!PQisBusy(coord))
			{
				client[n] = epoch_ms() - t0;
				break;
			}
			if (now_ms() > deadline)
				break;
			(void) poll(&pfd, 1, 100);
		}
		while ((r = PQgetResult(coord)) != NULL)
		{
			const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

			if (PQresultStatus(r) != PGRES_FATAL_ERROR || !state || strcmp(state, "57014") != 0)
				fprintf(stderr, "ttbench: cancel answered %s %s", PQresStatus(PQresultStatus(r)),
						PQresultErrorMessage(r));
			PQclear(r);
		}

		/*
		 * t1: the last stopped remote statement, from the worker logs.  The
		 * lines may still be on their way: the logs are read again every 5
		 * ms until all expected lines are there (10 s at most).  Reading a
		 * file does not load the servers; the figure comes from their clocks.
		 */
		deadline = now_ms() + 10000;
		for (;;)
		{
			log_scan(&ls[0], t0, &found, &last);
			log_scan(&ls[1], t0, &found, &last);
			if (found >= expect_remote || now_ms() > deadline)
				break;
			usleep(5000);
		}
		fclose(ls[0].f);
		fclose(ls[1].f);
		if (found < expect_remote)
		{
			if (it > warmup)
				missing += expect_remote - found;
			stopped[n] = 10000;		/* reported as the 10 s cap */
		}
		else
			stopped[n] = last > t0 ? last - t0 : 0;	/* within t0's millisecond */
		if (it > warmup)
			n++;
	}
	{
		double		s[1024];

		memcpy(s, client, sizeof(double) * n);
		qsort(s, n, sizeof(double), cmp_double);
		off = snprintf(extra, sizeof(extra), ",\"method\":\"server clocks\",\"client_error_median_ms\":%.4f,\"client_error_samples_ms\":[", median(s, n));
		for (int i = 0; i < n && off < sizeof(extra) - 40; i++)
			off += snprintf(extra + off, sizeof(extra) - off, "%s%.4f", i ? "," : "", client[i]);
		snprintf(extra + off, sizeof(extra) - off, "],\"not_stopped\":%d", missing);
	}
	print_stats(stopped, n, extra);
	PQfinish(w[0]);
	PQfinish(w[1]);
	PQfinish(ctl);
	PQfinish(coord);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *mode;
	int			opt, nworkers = 0, nlogs = 0;

	if (argc < 2)
	{
		fprintf(stderr, "usage: ttbench lat|par|copy|cancel [options] (see the source's header)\n");
		return 2;
	}
	mode = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "d:p:s:S:n:w:e:E:x:c:N:k:q:L:")) != -1)
	{
		switch (opt)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'p':
				if (nworkers < 2)
					worker_conninfo[nworkers++] = optarg;
				break;
			case 's':
				sql = optarg;
				break;
			case 'S':
				if (nsetup < MAX_SETUP)
					setup_sql[nsetup++] = optarg;
				break;
			case 'n':
				iterations = atoi(optarg);
				break;
			case 'w':
				warmup = atoi(optarg);
				break;
			case 'e':
				every = atoi(optarg);
				break;
			case 'E':
				every_sql = optarg;
				break;
			case 'x':
				expect_value = optarg;
				break;
			case 'c':
				nconns = atoi(optarg);
				break;
			case 'N':
				total = atol(optarg);
				break;
			case 'k':
				expect_remote = atoi(optarg);
				break;
			case 'q':
				poll_sql = optarg;
				break;
			case 'L':
				if (nlogs < 2)
					log_path[nlogs++] = optarg;
				break;
			default:
				return 2;
		}
	}
	if (!conninfo || !sql || iterations < 1 || iterations > 100000)
		die("-d and -s are required, 1 <= -n <= 100000%s%s", NULL, NULL);
	if (strcmp(mode, "lat") == 0)
		return mode_lat();
	if (strcmp(mode, "par") == 0)
		return mode_par();
	if (strcmp(mode, "copy") == 0)
		return mode_copy();
	if (strcmp(mode, "cancel") == 0)
	{
		if (nworkers != 2 || nlogs != 2 || !poll_sql || iterations > 1000)
			die("cancel needs two -p, two -L, -q and -n <= 1000%s%s", NULL, NULL);
		return mode_cancel();
	}
	die("unknown mode %s%s", mode, NULL);
	return 2;
}
