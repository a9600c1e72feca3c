/*-------------------------------------------------------------------------
 *
 * persist.c
 *	  Save the task table when the server stops cleanly; restore it, or
 *	  clean up after a crash, when the tracker starts.
 *
 * Design
 *	  docs/architecture.md, "Stop, start, crash".
 *
 *	  Format (private, versioned): "TTS4", then per task, in assignment
 *	  order, a byte 1 and the record; a byte 0 ends the file.  "TTS3" (the
 *	  1.0 library's, whose records lack copy_len) is read too: its queued
 *	  tasks run as plain statements.
 *
 * Locking
 *	  Saving reads the table under TTShared->lock in shared mode and
 *	  writes the file after releasing it.  Restoring reads and checks the
 *	  file without the lock, in batches of at most 256 tasks or 4 MB, and
 *	  inserts each batch under one short hold of the lock in exclusive
 *	  mode (let go for a moment only when the shared area fails to grow,
 *	  see area_error); results that no longer fit in
 *	  citus.task_result_memory are written to their files before that.
 *	  No file is opened, read, written, renamed or removed while the lock
 *	  is held.  The tracker marks itself ready after the restore: the SQL
 *	  functions that ask about tasks wait for that (interruptibly, on a
 *	  condition variable), the views show what is restored so far.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#include "worker/tt_persist.h"
#include "worker/tt_result_file.h"
#include "worker/tt_shmem.h"
#include "worker/tt_worker.h"

#define TT_STATE_FILE		TT_DATA_DIR "/tasks.state"
#define TT_STATE_TMP		TT_DATA_DIR "/tasks.state.tmp"
#define TT_STATE_LOST		TT_DATA_DIR "/tasks.state.lost"
#define TT_STATE_LOST_ROOT	"pg_task_tracker.lost"	/* in $PGDATA itself */
#define TT_STATE_CORRUPT	TT_DATA_DIR "/tasks.state.corrupt"
#define TT_STATE_MAGIC		"TTS4"
#define TT_STATE_MAGIC_V3	"TTS3"	/* written by the 1.0 library */

/* the saved table is built in pieces of about this size */
#define TT_SAVE_CHUNK		(1024 * 1024)

/* longest reason kept in the tasks.state.lost marker */
#define TT_LOST_REASON_LEN	512

/* The fixed part of one saved task. */
typedef struct SavedTask
{
	int64		job_id;
	int32		task_id;
	int32		status;
	Oid			owner;
	Oid			dbid;
	int32		encoding;
	int32		attempts;
	uint64		seq;
	int64		result_rows;
	TimestampTz assigned_at;
	TimestampTz started_at;
	TimestampTz finished_at;
	NameData	user_name;
	NameData	database_name;
	char		sqlstate[6];
	bool		has_file;
	int32		query_len;
	int32		error_len;		/* -1: no error */
	int32		result_len;		/* -1: no in-memory result */
	int32		copy_len;		/* TTTrackedTask->copy_len */
} SavedTask;

/* The same in a "TTS3" file: without copy_len. */
typedef struct SavedTaskV3
{
	int64		job_id;
	int32		task_id;
	int32		status;
	Oid			owner;
	Oid			dbid;
	int32		encoding;
	int32		attempts;
	uint64		seq;
	int64		result_rows;
	TimestampTz assigned_at;
	TimestampTz started_at;
	TimestampTz finished_at;
	NameData	user_name;
	NameData	database_name;
	char		sqlstate[6];
	bool		has_file;
	int32		query_len;
	int32		error_len;
	int32		result_len;
} SavedTaskV3;

/* How many tasks a save covers, for the messages about it. */
typedef struct SaveCounts
{
	int			total;			/* tasks in the table */
	int			waiting;		/* queued, to be retried, or were running */
	int			finished;		/* in a final state */
} SaveCounts;

/* A state file being read. */
typedef struct StateReader
{
	FILE	   *f;				/* the file */
	off_t		size;			/* its size when opened */
	off_t		pos;			/* bytes read so far */
	bool		v3;				/* a "TTS3" file */
	char	   *problem;		/* why reading stopped early, or NULL */
} StateReader;

static void remove_file(const char *path);
static void remove_lost_markers(void);

static int
seq_cmp(const void *a, const void *b)
{
	const TTTrackedTask *ta = *(TTTrackedTask *const *) a;
	const TTTrackedTask *tb = *(TTTrackedTask *const *) b;

	if (ta->seq != tb->seq)
		return ta->seq < tb->seq ? -1 : 1;
	return 0;
}

/*
 * serialize_table
 *		Copy the whole task table, in the file's format, into a list of
 *		StringInfos of about TT_SAVE_CHUNK bytes each (so that a table
 *		larger than one allocation can be saved), and count its tasks.
 *		Tasks still marked active are saved as queued (their attempt is
 *		already counted).  Takes the lock in shared mode; may throw (out
 *		of memory), with the lock then held: the caller releases it.
 */
