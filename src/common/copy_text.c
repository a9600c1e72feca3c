/*-------------------------------------------------------------------------
 *
 * copy_text.c
 *	  COPY's text format, the one form in which task results are stored
 *	  and moved: splitting and de-escaping a line into values, and escaping
 *	  a value into a line; and which statements run as COPY (<query>) TO
 *	  STDOUT, from their raw parse tree (tt_copy_statement_length,
 *	  tt_copy_wrap).
 *
 * Design
 *	  docs/architecture.md, "Flow of one task" (steps 3 to 6); the format
 *	  is COPY's text format with its defaults, read back exactly as COPY
 *	  FROM reads it.
 *
 * Locking
 *	  None: pure functions on the caller's memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/parsenodes.h"

#include "common/tt_copy_text.h"

#define IS_OCTAL(c)		((c) >= '0' && (c) <= '7')

static inline int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * de_escape
 *		De-escape the field from start to end (exclusive) in place, as COPY
 *		FROM's text format does; returns the end of the de-escaped value.
 */
static char *
de_escape(char *start, char *end)
{
	char	   *p = start;
	char	   *out = start;

	while (p < end)
	{
		char		c = *p++;

		if (c == '\\' && p < end)
		{
			c = *p++;
			switch (c)
			{
				case 'b':
					c = '\b';
					break;
				case 'f':
					c = '\f';
					break;
				case 'n':
					c = '\n';
					break;
				case 'r':
					c = '\r';
					break;
				case 't':
					c = '\t';
					break;
				case 'v':
					c = '\v';
					break;
				case '0':
				case '1':
				case '2':
				case '3':
				case '4':
				case '5':
				case '6':
				case '7':
					{
						int			val = c - '0';

						if (p < end && IS_OCTAL(*p))
						{
							val = (val << 3) + (*p++ - '0');
							if (p < end && IS_OCTAL(*p))
								val = (val << 3) + (*p++ - '0');
						}
						c = (char) (val & 0377);
					}
					break;
				case 'x':
					if (p < end && hex_value(*p) >= 0)
					{
						int			val = hex_value(*p++);

						if (p < end && hex_value(*p) >= 0)
							val = (val << 4) + hex_value(*p++);
						c = (char) (val & 0xff);
					}
					break;
				default:
					/* \c is c: \\ is a backslash, \N inside a value an N */
					break;
			}
		}
		*out++ = c;
	}
	return out;
}

/*
 * tt_copy_text_split
 *		Split one COPY text line (len bytes at line, without its newline)
 *		into its values, de-escaping them in place; line[len] must be
 *		writable (it is where the newline was).  The first nvalues values
 *		are stored in values[], each NUL-terminated, NULL for \N.  Returns
 *		how many values the line has, which the caller compares with what
 *		it expects (values beyond nvalues are counted, not stored).
 *
 *		An empty line has one empty value, except when no values are
 *		expected: then it is a row of zero columns (as COPY FROM reads it).
 */
int
tt_copy_text_split(char *line, int len, char **values, int nvalues)
{
	char	   *p = line;
	char	   *end = line + len;
	int			n = 0;

	if (len == 0 && nvalues == 0)
		return 0;

	for (;;)
	{
		char	   *start = p;
		char	   *tab = memchr(p, '\t', end - p);
		bool		escaped;
		bool		more;

		/*
		 * The field ends at the first tab that is not escaped.  Without a
		 * backslash before the first tab (the common case, found with two
		 * memchr scans), that tab ends it; otherwise walk the field.
		 */
		if (tab == NULL)
			tab = end;
		escaped = (memchr(p, '\\', tab - p) != NULL);
		if (!escaped)
			p = tab;
		else
		{
			while (p < end && *p != '\t')
			{
				if (*p == '\\' && p + 1 < end)
					p++;
				p++;
			}
		}
		more = (p < end);

		if (n < nvalues)
		{
			if (p - start == 2 && start[0] == '\\' && start[1] == 'N')
				values[n] = NULL;
			else
			{
				char	   *vend = escaped ? de_escape(start, p) : p;

				*vend = '\0';	/* at or before the tab or the newline */
				values[n] = start;
			}
		}
		n++;
		if (!more)
			break;
		p++;					/* past the tab */
	}
	return n;
}

