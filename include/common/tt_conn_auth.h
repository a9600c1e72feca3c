/*-------------------------------------------------------------------------
 *
 * tt_conn_auth.h
 *	  How connections to other nodes authenticate: the citus.node_conninfo
 *	  setting, and authentication failures turned into errors that say
 *	  whose credentials were tried, where, and where to configure them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_CONN_AUTH_H
#define TT_CONN_AUTH_H

#include "common/tt_remote.h"

/* who made a connection that failed to authenticate (which HINT applies) */
typedef enum TTAuthSide
{
	TT_AUTH_COORDINATOR,		/* an executor, to a worker node */
	TT_AUTH_TRACKER				/* the tracker, to its own server */
} TTAuthSide;

/* citus.node_conninfo, and a counter bumped whenever it changes */
extern char *node_conninfo;
extern uint64 tt_node_conninfo_generation;

extern void tt_node_conninfo_define_setting(void);
extern int	tt_node_conninfo_options(const char *const **keywords,
									 const char *const **values);

extern bool tt_is_auth_failure(const char *sqlstate, const char *message);
extern void tt_auth_error(TTRemoteError *err, const char *message,
						  TTAuthSide side, const char *role,
						  const char *target, const char *dbname);

#endif							/* TT_CONN_AUTH_H */