static List *
serialize_table(SaveCounts *counts)
{
	List	   *chunks = NIL;
	StringInfo	buf = makeStringInfo();
	HASH_SEQ_STATUS seq;
	TTTrackedTask	   *task;
	TTTrackedTask	  **all;
	int			n = 0;
	char		more = 1;
	char		end = 0;

	appendBinaryStringInfo(buf, TT_STATE_MAGIC, 4);

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	all = palloc(sizeof(TTTrackedTask *) * (tt_shared->ntasks + 1));
	hash_seq_init(&seq, tt_task_hash);
	while ((task = hash_seq_search(&seq)) != NULL)
	{
		all[n++] = task;
		if (TT_STATUS_IS_FINAL(task->status))
			counts->finished++;
		else
			counts->waiting++;
	}
	counts->total = n;
	qsort(all, n, sizeof(TTTrackedTask *), seq_cmp);

	for (int i = 0; i < n; i++)
	{
		SavedTask	s;
		char	   *query;
		char	   *error;

		if (buf->len >= TT_SAVE_CHUNK)
		{
			chunks = lappend(chunks, buf);
			buf = makeStringInfo();
		}

		task = all[i];
		memset(&s, 0, sizeof(s));
		s.job_id = task->key.job_id;
		s.task_id = task->key.task_id;
		s.status = TT_STATUS_IS_ACTIVE(task->status) ? TT_ASSIGNED : task->status;
		s.owner = task->owner;
		s.dbid = task->dbid;
		s.encoding = task->encoding;
		s.attempts = task->attempts;
		s.seq = task->seq;
		s.result_rows = task->result_rows;
		s.assigned_at = task->assigned_at;
		s.started_at = task->started_at;
		s.finished_at = task->finished_at;
		s.user_name = task->user_name;
		s.database_name = task->database_name;
		memcpy(s.sqlstate, task->sqlstate, sizeof(s.sqlstate));
		s.has_file = task->has_file && s.status == TT_SUCCEEDED;
		query = tt_text_get(task->query);
		error = tt_text_get(task->error);
		s.query_len = query ? strlen(query) : 0;
		s.error_len = error ? strlen(error) : -1;
		s.result_len = DsaPointerIsValid(task->result) ? (int32) task->result_size : -1;
		s.copy_len = task->copy_len;
		appendBinaryStringInfo(buf, &more, 1);
		appendBinaryStringInfo(buf, (char *) &s, sizeof(s));
		if (s.query_len > 0)
			appendBinaryStringInfo(buf, query, s.query_len);
		if (s.error_len > 0)
			appendBinaryStringInfo(buf, error, s.error_len);
		if (s.result_len > 0)
			appendBinaryStringInfo(buf, tt_text_get(task->result), s.result_len);
	}
	LWLockRelease(tt_shared->lock);

	appendBinaryStringInfo(buf, &end, 1);
	return lappend(chunks, buf);
}

/*
 * write_state_file
 *		Write the chunks to the temporary file, fsync it and rename it to
 *		tasks.state.  Returns NULL on success.  On failure the temporary
 *		file is closed and removed, errno tells the cause and the result is
 *		what failed (e.g. "could not write file \"...\"").
 */
static char *
write_state_file(List *chunks)
{
	ListCell   *lc;
	int			fd;
	int			save_errno = 0;
	char	   *failed = NULL;

	tt_result_ensure_dir();
	fd = OpenTransientFilePerm(TT_STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
							   S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		save_errno = errno;
		failed = psprintf("could not create file \"%s\"", TT_STATE_TMP);
		goto fail;
	}
	foreach(lc, chunks)
	{
		StringInfo	chunk = (StringInfo) lfirst(lc);

		errno = 0;
		if (write(fd, chunk->data, chunk->len) != chunk->len)
		{
			/* a write that returns short without an error: no disk space */
			save_errno = errno ? errno : ENOSPC;
			failed = psprintf("could not write file \"%s\"", TT_STATE_TMP);
			goto fail;
		}
	}
	if (pg_fsync(fd) != 0)
	{
		save_errno = errno;
		failed = psprintf("could not fsync file \"%s\"", TT_STATE_TMP);
		goto fail;
	}
	if (CloseTransientFile(fd) != 0)
	{
		fd = -1;
		save_errno = errno;
		failed = psprintf("could not close file \"%s\"", TT_STATE_TMP);
		goto fail;
	}
	fd = -1;

	/* durable_rename logs its own failures */
	if (durable_rename(TT_STATE_TMP, TT_STATE_FILE, LOG) != 0)
	{
		save_errno = errno;

		/*
		 * Once the rename itself is done the file is complete under its
		 * name; only the directory's fsync failed.  The start reads it.
		 */
		if (access(TT_STATE_TMP, F_OK) != 0 && errno == ENOENT &&
			access(TT_STATE_FILE, F_OK) == 0)
			return NULL;
		failed = psprintf("could not rename file \"%s\" to \"%s\"",
						  TT_STATE_TMP, TT_STATE_FILE);
		goto fail;
	}
	return NULL;

fail:
	if (fd >= 0)
		(void) CloseTransientFile(fd);
	if (unlink(TT_STATE_TMP) != 0 && errno != ENOENT)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", TT_STATE_TMP)));
	errno = save_errno;
	return failed;
}

