/*-------------------------------------------------------------------------
 *
 * tt_result_file.h
 *	  Stored task results: the rows of a succeeded task as COPY text, in
 *	  shared memory or in a result file, written by the tracker as they
 *	  stream in and read back by task_result() and task_result_copy().
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_RESULT_FILE_H
#define TT_RESULT_FILE_H

#include "libpq-fe.h"
#include "funcapi.h"

/* size of the stored header: magic and column count */
#define TT_RESULT_HEADER_SIZE	8

/* how much task_result_copy() returns per row (whole lines) */
#define TT_RESULT_CHUNK_SIZE	(64 * 1024)

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
extern bool tt_result_begin(TTResultWriter *w, int ncols);
extern bool tt_result_add_line(TTResultWriter *w, const char *line, int len);
extern bool tt_result_add(TTResultWriter *w, const PGresult *res);
extern bool tt_result_in_memory(TTResultWriter *w);
extern bool tt_result_finish(TTResultWriter *w);
extern void tt_result_discard(TTResultWriter *w);
extern bool tt_result_store_raw(int64 job_id, int32 task_id, Oid owner,
								const char *data, int len);
extern char *tt_result_error(TTResultWriter *w, const char **sqlstate);

/*
 * Reading a stored result (a file opened with AllocateFile, or a copy of
 * an in-memory result) line by line or in chunks of whole lines.
 */
typedef struct TTResultReader
{
	FILE	   *file;			/* source file, or NULL for a memory source */
	const char *name;			/* file path or description, for errors */
	int			ncols;			/* columns of the result */
	bool		legacy;			/* stored in the 1.0 library's format */
	char	   *buf;			/* read buffer, or the memory source */
	int			bufsize;		/* allocated size of buf (file source) */
	int			start;			/* first byte not consumed yet */
	int			end;			/* bytes of data in buf */
	bool		eof;			/* nothing more to read into buf */
	StringInfoData line;		/* legacy: the row at hand, as COPY text */
	StringInfoData chunk;		/* legacy: the chunk at hand */
	bool		pending;		/* legacy: line holds a row for the next chunk */
	int			encoding;		/* rows' encoding when it is not the
								 * database's (converted on reading), or -1 */
	char	   *converted;		/* the last line or chunk converted, or NULL */
} TTResultReader;

extern void tt_result_reader_open_file(TTResultReader *r, FILE *file, const char *name);
extern void tt_result_reader_open_memory(TTResultReader *r, char *data, Size size,
										 const char *name);
extern void tt_result_reader_set_encoding(TTResultReader *r, int encoding);
extern bool tt_result_next_line(TTResultReader *r, char **line, int *len);
extern bool tt_result_next_chunk(TTResultReader *r, int max_bytes, char **data, int *len);
extern void tt_result_reader_close(TTResultReader *r);

extern void tt_result_read(TTResultReader *r, TupleDesc tupdesc, Tuplestorestate *store);
extern void tt_result_check_columns(TTResultReader *r, int natts);
extern char *tt_result_detach_job(int64 job_id);
extern void tt_result_remove_detached(char *path);
extern int	tt_result_remove_all(void);
extern void tt_result_ensure_dir(void);

/* paths of result files: built from numbers only */
extern void tt_task_file_path(char *path, size_t len, int64 job_id, int32 task_id, Oid owner);
extern void tt_job_dir_path(char *path, size_t len, int64 job_id);

#endif							/* TT_RESULT_FILE_H */
