/*-------------------------------------------------------------------------
 *
 * result_file.c
 *	  Result files: writing a task's rows as they arrive, reading them back
 *	  as typed tuples, and removing the files of a job.
 *
 * Design
 *	  The tracker streams each row of a task (libpq single-row mode) into a
 *	  64 kB buffer.  A result that stays within
 *	  citus.task_result_inline_size is kept in shared memory (the task's
 *	  "inline" result, see tracker.c): most tasks never touch the disk.
 *	  A larger one goes to $PGDATA/pg_task_tracker/job_<job>/task_<task>.
 *	  <owner oid>, created with owner-only permissions when the buffer first
 *	  overflows.  The path is built from numbers only, so no SQL input ever
 *	  reaches the file system.  Both forms use one format:
 *
 *		"TTR1" uint32 ncols, ncols x uint32 type oid,
 *		then per row, per column: int32 length (-1 = NULL) and the bytes of
 *		the value in text format, exactly as the remote produced it.
 *
 *	  task_result() reads the file (or the in-memory copy through
 *	  fmemopen) and turns each value into a Datum with
 *	  the input function of the caller's column type, into a tuplestore
 *	  (which spills to disk beyond work_mem), so results of any size and
 *	  any type round-trip.
 *
 * Locking
 *	  None: a file is written only by the tracker while its task runs and
 *	  read only once the task succeeded; removal happens under the task
 *	  table lock by whoever removes the tasks (see worker_api.c, tracker.c);
 *	  a dropped job's directory is renamed under the lock and removed after
 *	  it is released.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file_perm.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "task_tracker.h"
#include "tt_result_file.h"
#include "tt_shmem.h"

#define TT_RESULT_MAGIC		"TTR1"
#define TT_WRITE_BUFSIZE	(64 * 1024)

static bool writer_flush(TTResultWriter *w);
static bool writer_put(TTResultWriter *w, const void *data, int len);

void
tt_result_writer_init(TTResultWriter *w)
{
	w->fd = -1;
	w->job_id = 0;
	w->task_id = 0;
	w->owner = InvalidOid;
	w->path[0] = '\0';
	w->buf = NULL;
	w->used = 0;
	w->ncols = -1;
	w->rows = 0;
	w->saved_errno = 0;
	w->created = false;
}

/*
 * tt_result_ensure_dir
 *		Create $PGDATA/pg_task_tracker if missing.
 */