/*
 * create_lost_marker
 *		Create (or truncate) the marker at path; -1 with errno set if not.
 */
static int
create_lost_marker(const char *path)
{
	return OpenTransientFilePerm(path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
								 S_IRUSR | S_IWUSR);
}

/*
 * write_lost_marker
 *		Record that a save failed: tasks.state.lost holds the number of
 *		tasks lost and the reason, one line each.  The file's existence is
 *		what counts; if even its few bytes do not fit, it stays empty.  If
 *		it cannot be created in the area, it is made in $PGDATA itself.
 */
static void
write_lost_marker(int ntasks, const char *reason)
{
	char	   *text = psprintf("%d\n%.*s\n", ntasks, TT_LOST_REASON_LEN, reason);
	int			len = strlen(text);
	const char *path = TT_STATE_LOST;
	const char *dir = TT_DATA_DIR;
	int			fd;

	fd = create_lost_marker(path);
	if (fd < 0)
	{
		path = TT_STATE_LOST_ROOT;
		dir = ".";
		fd = create_lost_marker(path);
	}
	if (fd < 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", path),
				 errdetail("The next start will report the lost task table as the result of a crash.")));
		return;
	}
	errno = 0;
	if (write(fd, text, len) != len)
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
	}
	else if (pg_fsync(fd) != 0)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", path)));
	(void) CloseTransientFile(fd);
	(void) fsync_fname_ext(dir, true, false, LOG);
	pfree(text);
}

/*
 * tt_persist_save
 *		Write the whole task table to the state file.
 *
 * Never throws: on any failure (a full disk, an I/O error, out of memory)
 * it logs why and how many tasks are lost, leaves no partial file, and
 * leaves the tasks.state.lost marker for the next start.
 */
void
tt_persist_save(void)
{
	MemoryContext cxt;
	MemoryContext old;
	SaveCounts	counts;
	char	   *volatile failed = NULL;
	char	   *volatile reason = NULL;
	volatile int save_errno = 0;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "task tracker save",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	memset(&counts, 0, sizeof(counts));

	PG_TRY();
	{
		List	   *chunks = serialize_table(&counts);

		failed = write_state_file(chunks);
		save_errno = errno;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		if (LWLockHeldByMe(tt_shared->lock))
			LWLockRelease(tt_shared->lock);
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		(void) unlink(TT_STATE_TMP);
		reason = edata->message;
	}
	PG_END_TRY();

	if (reason != NULL)
	{
		ereport(LOG,
				(errmsg("task tracker could not save its task table: %s", reason),
				 errdetail("%d tasks (%d waiting to run, %d finished) are lost. The next start begins with an empty task table.",
						   counts.total, counts.waiting, counts.finished)));
		write_lost_marker(counts.total, reason);
	}
	else if (failed != NULL)
	{
		errno = save_errno;
		reason = psprintf("%s: %m", failed);
		errno = save_errno;
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("task tracker could not save its task table to \"%s\": %m",
						TT_STATE_TMP),
				 errdetail("%d tasks (%d waiting to run, %d finished) are lost: %s. The next start begins with an empty task table.",
						   counts.total, counts.waiting, counts.finished, failed)));
		write_lost_marker(counts.total, reason);
	}
	else
	{
		/* a marker of an earlier failure is stale now */
		remove_lost_markers();
		ereport(LOG,
				(errmsg("task tracker saved %d tasks", counts.total)));
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* One checked task of the state file, waiting in a batch to be restored. */
typedef struct PendingTask
{
	SavedTask	s;				/* its record */
	int			n;				/* its place in the file (0-based) */
	char	   *query;
	char	   *error;			/* or NULL */
	char	   *result;			/* in-memory result, or NULL */
	bool		to_file;		/* result written to its file instead */
} PendingTask;

/* a batch is restored under one short hold of the lock */
#define TT_RESTORE_BATCH_TASKS	256
#define TT_RESTORE_BATCH_BYTES	(4 * 1024 * 1024)

/*
 * area_error
 *		In the PG_CATCH of an allocation in the text and result area during
 *		the restore: take the error as data, clear it, release every LWLock
 *		(the area's own, which the failed call held, and the table's), take
 *		the table's lock again and return the error's message.
 *
 * The area grows by creating a DSM segment, and dsm_create() raises an
 * ERROR when that fails (pg_dynshmem or /dev/shm full) even for an
 * allocation that may fail softly.  Caught only around the whole file
 * (read_state_file), such an ERROR lost the count of the batch's tasks
 * already inserted, and could leave one inserted half way; caught here, it
 * is an allocation that failed.  Releasing the table's lock for a moment is
 * safe: until the tracker is ready, nobody else changes the table (the SQL
 * functions that do wait for it; the views only read).
 */
static char *
area_error(MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *msg;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	LWLockReleaseAll();
	RESUME_INTERRUPTS();
	msg = pstrdup(edata->message ? edata->message : "unknown error");
	FreeErrorData(edata);
	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	return msg;
}

/*
 * restore_text
 *		tt_text_store(), or tt_blob_store() when blob, that never raises an
 *		ERROR (see area_error).  Returns InvalidDsaPointer when the area
 *		cannot take the bytes; *why (if given) then gets the error's message,
 *		or NULL when the area only reached its size limit.  Caller holds the
 *		lock exclusively, and holds it again on return.
 */
static dsa_pointer
restore_text(const char *data, Size len, bool blob, char **why)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile dsa_pointer ptr = InvalidDsaPointer;
	char	   *volatile msg = NULL;

	PG_TRY();
	{
		ptr = blob ? tt_blob_store(data, len) : tt_text_store(data, len, true);
	}
	PG_CATCH();
	{
		msg = area_error(cxt);
		ptr = InvalidDsaPointer;
	}
	PG_END_TRY();
	if (why)
		*why = msg;
	else if (msg)
		pfree(msg);
	return ptr;
}

