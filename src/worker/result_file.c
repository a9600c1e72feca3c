/*-------------------------------------------------------------------------
 *
 * result_file.c
 *	  Stored task results: writing a task's rows as they arrive, reading
 *	  them back line by line (task_result) or in chunks of whole lines
 *	  (task_result_copy), and removing the files of a job.
 *
 * Design
 *	  docs/architecture.md, "Flow of one task" (steps 4 to 6).
 *
 *	  Format: "TTR2", uint32 ncols (native byte order: a result never
 *	  leaves its server), then one line of COPY text per row, each ending
 *	  in a newline.  "TTR1" (the 1.0 library's: type oids, then per value
 *	  an int32 length, -1 for NULL, and the bytes) is read too, each row
 *	  turned into a COPY text line.  Paths are built from numbers only
 *	  (tt_task_file_path).
 *
 * Locking
 *	  None: a file is written only by the tracker while its task runs and
 *	  read only once the task succeeded.  A dropped job's directory is
 *	  renamed under the task table lock (so the job id can be used again at
 *	  once) and removed after it is released; a re-assigned task's old file
 *	  is removed after the lock is released (worker_api.c).  Readers note
 *	  the path under the lock, open the file after releasing it, and check
 *	  under the lock again that the task is still there in the same job
 *	  incarnation (an open file stays readable after its removal).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "common/file_perm.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "common/tt_copy_text.h"
#include "worker/tt_result_file.h"
#include "worker/tt_worker.h"

#define TT_RESULT_MAGIC		"TTR2"
#define TT_RESULT_MAGIC_1_0	"TTR1"	/* written by the 1.0 library */
#define TT_WRITE_BUFSIZE	(64 * 1024)
#define TT_READ_BUFSIZE		(256 * 1024)

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
 * tt_job_dir_path / tt_task_file_path
 *		The directory of a job's result files, and the result file of one
 *		task.  They are built from numbers only: no text from SQL ever
 *		reaches a path.
 */
void
tt_job_dir_path(char *path, size_t len, int64 job_id)
{
	snprintf(path, len, "%s/job_" INT64_FORMAT, TT_DATA_DIR, job_id);
}

void
tt_task_file_path(char *path, size_t len, int64 job_id, int32 task_id, Oid owner)
{
	snprintf(path, len, "%s/job_" INT64_FORMAT "/task_%d.%u", TT_DATA_DIR,
			 job_id, task_id, owner);
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
 * tt_result_begin
 *		Write the header of a result of ncols columns, unless already done.
 *		Returns false on a write failure, or when the result already has
 *		another number of columns (cannot happen: a task is a single
 *		statement).
 */
bool
tt_result_begin(TTResultWriter *w, int ncols)
{
	uint32		n = ncols;

	if (w->ncols >= 0)
	{
		if (ncols == w->ncols)
			return true;
		w->saved_errno = EINVAL;
		return false;
	}
	if (!writer_put(w, TT_RESULT_MAGIC, 4) || !writer_put(w, &n, sizeof(n)))
		return false;
	w->ncols = ncols;
	return true;
}

/*
 * tt_result_add_line
 *		Append one row: a line of COPY text data, newline included, as
 *		COPY ... TO STDOUT sent it.  The header is written already.
 */
bool
tt_result_add_line(TTResultWriter *w, const char *line, int len)
{
	Assert(w->ncols >= 0);
	if (!writer_put(w, line, len))
		return false;
	w->rows++;
	return true;
}

/*
 * tt_result_add
 *		Append the rows of res (a PGRES_SINGLE_TUPLE or PGRES_TUPLES_OK
 *		result of a statement the tracker could not run as COPY), escaped
 *		as COPY would have written them, writing the header first if not
 *		yet done.  Returns false on a write failure.
 */
bool
tt_result_add(TTResultWriter *w, const PGresult *res)
{
	int			ncols = PQnfields(res);
	int			nrows = PQntuples(res);
	StringInfoData line;

	if (!tt_result_begin(w, ncols))
		return false;
	if (nrows == 0)
		return true;

	initStringInfo(&line);
	for (int r = 0; r < nrows; r++)
	{
		resetStringInfo(&line);
		for (int c = 0; c < ncols; c++)
		{
			if (c > 0)
				appendStringInfoChar(&line, '\t');
			if (PQgetisnull(res, r, c))
				tt_copy_text_append(&line, NULL, 0);
			else
				tt_copy_text_append(&line, PQgetvalue(res, r, c), PQgetlength(res, r, c));
		}
		appendStringInfoChar(&line, '\n');
		if (!tt_result_add_line(w, line.data, line.len))
		{
			pfree(line.data);
			return false;
		}
	}
	pfree(line.data);
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
 * tt_result_store_raw
 *		Write a whole stored result (len bytes in the result format, as kept
 *		in shared memory) to the task's result file.  Returns true when the
 *		file is complete; on any failure it logs why and leaves no file.
 *		Used when a restored in-memory result no longer fits in
 *		citus.task_result_memory.  Never called with the table lock held.
 */
bool
tt_result_store_raw(int64 job_id, int32 task_id, Oid owner, const char *data, int len)
{
	TTResultWriter w;

	tt_result_start(&w, job_id, task_id, owner);
	if (writer_put(&w, data, len) && tt_result_finish(&w))
		return true;
	errno = w.saved_errno;
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not write result file \"%s\": %m", w.path)));
	tt_result_discard(&w);
	return false;
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

