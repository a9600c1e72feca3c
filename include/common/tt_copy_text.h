/*-------------------------------------------------------------------------
 *
 * tt_copy_text.h
 *	  COPY text format: one place that splits and de-escapes a line, and
 *	  one that escapes a value, used by the tracker (writing results), the
 *	  worker's task_result() and the coordinator's executors (reading them).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_COPY_TEXT_H
#define TT_COPY_TEXT_H

#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"

/* how COPY's text format writes a NULL */
#define TT_COPY_NULL		"\\N"

extern int	tt_copy_text_split(char *line, int len, char **values, int nvalues);
extern void tt_copy_text_append(StringInfo buf, const char *value, int len);
extern int	tt_copy_statement_length(RawStmt *raw, int len);
extern char *tt_copy_wrap(const char *query, int len);

#endif							/* TT_COPY_TEXT_H */