/*
 * restore_error
 *		tt_task_set_error() that never raises an ERROR (see area_error): a
 *		text the area cannot take is dropped, the SQLSTATE stays.  Caller
 *		holds the lock exclusively, and holds it again on return; task stays
 *		valid (nobody else changes the table during the restore).
 */
static void
restore_error(TTTrackedTask *task, const char *sqlstate, const char *text)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool failed = false;

	PG_TRY();
	{
		tt_task_set_error(task, sqlstate, text);
	}
	PG_CATCH();
	{
		pfree(area_error(cxt));
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		strlcpy(task->sqlstate, sqlstate, sizeof(task->sqlstate));
}

/*
 * restore_task
 *		Insert one saved task whose record has been checked.  Caller holds
 *		the lock exclusively.  Returns 1 when the task is restored, 0 when
 *		it is dropped because the table is full (with a WARNING), -1 with
 *		*problem set when it cannot be (saved twice, or no shared memory
 *		left for its query text; nothing is inserted then).  Never raises
 *		an ERROR for want of shared memory (restore_text, restore_error):
 *		an error text that does not fit is dropped (its SQLSTATE stays), a
 *		result that does not fit is lost and its task says so.
 */
static int
restore_task(const PendingTask *p, char **problem)
{
	const SavedTask *s = &p->s;
	TTTrackedJob	   *job;
	TTTrackedTask	   *task;
	TTTaskStatus status = (TTTaskStatus) s->status;
	dsa_pointer qtext;
	char	   *why;

	if (tt_task_lookup(s->job_id, s->task_id) != NULL)
	{
		*problem = psprintf("Saved task %d (job " INT64_FORMAT ", task %d) cannot be restored: %s.",
							p->n + 1, s->job_id, s->task_id, "it is saved twice");
		return -1;
	}
	if (tt_shared->ntasks >= max_tracked_tasks_per_node)
	{
		ereport(WARNING,
				(errmsg("task tracker dropped saved task (job " INT64_FORMAT ", task %d): task table is full",
						s->job_id, s->task_id),
				 errhint("Increase citus.max_tracked_tasks_per_node.")));
		return 0;
	}
	qtext = restore_text(p->query, s->query_len, false, &why);
	if (!DsaPointerIsValid(qtext))
	{
		*problem = psprintf("There is no shared memory left for the query of task (job " INT64_FORMAT ", task %d)%s%s.",
							s->job_id, s->task_id, why ? ": " : "", why ? why : "");
		return -1;
	}
	job = tt_job_lookup(s->job_id, true, s->owner);
	task = tt_task_insert(job, s->job_id, s->task_id, s->owner);
	task->dbid = s->dbid;
	task->encoding = s->encoding;
	task->user_name = s->user_name;
	task->database_name = s->database_name;
	task->attempts = s->attempts;
	task->seq = s->seq;
	task->result_rows = s->result_rows;
	task->assigned_at = s->assigned_at;
	task->started_at = s->started_at;
	task->has_file = s->has_file || p->to_file;
	task->query = qtext;
	task->copy_len = (s->copy_len > 0 && s->copy_len <= s->query_len) ? s->copy_len : 0;
	if (p->error)
		restore_error(task, s->sqlstate, p->error);
	if (p->result && !p->to_file)
	{
		dsa_pointer blob = InvalidDsaPointer;

		if (tt_shared->result_bytes + s->result_len <= (int64) task_result_memory * 1024)
			blob = restore_text(p->result, s->result_len, true, NULL);
		if (DsaPointerIsValid(blob))
			tt_task_set_result(task, blob, s->result_len);
		else if (status == TT_SUCCEEDED)
		{
			/* its result cannot come back: say so instead of losing it */
			ereport(WARNING,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("task tracker could not restore the result of task (job " INT64_FORMAT ", task %d): out of shared memory",
							s->job_id, s->task_id)));
			restore_error(task, "53200",
						  "its result was lost at a restart: out of shared memory");
			status = TT_PERMANENTLY_FAILED;
		}
	}
	if (s->seq >= tt_shared->next_seq)
		tt_shared->next_seq = s->seq + 1;

	task->status = TT_ASSIGNED;
	if (status == TT_ASSIGNED || status == TT_FAILED)
	{
		task->status = status;
		tt_task_enqueue(task);
	}
	else
	{
		tt_task_set_status(job, task, status);
		task->finished_at = s->finished_at;
	}
	return 1;
}