/*
 * error_truncated
 *		The stored result ends in the middle of a header or row: throw.
 */
static void
error_truncated(TTResultReader *r)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("%s is truncated", r->name)));
}

/*
 * reader_fill
 *		Make at least want bytes available from r->start, reading more of
 *		the file (moving what is left to the front of the buffer, and
 *		growing it when one line does not fit).  Returns false when the
 *		source ends first; then everything there is is available.
 */
static bool
reader_fill(TTResultReader *r, int want)
{
	while (r->end - r->start < want)
	{
		size_t		n;

		if (r->eof)
			return false;
		if (r->start > 0)
		{
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->start = 0;
		}
		if (want > r->bufsize || r->end == r->bufsize)
		{
			Size		newsize = Max((Size) want, (Size) r->bufsize * 2);

			if (newsize > MaxAllocSize)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("a row of %s is too long to read", r->name)));
			r->buf = repalloc(r->buf, newsize);
			r->bufsize = newsize;
		}
		CHECK_FOR_INTERRUPTS();
		n = fread(r->buf + r->end, 1, r->bufsize - r->end, r->file);
		if (n == 0)
		{
			if (ferror(r->file))
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read %s: %m", r->name)));
			r->eof = true;
		}
		r->end += n;
	}
	return true;
}

/*
 * reader_header
 *		Read and check the header; sets ncols and legacy.
 */
static void
reader_header(TTResultReader *r)
{
	uint32		ncols;

	if (!reader_fill(r, TT_RESULT_HEADER_SIZE))
		error_truncated(r);
	memcpy(&ncols, r->buf + r->start + 4, sizeof(ncols));
	if (memcmp(r->buf + r->start, TT_RESULT_MAGIC, 4) == 0)
		r->legacy = false;
	else if (memcmp(r->buf + r->start, TT_RESULT_MAGIC_1_0, 4) == 0)
		r->legacy = true;
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s has an invalid header", r->name)));
	if (ncols > MaxTupleAttributeNumber)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s has an invalid header", r->name)));
	r->ncols = ncols;
	r->start += TT_RESULT_HEADER_SIZE;
	if (r->legacy)
	{
		/* then the type oids of the columns, which nothing needs */
		if (!reader_fill(r, ncols * sizeof(uint32)))
			error_truncated(r);
		r->start += ncols * sizeof(uint32);
		initStringInfo(&r->line);
	}
}

/*
 * tt_result_reader_open_file
 *		Start reading a result file, which the caller opened with
 *		AllocateFile (tt_result_reader_close frees it).  name (a path)
 *		appears in errors.  Throws when the header is not valid.
 */
void
tt_result_reader_open_file(TTResultReader *r, FILE *file, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->file = file;
	r->name = psprintf("result file \"%s\"", name);
	r->bufsize = TT_READ_BUFSIZE;
	r->buf = palloc(r->bufsize);
	r->encoding = -1;
	reader_header(r);
}

/*
 * tt_result_reader_open_memory
 *		Start reading a result held in memory (size bytes at data, which the
 *		caller keeps until it is done reading); name appears in errors.
 */
