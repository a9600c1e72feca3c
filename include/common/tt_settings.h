/*-------------------------------------------------------------------------
 *
 * tt_settings.h
 *	  The common layer's settings and the checks every SQL entry point
 *	  makes: is the library preloaded, does it serve the installed SQL
 *	  objects (src/common/settings.c).
 *
 * The C variables carry the names of the settings they back (Citus's
 * names, see README "Configuration"); only the GUC machinery writes them.
 * Each role defines its own settings: include/worker/tt_worker.h,
 * include/coordinator/tt_coordinator.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_SETTINGS_H
#define TT_SETTINGS_H

/*
 * The library's version, which task_tracker.version() returns: the newest
 * version of the extension's SQL objects (sql/task_tracker--*.sql) this
 * library serves.  It serves every older one too, so a database whose
 * extension is not updated yet keeps working; a newer one is refused
 * (tt_check_sql_version).
 */
#define TASK_TRACKER_VERSION	"1.2"

/* settings both roles use */
extern int	node_connection_timeout;	/* ms to establish a connection */

/* true when loaded through shared_preload_libraries (set by _PG_init) */
extern bool tt_preloaded;

extern void tt_common_define_settings(void);
extern void tt_check_preloaded(void);
extern void tt_check_sql_version(void);

#endif							/* TT_SETTINGS_H */
