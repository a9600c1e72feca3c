/*-------------------------------------------------------------------------
 *
 * persist.c
 *	  Save the task table when the server stops cleanly; restore it, or
 *	  clean up after a crash, when the tracker starts.
 *
 * Design
 *	  On SIGTERM (pg_ctl stop, smart or fast) the tracker has already
 *	  stopped its running tasks and put them back in the queue; it then
 *	  writes every task to $PGDATA/pg_task_tracker/tasks.state (written to
 *	  a temporary name and renamed, so a half-written file is never read).
 *	  When the tracker starts on freshly initialised shared memory it loads
 *	  that file and removes it.  If there is no file but the directory
 *	  exists, the previous run did not stop cleanly (kill -9, immediate
 *	  stop, crash): the table starts empty, every leftover job directory is
 *	  removed, and a LOG line says so.
 *
 *	  The format is private and versioned: "TTS4", then, per task in
 *	  assignment order, a byte 1 and the record; a byte 0 ends the file.
 *	  A file of the previous version ("TTS3", written by the 1.0 library,
 *	  whose records lack copy_len) is read too: its queued tasks run as
 *	  plain statements.  In-memory results are saved as they are stored
 *	  (tt_result_file.h reads both the current and the 1.0 format).
 *
 * Locking
 *	  Saving reads the table under TTShared->lock in shared mode; restoring
 *	  fills it under the lock in exclusive mode before the tracker marks
 *	  itself ready (backends wait for readiness before assigning).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#include "task_tracker.h"
#include "tt_persist.h"
#include "tt_result_file.h"
#include "tt_shmem.h"

#define TT_STATE_FILE		TT_DATA_DIR "/tasks.state"
#define TT_STATE_TMP		TT_DATA_DIR "/tasks.state.tmp"
#define TT_STATE_MAGIC		"TTS4"
#define TT_STATE_MAGIC_V3	"TTS3"	/* written by the 1.0 library */

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
	int32		copy_len;		/* TTTask->copy_len */
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

static int
seq_cmp(const void *a, const void *b)
{
	const TTTask *ta = *(TTTask *const *) a;
	const TTTask *tb = *(TTTask *const *) b;

	if (ta->seq != tb->seq)
		return ta->seq < tb->seq ? -1 : 1;
	return 0;
}

/*
 * tt_persist_save
 *		Write the whole task table to the state file.  Tasks still marked
 *		active are saved as queued (their attempt is already counted).
 */
void
tt_persist_save(void)
{
	StringInfoData buf;
	HASH_SEQ_STATUS seq;
	TTTask	   *task;
	TTTask	  **all;
	int			n = 0;
	int			fd;
	char		more = 1;
	char		end = 0;

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, TT_STATE_MAGIC, 4);

	LWLockAcquire(tt_shared->lock, LW_SHARED);
	all = palloc(sizeof(TTTask *) * (tt_shared->ntasks + 1));
	hash_seq_init(&seq, tt_task_hash);
	while ((task = hash_seq_search(&seq)) != NULL)
		all[n++] = task;
	qsort(all, n, sizeof(TTTask *), seq_cmp);

	for (int i = 0; i < n; i++)
	{
		SavedTask	s;
		char	   *query;
		char	   *error;

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
		appendBinaryStringInfo(&buf, &more, 1);
		appendBinaryStringInfo(&buf, (char *) &s, sizeof(s));
		if (s.query_len > 0)
			appendBinaryStringInfo(&buf, query, s.query_len);
		if (s.error_len > 0)
			appendBinaryStringInfo(&buf, error, s.error_len);
		if (s.result_len > 0)
			appendBinaryStringInfo(&buf, tt_text_get(task->result), s.result_len);
	}
	LWLockRelease(tt_shared->lock);
	appendBinaryStringInfo(&buf, &end, 1);

	tt_result_ensure_dir();
	fd = OpenTransientFilePerm(TT_STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
							   S_IRUSR | S_IWUSR);
	if (fd < 0 || write(fd, buf.data, buf.len) != buf.len ||
		pg_fsync(fd) != 0 || CloseTransientFile(fd) != 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("task tracker could not save its task table to \"%s\": %m",
						TT_STATE_TMP)));
		return;
	}
	if (durable_rename(TT_STATE_TMP, TT_STATE_FILE, LOG) == 0)
		ereport(LOG,
				(errmsg("task tracker saved %d tasks", n)));
}

/*
 * restore_one
 *		Insert one saved task.  Caller holds the lock exclusively.
 */