void
tt_result_reader_open_memory(TTResultReader *r, char *data, Size size, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->buf = data;
	r->bufsize = size;
	r->end = size;
	r->eof = true;
	r->encoding = -1;
	reader_header(r);
}

/*
 * tt_result_reader_close
 *		Done reading: close the file (if any) and free the buffers.
 */
void
tt_result_reader_close(TTResultReader *r)
{
	if (r->file)
	{
		FreeFile(r->file);
		pfree(r->buf);
	}
	r->file = NULL;
	r->buf = NULL;
	if (r->line.data)
		pfree(r->line.data);
	r->line.data = NULL;
	if (r->chunk.data)
		pfree(r->chunk.data);
	r->chunk.data = NULL;
	if (r->converted)
		pfree(r->converted);
	r->converted = NULL;
}

/*
 * tt_result_reader_set_encoding
 *		The rows are in encoding (the task's database encoding): convert
 *		them to this database's encoding as they are read, if it differs.
 */
void
tt_result_reader_set_encoding(TTResultReader *r, int encoding)
{
	r->encoding = (encoding == GetDatabaseEncoding()) ? -1 : encoding;
}

/*
 * reader_convert
 *		Convert *len bytes at *data (whole lines) from the rows' encoding to
 *		the database's, when they differ; throws on bytes that are not valid
 *		in the rows' encoding or have no equivalent.  The converted copy
 *		stays valid until the next call, and has room for a NUL at
 *		(*data)[*len] (tt_result_next_line's promise).
 */
static void
reader_convert(TTResultReader *r, char **data, int *len)
{
	char	   *out;

	if (r->converted)
		pfree(r->converted);
	r->converted = NULL;
	if (r->encoding < 0 || *len == 0)
		return;
	(void) pg_verify_mbstr(r->encoding, *data, *len, false);
	out = pg_any_to_server(*data, *len, r->encoding);
	if (out == *data)
		return;					/* nothing to convert (ASCII) */
	r->converted = out;
	*data = out;
	*len = strlen(out);
}

/*
 * legacy_next_line
 *		Read one row of a 1.0 result and write it into r->line as a line of
 *		COPY text, newline included.  Returns false at the end.
 */
static bool
legacy_next_line(TTResultReader *r)
{
	resetStringInfo(&r->line);
	if (r->end == r->start && !reader_fill(r, 1))
		return false;
	if (r->ncols == 0)
		elog(ERROR, "%s has rows of zero columns", r->name);	/* the 1.0 format cannot */
	for (int i = 0; i < r->ncols; i++)
	{
		int32		len;

		if (!reader_fill(r, sizeof(len)))
			error_truncated(r);
		memcpy(&len, r->buf + r->start, sizeof(len));
		r->start += sizeof(len);
		if (i > 0)
			appendStringInfoChar(&r->line, '\t');
		if (len < 0)
		{
			tt_copy_text_append(&r->line, NULL, 0);
			continue;
		}
		if (!reader_fill(r, len))
			error_truncated(r);
		tt_copy_text_append(&r->line, r->buf + r->start, len);
		r->start += len;
	}
	appendStringInfoChar(&r->line, '\n');
	return true;
}

/*
 * tt_result_next_line
 *		The next row: *line points at its COPY text (*len bytes, without the
 *		newline), which the caller may change in place, including
 *		(*line)[*len]; it stays valid until the next call.  Returns false at
 *		the end of the result.
 */
bool
tt_result_next_line(TTResultReader *r, char **line, int *len)
{
	int			scanned = 0;

	if (r->legacy)
	{
		if (!r->pending && !legacy_next_line(r))
			return false;
		r->pending = false;
		*line = r->line.data;
		*len = r->line.len - 1;
		reader_convert(r, line, len);
		return true;
	}
	for (;;)
	{
		char	   *base = r->buf + r->start;
		char	   *nl = memchr(base + scanned, '\n', r->end - r->start - scanned);

		if (nl != NULL)
		{
			*line = base;
			*len = nl - base;
			r->start += *len + 1;
			reader_convert(r, line, len);
			return true;
		}
		scanned = r->end - r->start;
		if (!reader_fill(r, scanned + 1))
		{
			if (r->end > r->start)
				error_truncated(r);
			return false;
		}
	}
}

