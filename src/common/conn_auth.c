/*-------------------------------------------------------------------------
 *
 * conn_auth.c
 *	  How connections to other nodes authenticate: the citus.node_conninfo
 *	  setting (libpq options added to every connection to another node),
 *	  and authentication failures turned into errors that name the role,
 *	  the target and the mechanism tried, with a hint saying where the
 *	  credentials are configured.
 *
 * Design
 *	  citus.node_conninfo is parsed once, by its check hook, with
 *	  PQconninfoParse().  Only options that choose how to authenticate and
 *	  protect the connection are accepted (an allow list: TLS settings,
 *	  passfile, GSSAPI, keepalives); the options the product sets itself
 *	  for each connection (user, dbname, host, hostaddr, port,
 *	  client_encoding, application_name, connect_timeout: the product keeps
 *	  its own deadlines) and anything else (options, service, password, ...)
 *	  are refused with the option named.  The parsed keyword/value pairs
 *	  live in the check hook's "extra" block; tt_conn_start() (remote.c)
 *	  appends them for connections to another node.  The tracker's sessions
 *	  to its own server do not take them: see docs/architecture.md,
 *	  "Authentication".
 *
 *	  An authentication failure is recognised by the server's SQLSTATE when
 *	  the caller has it (28P01) and otherwise by the text of the server's or
 *	  libpq's message (libpq 15 keeps the SQLSTATE of a start-up error to
 *	  itself; lc_messages C on the nodes is assumed, as elsewhere).  A
 *	  missing role, NOLOGIN or no CONNECT privilege is no authentication
 *	  failure: it keeps the plain connection error.
 *
 * Locking
 *	  None: the setting is process-local, like every GUC.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "libpq-fe.h"
#include "utils/elog.h"
#include "utils/guc.h"

#include "common/tt_conn_auth.h"

/* citus.node_conninfo */
char	   *node_conninfo = NULL;

/* bumped by every change of citus.node_conninfo (the connection cache
 * drops connections made under an older value) */
uint64		tt_node_conninfo_generation = 1;

/* the parsed options of citus.node_conninfo: the GUC's "extra" block */
typedef struct NodeConninfoOptions
{
	int			n;				/* number of options */
	const char **keywords;		/* n keywords, in this block */
	const char **values;		/* n values, in this block */
} NodeConninfoOptions;

static NodeConninfoOptions *node_conninfo_options = NULL;

/* the libpq options citus.node_conninfo may set */
static const char *const allowed_options[] = {
	"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir",
	"sslsni", "sslcompression", "ssl_min_protocol_version",
	"ssl_max_protocol_version", "passfile", "channel_binding",
	"gssencmode", "krbsrvname", "gsslib", "requirepeer",
	"keepalives", "keepalives_idle", "keepalives_interval",
	"keepalives_count", "tcp_user_timeout",
	NULL
};

static bool
option_allowed(const char *keyword)
{
	for (int i = 0; allowed_options[i] != NULL; i++)
	{
		if (strcmp(allowed_options[i], keyword) == 0)
			return true;
	}
	return false;
}

/*
 * check_node_conninfo
 *		GUC check hook: parse the value with PQconninfoParse and accept it
 *		only when every option it sets is in allowed_options.  On success
 *		*extra is a malloc'd NodeConninfoOptions holding the pairs.  On
 *		failure the error (invalid parameter value, 22023) has a DETAIL
 *		naming the option or libpq's parse error.
 */