static void
restore_one(const SavedTask *s, const char *query, const char *error,
			const char *result)
{
	TTJob	   *job;
	TTTask	   *task;
	TTTaskStatus status = (TTTaskStatus) s->status;

	if (tt_shared->ntasks >= max_tracked_tasks_per_node)
	{
		ereport(WARNING,
				(errmsg("task tracker dropped saved task (job " INT64_FORMAT ", task %d): task table is full",
						s->job_id, s->task_id),
				 errhint("Increase citus.max_tracked_tasks_per_node.")));
		return;
	}
	job = tt_job_lookup(s->job_id, true, s->owner);
	task = tt_task_insert(job, s->job_id, s->task_id);
	task->owner = s->owner;
	task->dbid = s->dbid;
	task->encoding = s->encoding;
	task->user_name = s->user_name;
	task->database_name = s->database_name;
	task->attempts = s->attempts;
	task->seq = s->seq;
	task->result_rows = s->result_rows;
	task->assigned_at = s->assigned_at;
	task->started_at = s->started_at;
	task->has_file = s->has_file;
	task->query = tt_text_store(query, s->query_len, false);
	task->copy_len = (s->copy_len > 0 && s->copy_len <= s->query_len) ? s->copy_len : 0;
	if (error)
		tt_task_set_error(task, s->sqlstate, error);
	if (result)
	{
		dsa_pointer blob = tt_blob_store(result, s->result_len);

		if (DsaPointerIsValid(blob))
			tt_task_set_result(task, blob, s->result_len);
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
}

/*
 * read_saved_task
 *		Read the fixed part of one saved task, of either format version.
 */
static bool
read_saved_task(FILE *f, bool v3, SavedTask *s)
{
	SavedTaskV3 old;

	if (!v3)
		return fread(s, 1, sizeof(*s), f) == sizeof(*s);
	if (fread(&old, 1, sizeof(old), f) != sizeof(old))
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
	s->has_file = old.has_file;
	s->query_len = old.query_len;
	s->error_len = old.error_len;
	s->result_len = old.result_len;
	s->copy_len = 0;
	return true;
}

/*
 * tt_persist_restore
 *		Called by the tracker on fresh shared memory: load the saved table,
 *		or clean up after an unclean stop.
 */
void
tt_persist_restore(void)
{
	struct stat st;
	FILE	   *f;
	char		magic[4];
	int			n = 0;
	bool		ok = true;
	bool		v3 = false;

	if (stat(TT_DATA_DIR, &st) != 0)
	{
		/* first start ever */
		tt_result_ensure_dir();
		return;
	}

	f = AllocateFile(TT_STATE_FILE, PG_BINARY_R);
	if (f == NULL)
	{
		int			removed = tt_result_remove_all();

		ereport(LOG,
				(errmsg("task tracker: task table starts empty after a crash or unclean stop; removed %d leftover job directories",
						removed)));
		return;
	}

	LWLockAcquire(tt_shared->lock, LW_EXCLUSIVE);
	if (fread(magic, 1, 4, f) != 4)
		ok = false;
	else if (memcmp(magic, TT_STATE_MAGIC_V3, 4) == 0)
		v3 = true;
	else if (memcmp(magic, TT_STATE_MAGIC, 4) != 0)
		ok = false;
	while (ok)
	{
		SavedTask	s;
		char	   *query;
		char	   *error = NULL;
		char	   *result = NULL;
		char		marker;

		if (fread(&marker, 1, 1, f) != 1)
		{
			ok = false;
			break;
		}
		if (marker == 0)
			break;
		if (!read_saved_task(f, v3, &s) || s.query_len < 0)
		{
			ok = false;
			break;
		}
		query = palloc(s.query_len + 1);
		if (fread(query, 1, s.query_len, f) != (size_t) s.query_len)
		{
			ok = false;
			break;
		}
		query[s.query_len] = '\0';
		if (s.error_len >= 0)
		{
			error = palloc(s.error_len + 1);
			if (fread(error, 1, s.error_len, f) != (size_t) s.error_len)
			{
				ok = false;
				break;
			}
			error[s.error_len] = '\0';
		}
		if (s.result_len >= 0)
		{
			result = palloc(Max(s.result_len, 1));
			if (fread(result, 1, s.result_len, f) != (size_t) s.result_len)
			{
				ok = false;
				break;
			}
		}
		restore_one(&s, query, error, result);
		n++;
	}
	LWLockRelease(tt_shared->lock);
	FreeFile(f);

	if (!ok)
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("task tracker state file \"%s\" is corrupt; restored %d tasks before the damage",
						TT_STATE_FILE, n)));
	if (unlink(TT_STATE_FILE) != 0)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not remove \"%s\": %m", TT_STATE_FILE)));
	ereport(LOG,
			(errmsg("task tracker restored %d tasks from the last clean shutdown", n)));
}