void
tt_result_ensure_dir(void)
{
	if (MakePGDirectory(TT_DATA_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", TT_DATA_DIR)));
}

/*
 * tt_result_start
 *		Begin collecting the result of a task.  Nothing touches the disk yet:
 *		rows accumulate in the buffer, and the file is created only when the
 *		buffer overflows or tt_result_finish() is told not to keep the result
 *		in memory.
 */
void
tt_result_start(TTResultWriter *w, int64 job_id, int32 task_id, Oid owner)
{
	tt_result_writer_init(w);
	w->job_id = job_id;
	w->task_id = task_id;
	w->owner = owner;
	tt_task_file_path(w->path, sizeof(w->path), job_id, task_id, owner);
	w->buf = MemoryContextAlloc(TopMemoryContext, TT_WRITE_BUFSIZE);
}

/*
 * writer_open
 *		Create the result file (replacing a leftover of an earlier attempt),
 *		with owner-only permissions.  Returns false with saved_errno set.
 */
static bool
writer_open(TTResultWriter *w)
{
	char		dir[MAXPGPATH];

	tt_job_dir_path(dir, sizeof(dir), w->job_id);
	if ((MakePGDirectory(TT_DATA_DIR) < 0 && errno != EEXIST) ||
		(MakePGDirectory(dir) < 0 && errno != EEXIST))
	{
		w->saved_errno = errno;
		return false;
	}
	w->fd = OpenTransientFilePerm(w->path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
								  S_IRUSR | S_IWUSR);
	if (w->fd < 0)
	{
		w->saved_errno = errno;
		return false;
	}
	w->created = true;
	return true;
}

static bool
writer_flush(TTResultWriter *w)
{
	char	   *p = w->buf;
	int			left = w->used;

	if (w->fd < 0 && !writer_open(w))
		return false;
	while (left > 0)
	{
		ssize_t		n;

		errno = 0;
		n = write(w->fd, p, left);
		if (n <= 0)
		{
			if (n < 0 && errno == EINTR)
				continue;
			w->saved_errno = errno ? errno : ENOSPC;
			return false;
		}
		p += n;
		left -= n;
	}
	w->used = 0;
	return true;
}

static bool
writer_put(TTResultWriter *w, const void *data, int len)
{
	const char *p = data;

	while (len > 0)
	{
		int			room = TT_WRITE_BUFSIZE - w->used;
		int			chunk = Min(room, len);

		memcpy(w->buf + w->used, p, chunk);
		w->used += chunk;
		p += chunk;
		len -= chunk;
		if (w->used == TT_WRITE_BUFSIZE && !writer_flush(w))
			return false;
	}
	return true;
}

/*
 * tt_result_add
 *		Append the rows of res (a PGRES_SINGLE_TUPLE or PGRES_TUPLES_OK
 *		result), writing the header first if not yet done.  Returns false
 *		on a write failure.
 */
bool
tt_result_add(TTResultWriter *w, const PGresult *res)
{
	int			ncols = PQnfields(res);
	int			nrows = PQntuples(res);

	if (w->ncols < 0)
	{
		uint32		n = ncols;

		if (!writer_put(w, TT_RESULT_MAGIC, 4) || !writer_put(w, &n, sizeof(n)))
			return false;
		for (int i = 0; i < ncols; i++)
		{
			uint32		typid = PQftype(res, i);

			if (!writer_put(w, &typid, sizeof(typid)))
				return false;
		}
		w->ncols = ncols;
	}
	else if (ncols != w->ncols)
	{
		/* cannot happen: a task is a single statement */
		w->saved_errno = EINVAL;
		return false;
	}

	for (int r = 0; r < nrows; r++)
	{
		for (int c = 0; c < ncols; c++)
		{
			int32		len;

			if (PQgetisnull(res, r, c))
			{
				len = -1;
				if (!writer_put(w, &len, sizeof(len)))
					return false;
				continue;
			}
			len = PQgetlength(res, r, c);
			if (!writer_put(w, &len, sizeof(len)) ||
				!writer_put(w, PQgetvalue(res, r, c), len))
				return false;
		}
		w->rows++;
	}
	return true;
}

/*
 * tt_result_in_memory
 *		True when the whole result is still in the buffer (no file yet):
 *		w->buf holds w->used bytes in the result format.
 */
bool
tt_result_in_memory(TTResultWriter *w)
{
	return w->fd < 0;
}

/*
 * tt_result_finish
 *		Write out whatever the buffer holds (creating the file if it does
 *		not exist yet) and close the file.  Returns false on a failure (the
 *		caller then discards the file).
 */
bool
tt_result_finish(TTResultWriter *w)
{
	bool		ok = true;

	if (w->used > 0 || w->fd < 0)
		ok = writer_flush(w);
	if (w->fd >= 0 && CloseTransientFile(w->fd) != 0 && ok)
	{
		w->saved_errno = errno;
		ok = false;
	}
	w->fd = -1;
	if (w->buf)
		pfree(w->buf);
	w->buf = NULL;
	return ok;
}

/*
 * tt_result_discard
 *		Forget the result: free the buffer, close and remove the file if
 *		one was created (even if already closed by tt_result_finish).
 */
void
tt_result_discard(TTResultWriter *w)
{
	if (w->fd >= 0)
		CloseTransientFile(w->fd);
	w->fd = -1;
	if (w->buf)
		pfree(w->buf);
	w->buf = NULL;
	if (w->created)
		(void) unlink(w->path);
	w->created = false;
}

/*
 * tt_result_error
 *		The failure of the writer as a message and SQLSTATE.
 */
char *
tt_result_error(TTResultWriter *w, const char **sqlstate)
{
	int			save = w->saved_errno;

	*sqlstate = (save == ENOSPC) ? "53100" : "58030";
	errno = save;
	return psprintf("could not write result file \"%s\": %m", w->path);
}

static void
read_exact(FILE *f, void *buf, size_t len, const char *path)
{
	if (len > 0 && fread(buf, 1, len, f) != len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("result file \"%s\" is truncated", path)));
}

/*
 * tt_result_read
 *		Read an open result file (the caller opened it with AllocateFile and
 *		frees it) into store as tuples of tupdesc.  The file must
 *		have as many columns as tupdesc; values go through the input
 *		functions of tupdesc's types.
 */
void
tt_result_read(FILE *f, const char *path, TupleDesc tupdesc, Tuplestorestate *store)
{
	char		magic[4];
	uint32		ncols;
	int			natts = tupdesc->natts;
	FmgrInfo   *infuncs;
	Oid		   *ioparams;
	Datum	   *values;
	bool	   *nulls;
	StringInfoData buf;
	MemoryContext rowcxt;
	MemoryContext oldcxt;

	read_exact(f, magic, 4, path);
	if (memcmp(magic, TT_RESULT_MAGIC, 4) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("result file \"%s\" has an invalid header", path)));
	read_exact(f, &ncols, sizeof(ncols), path);
	if (ncols != natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("task result has %u columns but the column definition list has %d",
						ncols, natts)));
	for (uint32 i = 0; i < ncols; i++)
	{
		uint32		typid;

		read_exact(f, &typid, sizeof(typid), path);
	}

	infuncs = palloc(sizeof(FmgrInfo) * natts);
	ioparams = palloc(sizeof(Oid) * natts);
	values = palloc(sizeof(Datum) * natts);
	nulls = palloc(sizeof(bool) * natts);
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Oid			infunc;

		getTypeInputInfo(att->atttypid, &infunc, &ioparams[i]);
		fmgr_info(infunc, &infuncs[i]);
	}

	initStringInfo(&buf);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "task_result row",
								   ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		int32		len;
		size_t		n;

		CHECK_FOR_INTERRUPTS();
		n = fread(&len, 1, sizeof(len), f);
		if (n == 0 && feof(f))
			break;
		if (n != sizeof(len))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("result file \"%s\" is truncated", path)));

		oldcxt = MemoryContextSwitchTo(rowcxt);
		for (int i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);

			if (i > 0)
				read_exact(f, &len, sizeof(len), path);
			if (len < 0)
			{
				values[i] = InputFunctionCall(&infuncs[i], NULL, ioparams[i], att->atttypmod);
				nulls[i] = true;
				continue;
			}
			resetStringInfo(&buf);
			enlargeStringInfo(&buf, len + 1);
			read_exact(f, buf.data, len, path);
			buf.data[len] = '\0';
			buf.len = len;
			values[i] = InputFunctionCall(&infuncs[i], buf.data, ioparams[i], att->atttypmod);
			nulls[i] = false;
		}
		MemoryContextSwitchTo(oldcxt);
		tuplestore_putvalues(store, tupdesc, values, nulls);
		MemoryContextReset(rowcxt);
	}
	MemoryContextDelete(rowcxt);
}

