/*-------------------------------------------------------------------------
 *
 * tt_persist.h
 *	  Saving the task table at shutdown and restoring it at start.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_PERSIST_H
#define TT_PERSIST_H

extern void tt_persist_save(void);
extern void tt_persist_restore(void);

#endif							/* TT_PERSIST_H */