/*
 * tt_copy_text_append
 *		Append value (len bytes; NULL for an SQL NULL) to buf escaped as COPY
 *		TO's text format writes it, byte for byte (see CopyAttributeOutText):
 *		a NULL is \N; backslash and the control characters \b \f \n \r \t
 *		\v are escaped; every other byte is copied.  The caller adds the
 *		tabs between values and the newline after the last.
 */
void
tt_copy_text_append(StringInfo buf, const char *value, int len)
{
	const char *p;
	const char *end;
	const char *run;

	if (value == NULL)
	{
		appendBinaryStringInfo(buf, TT_COPY_NULL, 2);
		return;
	}

	run = value;
	end = value + len;
	for (p = value; p < end; p++)
	{
		char		c = *p;
		char		esc;

		if ((unsigned char) c >= 0x20 && c != '\\')
			continue;
		switch (c)
		{
			case '\\':
				esc = '\\';
				break;
			case '\b':
				esc = 'b';
				break;
			case '\f':
				esc = 'f';
				break;
			case '\n':
				esc = 'n';
				break;
			case '\r':
				esc = 'r';
				break;
			case '\t':
				esc = 't';
				break;
			case '\v':
				esc = 'v';
				break;
			default:
				/* other control characters are written as they are */
				continue;
		}
		if (p > run)
			appendBinaryStringInfo(buf, run, p - run);
		appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, esc);
		run = p + 1;
	}
	if (end > run)
		appendBinaryStringInfo(buf, run, end - run);
}

/*
 * tt_copy_statement_length
 *		Can the one statement raw (from raw_parser on a text of len bytes)
 *		run as COPY (statement) TO STDOUT?  A SELECT, VALUES, TABLE, WITH or
 *		set operation without INTO (which sits in the leftmost SELECT of a
 *		set operation), and INSERT, UPDATE or DELETE with RETURNING can.
 *		Returns how many bytes of the text, from its start, to wrap; 0 when
 *		the statement cannot be wrapped (or does not start the text, as
 *		after an empty statement: not worth the trouble).  Where the
 *		server still refuses (a rule, say: 0A000 before any row), callers
 *		run the statement as it is.
 */
int
tt_copy_statement_length(RawStmt *raw, int len)
{
	Node	   *stmt = raw->stmt;
	bool		copy = false;

	if (raw->stmt_location != 0)
		return 0;
	switch (nodeTag(stmt))
	{
		case T_SelectStmt:
			{
				SelectStmt *sel = (SelectStmt *) stmt;

				while (sel->op != SETOP_NONE && sel->larg != NULL)
					sel = sel->larg;
				copy = (sel->intoClause == NULL);
			}
			break;
		case T_InsertStmt:
			copy = ((InsertStmt *) stmt)->returningList != NIL;
			break;
		case T_UpdateStmt:
			copy = ((UpdateStmt *) stmt)->returningList != NIL;
			break;
		case T_DeleteStmt:
			copy = ((DeleteStmt *) stmt)->returningList != NIL;
			break;
		default:
			break;
	}
	if (!copy)
		return 0;
	return raw->stmt_len > 0 ? raw->stmt_len : len;
}

/*
 * tt_copy_wrap
 *		COPY (the first len bytes of query) TO STDOUT, palloc'd.  The
 *		newline before the parenthesis ends a trailing -- comment.
 */
char *
tt_copy_wrap(const char *query, int len)
{
	return psprintf("COPY (%.*s\n) TO STDOUT", len, query);
}