/*
 * restore_batch
 *		Restore a batch of checked tasks.  First, without the lock, the
 *		in-memory results that would not fit in citus.task_result_memory
 *		(which may have been lowered since the save) are written to their
 *		result files, as the tracker does with a result that does not fit;
 *		then the tasks are inserted under one short hold of the lock.  Only
 *		the tracker adds results, and it is busy here, so result_bytes read
 *		without the lock can only be too high.  Returns the number restored;
 *		*stopped is set (and r->problem) when a task could not be.
 */
static int
restore_batch(PendingTask *batch, int nbatch, StateReader *r, bool *stopped)
{
	int64		budget = (int64) task_result_memory * 1024 - tt_shared->result_bytes;
	int			n = 0;

	for (int i = 0; i < nbatch; i++)
	{
		PendingTask *p = &batch[i];

		if (p->result == NULL || p->s.status != TT_SUCCEEDED)
			continue;
		if (p->s.result_len <= budget)
		{
			budget -= p->s.result_len;
			continue;
		}
		p->to_file = tt_result_store_raw(p->s.job_id, p->s.task_id, p->s.owner,
										 p->result, p->s.result_len);
	}

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nbatch && !*stopped; i++)
	{
		switch (restore_task(&batch[i], &r->problem))
		{
			case 1:
				n++;
				break;
			case 0:
				break;			/* dropped: the table is full */
			default:
				*stopped = true;
				break;
		}
	}
	LWLockRelease(tt_shared->lock);
	return n;
}

/*
 * read_bytes
 *		Read exactly len bytes of the state file, never past its end.
 *		Returns false, with r->problem set, when they are not there.
 */
static bool
read_bytes(StateReader *r, void *buf, size_t len, const char *what, int n)
{
	if ((off_t) len > r->size - r->pos)
	{
		r->problem = psprintf("The file ends in the middle of %s of saved task %d.", what, n + 1);
		return false;
	}
	if (fread(buf, 1, len, r->f) != len)
	{
		if (ferror(r->f))
			r->problem = psprintf("Could not read %s of saved task %d: %m.", what, n + 1);
		else
			r->problem = psprintf("The file ends in the middle of %s of saved task %d.", what, n + 1);
		return false;
	}
	r->pos += len;
	return true;
}

/*
 * read_saved_task
 *		Read the fixed part of one saved task, of either format version.
 */
static bool
read_saved_task(StateReader *r, SavedTask *s, int n)
{
	SavedTaskV3 old;

	if (!r->v3)
		return read_bytes(r, s, sizeof(*s), "the record", n);
	if (!read_bytes(r, &old, sizeof(old), "the record", n))
		return false;
	memset(s, 0, sizeof(*s));
	s->job_id = old.job_id;
	s->task_id = old.task_id;
	s->status = old.status;
	s->owner = old.owner;
	s->dbid = old.dbid;
	s->encoding = old.encoding;
	s->attempts = old.attempts;
	s->seq = old.seq;
	s->result_rows = old.result_rows;
	s->assigned_at = old.assigned_at;
	s->started_at = old.started_at;
	s->finished_at = old.finished_at;
	s->user_name = old.user_name;
	s->database_name = old.database_name;
	memcpy(s->sqlstate, old.sqlstate, sizeof(s->sqlstate));
	memcpy(&s->has_file, &old.has_file, 1);
	s->query_len = old.query_len;
	s->error_len = old.error_len;
	s->result_len = old.result_len;
	s->copy_len = 0;
	return true;
}