/*
 * tt_result_next_chunk
 *		The next rows as they are stored: *data points at *len bytes of
 *		whole lines, newlines included, at most max_bytes unless a single
 *		line is longer (then that line alone), valid until the next call.
 *		Returns false at the end of the result.
 */
bool
tt_result_next_chunk(TTResultReader *r, int max_bytes, char **data, int *len)
{
	if (r->legacy)
	{
		/*
		 * Convert whole rows while they fit; a row that does not fit waits
		 * in r->line for the next chunk, unless it is the first.
		 */
		if (r->chunk.data == NULL)
			initStringInfo(&r->chunk);
		resetStringInfo(&r->chunk);
		for (;;)
		{
			if (!r->pending && !legacy_next_line(r))
				break;
			r->pending = false;
			if (r->chunk.len > 0 && r->chunk.len + r->line.len > max_bytes)
			{
				r->pending = true;
				break;
			}
			appendBinaryStringInfo(&r->chunk, r->line.data, r->line.len);
		}
		*data = r->chunk.data;
		*len = r->chunk.len;
		reader_convert(r, data, len);
		return r->chunk.len > 0;
	}

	(void) reader_fill(r, max_bytes);
	if (r->end == r->start)
		return false;
	{
		char	   *base = r->buf + r->start;
		int			avail = Min(r->end - r->start, max_bytes);
		int			cut = avail;

		/* the last newline within max_bytes ends the chunk */
		while (cut > 0 && base[cut - 1] != '\n')
			cut--;
		if (cut == 0)
		{
			/* one line longer than max_bytes: the chunk is that line */
			char	   *line;
			int			linelen;

			if (!tt_result_next_line(r, &line, &linelen))
				return false;
			if (r->converted)
			{
				/* the converted line lacks its newline: add it back */
				char	   *with_nl = palloc(linelen + 2);

				memcpy(with_nl, line, linelen);
				with_nl[linelen] = '\n';
				with_nl[linelen + 1] = '\0';
				pfree(r->converted);
				r->converted = with_nl;
				*data = with_nl;
			}
			else
				*data = line;
			*len = linelen + 1;
			return true;
		}
		*data = base;
		*len = cut;
		r->start += cut;
		reader_convert(r, data, len);
		return true;
	}
}

/*
 * tt_result_check_columns
 *		The caller expects natts columns: error out if the result has
 *		another number.
 */
void
tt_result_check_columns(TTResultReader *r, int natts)
{
	if (r->ncols != natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("task result has %d columns but the column definition list has %d",
						r->ncols, natts)));
}

/*
 * tt_result_read
 *		Read a whole result into store as tuples of tupdesc (task_result).
 *		The result must have as many columns as tupdesc; values go through
 *		the input functions of tupdesc's types.  Does not close the reader.
 */
void
tt_result_read(TTResultReader *r, TupleDesc tupdesc, Tuplestorestate *store)
{
	int			natts = tupdesc->natts;
	FmgrInfo   *infuncs;
	Oid		   *ioparams;
	Datum	   *values;
	bool	   *nulls;
	char	  **fields;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	char	   *line;
	int			len;
	uint64		rows = 0;

	tt_result_check_columns(r, natts);

	infuncs = palloc(sizeof(FmgrInfo) * natts);
	ioparams = palloc(sizeof(Oid) * natts);
	values = palloc(sizeof(Datum) * natts);
	nulls = palloc(sizeof(bool) * natts);
	fields = palloc(sizeof(char *) * Max(natts, 1));
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Oid			infunc;

		getTypeInputInfo(att->atttypid, &infunc, &ioparams[i]);
		fmgr_info(infunc, &infuncs[i]);
	}

	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "task_result row",
								   ALLOCSET_DEFAULT_SIZES);
	while (tt_result_next_line(r, &line, &len))
	{
		int			n = tt_copy_text_split(line, len, fields, natts);

		if (n != natts)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("%s is corrupt: a row has %d columns instead of %d",
							r->name, n, natts)));
		oldcxt = MemoryContextSwitchTo(rowcxt);
		for (int i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);

			values[i] = InputFunctionCall(&infuncs[i], fields[i], ioparams[i], att->atttypmod);
			nulls[i] = (fields[i] == NULL);
		}
		MemoryContextSwitchTo(oldcxt);
		tuplestore_putvalues(store, tupdesc, values, nulls);
		MemoryContextReset(rowcxt);
		if ((++rows & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
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
