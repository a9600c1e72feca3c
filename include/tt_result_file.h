/*-------------------------------------------------------------------------
 *
 * tt_result_file.h
 *	  Result files: the rows of a succeeded task, written by the tracker as
 *	  they stream in and read back by task_result().
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_RESULT_FILE_H
#define TT_RESULT_FILE_H

#include "libpq-fe.h"
#include "funcapi.h"

typedef struct TTResultWriter
{
	int			fd;				/* open file, or -1 (none created yet) */
	int64		job_id;			/* task whose result this is */
	int32		task_id;
	Oid			owner;
	char		path[MAXPGPATH];	/* its path under $PGDATA */
	char	   *buf;			/* write buffer */
	int			used;			/* bytes used in buf */
	int			ncols;			/* columns, -1 until the header is written */
	int64		rows;			/* rows written */
	int			saved_errno;	/* errno of the first failed write */
	bool		created;		/* the file exists on disk */
} TTResultWriter;

extern void tt_result_writer_init(TTResultWriter *w);
extern void tt_result_start(TTResultWriter *w, int64 job_id, int32 task_id, Oid owner);
extern bool tt_result_add(TTResultWriter *w, const PGresult *res);
extern bool tt_result_in_memory(TTResultWriter *w);
extern bool tt_result_finish(TTResultWriter *w);
extern void tt_result_discard(TTResultWriter *w);
extern char *tt_result_error(TTResultWriter *w, const char **sqlstate);

extern void tt_result_read(FILE *f, const char *path, TupleDesc tupdesc,
						   Tuplestorestate *store);
extern char *tt_result_detach_job(int64 job_id);
extern void tt_result_remove_detached(char *path);
extern int	tt_result_remove_all(void);
extern void tt_result_ensure_dir(void);

#endif							/* TT_RESULT_FILE_H */