/*
 * check_saved_task
 *		Is the fixed part of a saved task one a save could have written?
 *		Returns NULL if so, else what is wrong with it.
 */
static const char *
check_saved_task(const SavedTask *s, const StateReader *r)
{
	off_t		left = r->size - r->pos;
	uint8		has_file;

	memcpy(&has_file, &s->has_file, 1);
	if (s->job_id <= 0 || s->task_id < 0)
		return "its job or task id is out of range";
	if (s->status != TT_ASSIGNED && s->status != TT_FAILED &&
		s->status != TT_SUCCEEDED && s->status != TT_PERMANENTLY_FAILED &&
		s->status != TT_CANCELED)
		return "its status is invalid";
	if (!PG_VALID_BE_ENCODING(s->encoding))
		return "its encoding is invalid";
	if (s->attempts < 0 || has_file > 1)
		return "a field is out of range";
	if (memchr(NameStr(s->user_name), '\0', NAMEDATALEN) == NULL ||
		NameStr(s->user_name)[0] == '\0' ||
		memchr(NameStr(s->database_name), '\0', NAMEDATALEN) == NULL ||
		NameStr(s->database_name)[0] == '\0')
		return "its user or database name is invalid";
	if (memchr(s->sqlstate, '\0', sizeof(s->sqlstate)) == NULL)
		return "its SQLSTATE is invalid";
	if (s->query_len < 0 || s->error_len < -1 || s->result_len < -1 ||
		s->copy_len < 0 || s->copy_len > s->query_len)
		return "a text length is invalid";
	if ((off_t) s->query_len + Max(s->error_len, 0) + Max(s->result_len, 0) > left)
		return "its texts are longer than the rest of the file";
	if ((Size) s->query_len >= MaxAllocSize ||
		(Size) Max(s->error_len, 0) >= MaxAllocSize ||
		(Size) Max(s->result_len, 0) >= MaxAllocSize)
		return "a text length is invalid";
	/* a task saved twice is found when it is inserted (restore_task) */
	return NULL;
}

/*
 * read_text
 *		Read a text of len bytes that must not contain a NUL byte; returns a
 *		NUL-terminated palloc'd copy, or NULL with r->problem set.
 */
static char *
read_text(StateReader *r, int len, const char *what, int n)
{
	char	   *text = palloc(len + 1);

	if (!read_bytes(r, text, len, what, n))
		return NULL;
	if (memchr(text, '\0', len) != NULL)
	{
		r->problem = psprintf("The %s of saved task %d contains a zero byte.", what, n + 1);
		return NULL;
	}
	text[len] = '\0';
	return text;
}

/*
 * read_tasks
 *		Restore every task of an opened state file, up to any damage.
 *		Records are read and checked without the lock, into batches (in
 *		cxt, reset for every batch) that restore_batch() inserts under a
 *		short hold of the lock each, so sessions asking about tasks are
 *		never held up by the file's reading.  Returns the number of tasks
 *		restored; r->problem (allocated in the caller's context) says why
 *		it stopped early, if it did.
 */