static bool
check_node_conninfo(char **newval, void **extra, GucSource source)
{
	PQconninfoOption *opts;
	PQconninfoOption *o;
	char	   *errmsg = NULL;
	NodeConninfoOptions *parsed;
	Size		size;
	int			n = 0;
	char	   *strings;

	if (*newval == NULL || (*newval)[strspn(*newval, " \t\r\n")] == '\0')
		opts = NULL;
	else
	{
		opts = PQconninfoParse(*newval, &errmsg);
		if (opts == NULL)
		{
			if (errmsg != NULL)
			{
				int			len = strlen(errmsg);

				while (len > 0 && errmsg[len - 1] == '\n')
					errmsg[--len] = '\0';
				GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
				GUC_check_errdetail("%s", errmsg);
				PQfreemem(errmsg);
			}
			else
				GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
			return false;
		}
	}

	size = MAXALIGN(sizeof(NodeConninfoOptions));
	for (o = opts; o != NULL && o->keyword != NULL; o++)
	{
		if (o->val == NULL)
			continue;
		if (!option_allowed(o->keyword))
		{
			GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
			GUC_check_errmsg("citus.node_conninfo must not set \"%s\"", o->keyword);
			if (strcmp(o->keyword, "connect_timeout") == 0)
				GUC_check_errdetail("Option \"%s\" is controlled by task_tracker: it keeps its own connection deadline, citus.node_connection_timeout.",
									o->keyword);
			else if (strcmp(o->keyword, "password") == 0 ||
					 strcmp(o->keyword, "sslpassword") == 0)
				GUC_check_errdetail("Option \"%s\" would keep a secret in the server's settings; use a password file (passfile) or an unencrypted key file readable only by the server.",
									o->keyword);
			else
				GUC_check_errdetail("Option \"%s\" is controlled by task_tracker for each connection and cannot be set in citus.node_conninfo.",
									o->keyword);
			GUC_check_errhint("citus.node_conninfo takes the options that say how to authenticate and protect connections: sslmode, sslrootcert, sslcert, sslkey, sslcrl, sslcrldir, passfile, channel_binding, gssencmode, keepalives and the like.");
			PQconninfoFree(opts);
			return false;
		}
		n++;
		size += 2 * sizeof(char *) + strlen(o->keyword) + strlen(o->val) + 2;
	}

	parsed = malloc(size);
	if (parsed == NULL)
	{
		PQconninfoFree(opts);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	parsed->n = n;
	parsed->keywords = (const char **) ((char *) parsed + MAXALIGN(sizeof(NodeConninfoOptions)));
	parsed->values = parsed->keywords + n;
	strings = (char *) (parsed->values + n);
	n = 0;
	for (o = opts; o != NULL && o->keyword != NULL; o++)
	{
		if (o->val == NULL)
			continue;
		strcpy(strings, o->keyword);
		parsed->keywords[n] = strings;
		strings += strlen(o->keyword) + 1;
		strcpy(strings, o->val);
		parsed->values[n] = strings;
		strings += strlen(o->val) + 1;
		n++;
	}
	if (opts != NULL)
		PQconninfoFree(opts);
	*extra = parsed;
	return true;
}

static void
assign_node_conninfo(const char *newval, void *extra)
{
	node_conninfo_options = (NodeConninfoOptions *) extra;
	tt_node_conninfo_generation++;
}

/*
 * tt_node_conninfo_define_setting
 *		Define citus.node_conninfo (called from _PG_init, through the
 *		coordinator's settings).
 */
void
tt_node_conninfo_define_setting(void)
{
	DefineCustomStringVariable("citus.node_conninfo",
							   "libpq options added to every connection to another node.",
							   "TLS and authentication options only (sslmode, sslrootcert, sslcert, sslkey, sslcrl, passfile, ...); "
							   "user, database, host, port, client_encoding, application_name and connect_timeout are set by task_tracker.",
							   &node_conninfo,
							   "",
							   PGC_SIGHUP, 0,
							   check_node_conninfo, assign_node_conninfo, NULL);
}

/*
 * tt_node_conninfo_options
 *		The options of citus.node_conninfo, for a connection to another node
 *		(TTConnTarget.option_keywords / option_values): returns their number
 *		and points *keywords and *values at them.  Never throws; the arrays
 *		stay valid until the setting changes.
 */
int
tt_node_conninfo_options(const char *const **keywords, const char *const **values)
{
	const NodeConninfoOptions *opts = node_conninfo_options;

	if (opts == NULL)
	{
		*keywords = NULL;
		*values = NULL;
		return 0;
	}
	*keywords = (const char *const *) opts->keywords;
	*values = (const char *const *) opts->values;
	return opts->n;
}

/*
 * tt_is_auth_failure
 *		Did a connection attempt fail to authenticate (the credentials were
 *		refused, none could be found, or no pg_hba.conf line lets the
 *		connection in), or fail to set up the TLS its options ask for?
 *		sqlstate is the server's when the caller knows it, else NULL;
 *		message is the connection's error text.
 */
bool
tt_is_auth_failure(const char *sqlstate, const char *message)
{
	static const char *const markers[] = {
		" authentication failed",	/* "password authentication failed ..." */
		"no pg_hba.conf entry",
		"fe_sendauth:",			/* libpq: "no password supplied" */
		"requires a valid client certificate",
		"certificate",			/* libpq's TLS set-up: cert files, verify */
		"private key",
		"SSL error:",
		"server does not support SSL",
		NULL
	};

	if (sqlstate != NULL && strcmp(sqlstate, "28P01") == 0)
		return true;
	if (message == NULL)
		return false;
	for (int i = 0; markers[i] != NULL; i++)
	{
		if (strstr(message, markers[i]) != NULL)
			return true;
	}
	return false;
}

/*
 * auth_mechanism
 *		The authentication mechanism an error message shows was tried, in
 *		words, or NULL when it does not tell.
 */
static char *
auth_mechanism(const char *message)
{
	const char *p = strstr(message, " authentication failed");

	if (p != NULL)
	{
		const char *start = p;

		/* the word before: "password", "certificate", "Peer", "Ident", ... */
		while (start > message && start[-1] != ' ' && start[-1] != '\t' &&
			   start[-1] != '\n')
			start--;
		if (start < p)
			return psprintf("%.*s authentication", (int) (p - start), start);
	}
	if (strstr(message, "fe_sendauth: no password supplied") != NULL)
		return pstrdup("password authentication, but no password was found for this role and node (no password file entry)");
	if (strstr(message, "requires a valid client certificate") != NULL)
		return pstrdup("certificate authentication, but no client certificate was presented");
	if (strstr(message, "no pg_hba.conf entry") != NULL)
		return pstrdup("none: no pg_hba.conf line of the target matches this connection");
	if (strstr(message, "certificate") != NULL ||
		strstr(message, "private key") != NULL ||
		strstr(message, "SSL") != NULL)
		return pstrdup("TLS set-up (certificates)");
	return NULL;
}

/*
 * tt_auth_error
 *		Fill err with an authentication failure: SQLSTATE 08001 (like every
 *		failed connection), a message naming the role, the target and the
 *		database, a DETAIL with the mechanism tried and the original
 *		message, and a HINT saying where the credentials are configured
 *		(which depends on side).  Allocates in the current context.
 */
void
tt_auth_error(TTRemoteError *err, const char *message, TTAuthSide side,
			  const char *role, const char *target, const char *dbname)
{
	char	   *mechanism = auth_mechanism(message);

	memset(err, 0, sizeof(*err));
	strlcpy(err->sqlstate, "08001", sizeof(err->sqlstate));
	err->message = psprintf("could not authenticate as role \"%s\" to %s, database \"%s\"",
							role, target, dbname);
	err->detail = psprintf("Mechanism tried: %s. libpq reported: %s",
						   mechanism ? mechanism : "unknown", message);
	if (side == TT_AUTH_COORDINATOR)
		err->hint = pstrdup("The coordinator logs in to worker nodes as the current user, with the options of citus.node_conninfo: "
							"give it a client certificate there (sslcert, sslkey) that the node's pg_hba.conf accepts for this role "
							"(hostssl ... cert map=..., and a pg_ident.conf line), or a password file (passfile); "
							"see \"Production set-up\" in the README.");
	else
		err->hint = pstrdup("The tracker logs in to its own server as the task's owner: "
							"set citus.task_tracker_use_background_workers = on on this node so that tasks need no login, "
							"or give the role a pg_hba.conf \"local\" line the tracker can use; "
							"see \"Production set-up\" in the README.");
}
