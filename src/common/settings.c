/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The common layer's settings (citus.node_connection_timeout), the check
 *	  that the library is preloaded, and the check that it serves the SQL
 *	  objects installed in the current database; task_tracker.version().
 *
 *	  What the version check allows: README, "Versions and upgrading".
 *
 * Locking
 *	  None: settings are set by the GUC machinery, the version check keeps
 *	  backend-local state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/sinval.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "common/tt_settings.h"

/* settings */
int			node_connection_timeout = 5000;

bool		tt_preloaded = false;

PG_FUNCTION_INFO_V1(task_tracker_version);

/*
 * tt_common_define_settings
 *		Define the settings both roles use (called from _PG_init).
 */
void
tt_common_define_settings(void)
{
	DefineCustomIntVariable("citus.node_connection_timeout",
							"Wall-clock limit on establishing a connection.",
							NULL,
							&node_connection_timeout,
							5000, 10, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

}

/*
 * tt_check_preloaded
 *		Error out unless the library was loaded at server start, or when the
 *		installed SQL objects are newer than it serves.
 */
void
tt_check_preloaded(void)
{
	if (!tt_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task_tracker must be loaded via shared_preload_libraries"),
				 errhint("Add task_tracker to shared_preload_libraries and restart the server.")));
	tt_check_sql_version();
}

/*
 * version_number
 *		"major.minor" as major * 1000 + minor; -1 when it is not that.
 */
static int
version_number(const char *version)
{
	char	   *end;
	long		major;
	long		minor;

	major = strtol(version, &end, 10);
	if (end == version || *end != '.' || major < 0 || major > 1000)
		return -1;
	version = end + 1;
	minor = strtol(version, &end, 10);
	if (end == version || *end != '\0' || minor < 0 || minor >= 1000)
		return -1;
	return major * 1000 + minor;
}

/*
 * installed_version
 *		The version of task_tracker installed in the current database
 *		(palloc'd), or NULL when it is not installed.
 */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("task_tracker"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * tt_check_sql_version
 *		Error out when the extension installed in the current database is
 *		newer than this library serves: ALTER EXTENSION task_tracker UPDATE
 *		ran after a package update while the server still runs the library
 *		it loaded at start.  An older installed version is fine.
 *
 *		pg_extension is read once per backend and database, and again after
 *		this backend processed any catalog invalidation (an update of the
 *		extension always changes catalogs: its script creates or replaces
 *		objects), so the check costs nothing in the steady state.
 */
void
tt_check_sql_version(void)
{
	static bool checked = false;
	static Oid	checked_db = InvalidOid;
	static uint64 checked_at = 0;	/* SharedInvalidMessageCounter then */
	uint64		counter = SharedInvalidMessageCounter;
	char	   *installed;

	if (checked && checked_db == MyDatabaseId && checked_at == counter)
		return;
	if (!IsTransactionState() || !OidIsValid(MyDatabaseId))
		return;
	installed = installed_version();
	if (installed != NULL)
	{
		int			n = version_number(installed);

		if (n < 0 || n > version_number(TASK_TRACKER_VERSION))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension task_tracker version %s is installed, but the loaded library serves versions up to %s",
							installed, TASK_TRACKER_VERSION),
					 errdetail("The extension was updated after the server loaded its library."),
					 errhint("Restart the server to load the library of version %s; if it is not installed, install the task_tracker package of that version.",
							 installed)));
		pfree(installed);
	}
	checked = true;
	checked_db = MyDatabaseId;
	checked_at = counter;
}

/*
 * task_tracker.version()
 *		The library's version: the newest version of the extension's SQL
 *		objects it serves (see above).  It never checks the installed
 *		version, so it answers even when that is newer.
 */
Datum
task_tracker_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(TASK_TRACKER_VERSION));
}