/*
 * tt_result_detach_job
 *		Move the directory of a job out of the way (rename, cheap enough to
 *		do under the task table lock, after which the job id may be used
 *		again at once).  Returns the new path (palloc'd) for
 *		tt_result_remove_detached(), or NULL when the job had no directory.
 */
char *
tt_result_detach_job(int64 job_id)
{
	static uint32 counter = 0;
	char		dir[MAXPGPATH];
	char	   *dropped = palloc(MAXPGPATH);

	tt_job_dir_path(dir, sizeof(dir), job_id);
	snprintf(dropped, MAXPGPATH, "%s/dropped_%d_%u", TT_DATA_DIR, MyProcPid, ++counter);
	if (rename(dir, dropped) == 0)
		return dropped;
	if (errno != ENOENT)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not rename \"%s\" to \"%s\": %m", dir, dropped)));
	pfree(dropped);
	return NULL;
}

/*
 * tt_result_remove_detached
 *		Remove a directory from tt_result_detach_job() and its files;
 *		called without the task table lock.  NULL does nothing.
 */
void
tt_result_remove_detached(char *path)
{
	if (path == NULL)
		return;
	(void) rmtree(path, true);
	pfree(path);
}

/*
 * tt_result_remove_all
 *		Remove every job directory (after a crash).  Returns how many.
 */
int
tt_result_remove_all(void)
{
	DIR		   *d;
	struct dirent *de;
	int			n = 0;

	d = AllocateDir(TT_DATA_DIR);
	if (d == NULL)
		return 0;
	while ((de = ReadDir(d, TT_DATA_DIR)) != NULL)
	{
		char		path[MAXPGPATH];

		if (strncmp(de->d_name, "job_", 4) != 0 &&
			strncmp(de->d_name, "dropped_", 8) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", TT_DATA_DIR, de->d_name);
		if (rmtree(path, true))
			n++;
	}
	FreeDir(d);
	return n;
}