static int
read_tasks(StateReader *r, MemoryContext cxt)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old = MemoryContextSwitchTo(cxt);
	PendingTask *batch;
	int			nbatch = 0;
	Size		batch_bytes = 0;
	bool		stopped = false;
	char		magic[4];
	int			n = 0;			/* tasks restored */
	int			i;				/* tasks read */

	batch = MemoryContextAlloc(outer, sizeof(PendingTask) * TT_RESTORE_BATCH_TASKS);
	if (r->size < 5 || fread(magic, 1, 4, r->f) != 4)
	{
		r->problem = pstrdup("The file is too short to be a saved task table.");
		goto done;
	}
	r->pos = 4;
	if (memcmp(magic, TT_STATE_MAGIC_V3, 4) == 0)
		r->v3 = true;
	else if (memcmp(magic, TT_STATE_MAGIC, 4) != 0)
	{
		r->problem = pstrdup("The file does not start with the mark of a saved task table.");
		goto done;
	}

	for (i = 0;; i++)
	{
		PendingTask *p;
		SavedTask	s;
		char		marker;
		char	   *query;
		char	   *error = NULL;
		char	   *result = NULL;
		const char *bad;

		if (nbatch == TT_RESTORE_BATCH_TASKS || batch_bytes >= TT_RESTORE_BATCH_BYTES)
		{
			n += restore_batch(batch, nbatch, r, &stopped);
			nbatch = 0;
			batch_bytes = 0;
			if (stopped)
				break;
			MemoryContextReset(cxt);
		}
		if (r->pos == r->size)
		{
			r->problem = psprintf("The file ends after %d saved tasks, without its end mark.", i);
			break;
		}
		if (!read_bytes(r, &marker, 1, "the start", i))
			break;
		if (marker == 0)
		{
			if (r->pos != r->size)
				r->problem = psprintf("The file goes on after the end of its %d tasks.", i);
			break;
		}
		if (marker != 1)
		{
			r->problem = psprintf("Saved task %d does not start with the expected byte.", i + 1);
			break;
		}
		if (!read_saved_task(r, &s, i))
			break;
		if ((bad = check_saved_task(&s, r)) != NULL)
		{
			r->problem = psprintf("Saved task %d (job " INT64_FORMAT ", task %d) cannot be restored: %s.",
								  i + 1, s.job_id, s.task_id, bad);
			break;
		}
		if ((query = read_text(r, s.query_len, "query", i)) == NULL)
			break;
		if (s.error_len >= 0 &&
			(error = read_text(r, s.error_len, "error", i)) == NULL)
			break;
		if (s.result_len >= 0)
		{
			result = palloc(Max(s.result_len, 1));
			if (!read_bytes(r, result, s.result_len, "the result", i))
				break;
		}
		p = &batch[nbatch++];
		p->s = s;
		p->n = i;
		p->query = query;
		p->error = error;
		p->result = result;
		p->to_file = false;
		batch_bytes += s.query_len + Max(s.error_len, 0) + Max(s.result_len, 0);
	}

	/* what was read before the end or the damage is restored */
	if (nbatch > 0 && !stopped)
	{
		char	   *problem = r->problem;

		r->problem = NULL;
		n += restore_batch(batch, nbatch, r, &stopped);
		if (!stopped)
			r->problem = problem;
	}

done:
	if (r->problem)
		r->problem = MemoryContextStrdup(outer, r->problem);
	MemoryContextSwitchTo(old);
	pfree(batch);
	return n;
}

/*
 * read_state_file
 *		Restore the tasks of the state file f.  Returns the number of tasks
 *		restored and sets *problem (palloc'd) if the file was damaged or
 *		something went wrong before its end.  Never throws.  The lock is
 *		taken only for each batch's insertion (read_tasks).
 */
static int
read_state_file(FILE *f, char **problem)
{
	MemoryContext old = CurrentMemoryContext;
	MemoryContext cxt;
	StateReader r;
	struct stat st;
	volatile int n = 0;

	*problem = NULL;
	memset(&r, 0, sizeof(r));
	r.f = f;
	if (fstat(fileno(f), &st) != 0)
	{
		*problem = psprintf("Could not stat the file: %m.");
		return 0;
	}
	r.size = st.st_size;

	cxt = AllocSetContextCreate(old, "task tracker restore", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		n = read_tasks(&r, cxt);
		if (r.problem)
			*problem = MemoryContextStrdup(old, r.problem);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* every LWLock: an ERROR in the area's code leaves its lock held */
		LWLockReleaseAll();
		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		*problem = psprintf("Restoring stopped on an error: %s.", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextDelete(cxt);

	return n;
}

/*
 * read_lost_marker
 *		Did the last shutdown fail to save the table?  Returns true if a
 *		marker exists (in the area or in $PGDATA); *ntasks (-1 when unknown)
 *		and reason (empty when unknown) say what it recorded.
 */
static bool
read_lost_marker(int *ntasks, char *reason, size_t reason_size)
{
	const char *paths[] = {TT_STATE_LOST, TT_STATE_LOST_ROOT};
	FILE	   *f = NULL;
	char		line[32];
	bool		found = false;

	*ntasks = -1;
	reason[0] = '\0';
	for (int i = 0; i < lengthof(paths) && f == NULL; i++)
	{
		f = AllocateFile(paths[i], PG_BINARY_R);
		if (f == NULL && errno != ENOENT)
		{
			/* there is a marker, we cannot read what it says */
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not open file \"%s\": %m", paths[i])));
			found = true;
		}
	}
	if (f == NULL)
		return found;
	if (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *end;
		long		v;

		errno = 0;
		v = strtol(line, &end, 10);
		if (errno == 0 && end != line && *end == '\n' && v >= 0 && v <= INT_MAX)
			*ntasks = (int) v;
		if (fgets(reason, reason_size, f) == NULL)
			reason[0] = '\0';
		reason[strcspn(reason, "\n")] = '\0';
	}
	FreeFile(f);
	return true;
}

/*
 * remove_file
 *		unlink() that tolerates a missing file and logs other failures.
 */
static void
remove_file(const char *path)
{
	if (unlink(path) != 0 && errno != ENOENT)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", path)));
}

/*
 * remove_lost_markers
 *		Remove the marker of a failed save, wherever it is.
 */
static void
remove_lost_markers(void)
{
	remove_file(TT_STATE_LOST);
	remove_file(TT_STATE_LOST_ROOT);
}

/*
 * remove_orphan_job_dirs
 *		Remove the job directories of jobs that are not in the table (their
 *		tasks were not saved, or not restored) and any directory a drop left
 *		behind.  Only names the tracker itself makes are touched.  Returns
 *		how many were removed.
 */
static int
remove_orphan_job_dirs(void)
{
	DIR		   *d;
	struct dirent *de;
	int			removed = 0;

	d = AllocateDir(TT_DATA_DIR);
	if (d == NULL)
		return 0;
	while ((de = ReadDir(d, TT_DATA_DIR)) != NULL)
	{
		char		path[MAXPGPATH];
		bool		orphan = false;

		if (strncmp(de->d_name, "dropped_", 8) == 0)
			orphan = true;
		else if (strncmp(de->d_name, "job_", 4) == 0)
		{
			char	   *end;
			int64		job_id;

			errno = 0;
			job_id = strtoi64(de->d_name + 4, &end, 10);
			if (errno != 0 || end == de->d_name + 4 || *end != '\0' || job_id <= 0)
				continue;
			LWLockAcquire(tt_shared->lock, LW_SHARED);
			orphan = (hash_search(tt_job_hash, &job_id, HASH_FIND, NULL) == NULL);
			LWLockRelease(tt_shared->lock);
		}
		if (!orphan)
			continue;
		snprintf(path, sizeof(path), "%s/%s", TT_DATA_DIR, de->d_name);
		if (rmtree(path, true))
			removed++;
	}
	FreeDir(d);
	return removed;
}

/*
 * tt_persist_restore
 *		Called by the tracker on fresh shared memory: load the saved table,
 *		or clean up after an unclean stop or a failed save.  Never fails on
 *		what it finds on disk: whatever it is, the tracker starts.
 */
void
tt_persist_restore(void)
{
	struct stat st;
	FILE	   *f;
	char	   *problem = NULL;
	char		reason[TT_LOST_REASON_LEN + 2];
	int			nlost;
	bool		lost;
	int			n = 0;
	int			removed;

	if (stat(TT_DATA_DIR, &st) != 0)
	{
		/* first start ever */
		tt_result_ensure_dir();
		return;
	}

	/* what a save cut short by a crash left (normally removed at once) */
	remove_file(TT_STATE_TMP);
	lost = read_lost_marker(&nlost, reason, sizeof(reason));

	f = AllocateFile(TT_STATE_FILE, PG_BINARY_R);
	if (f == NULL && errno == ENOENT)
	{
		removed = tt_result_remove_all();
		if (lost)
		{
			ereport(LOG,
					(errmsg("task tracker: task table starts empty because the last shutdown could not save it; removed %d leftover job directories",
							removed),
					 nlost >= 0 && reason[0] != '\0' ?
					 errdetail("The shutdown lost %d tasks: %s.", nlost, reason) :
					 nlost >= 0 ? errdetail("The shutdown lost %d tasks.", nlost) : 0));
			remove_lost_markers();
		}
		else
			ereport(LOG,
					(errmsg("task tracker: task table starts empty after a crash or unclean stop; removed %d leftover job directories",
							removed)));
		return;
	}

	if (f == NULL)
		problem = psprintf("Could not open the file: %m.");
	else
	{
		n = read_state_file(f, &problem);
		FreeFile(f);
	}

	if (problem != NULL)
	{
		/* keep the damaged file for inspection, replacing an older one */
		if (rename(TT_STATE_FILE, TT_STATE_CORRUPT) != 0)
		{
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not rename file \"%s\" to \"%s\": %m",
							TT_STATE_FILE, TT_STATE_CORRUPT)));
			remove_file(TT_STATE_FILE);
		}
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("task tracker state file \"%s\" is corrupt; restored %d tasks before the damage",
						TT_STATE_FILE, n),
				 errdetail("%s", problem),
				 errhint("The file is kept as \"%s\". The tasks saved after the damage are lost.",
						 TT_STATE_CORRUPT)));
	}
	else
		remove_file(TT_STATE_FILE);
	/* a state file makes a marker of an earlier failure stale */
	if (lost)
		remove_lost_markers();

	removed = remove_orphan_job_dirs();
	ereport(LOG,
			(errmsg("task tracker restored %d tasks from the last clean shutdown", n)));
	if (removed > 0)
		ereport(LOG,
				(errmsg("task tracker removed %d job directories no restored task uses",
						removed)));
}

/*
 * tt_persist_discard
 *		The tracker restarted on intact shared memory (it exited on an error
 *		or was terminated while the server kept running): what its exit
 *		saved, or failed to save, is stale.
 */
void
tt_persist_discard(void)
{
	remove_file(TT_STATE_FILE);
	remove_file(TT_STATE_TMP);
	remove_lost_markers();
}
