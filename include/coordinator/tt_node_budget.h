/*-------------------------------------------------------------------------
 *
 * tt_node_budget.h
 *	  The coordinator-wide connection budget per node, in shared memory
 *	  (src/coordinator/node_budget.c): every connection this coordinator holds to a
 *	  node, over all sessions, counts against citus.max_shared_pool_size.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_NODE_BUDGET_H
#define TT_NODE_BUDGET_H

/* how a new connection asks for a slot */
typedef enum TTSlotKind
{
	TT_SLOT_FIRST = 0,			/* the session's first connection to the
								 * node: wait for a slot (cancellable) */
	TT_SLOT_EXTRA,				/* one more: only when a slot is free now and
								 * no session waits for a first one */
	TT_SLOT_FORCE				/* cancel / cleanup: counted, never refused */
} TTSlotKind;

/* settings */
extern int	max_shared_pool_size;	/* citus.max_shared_pool_size */
extern int	max_cached_conns_per_worker;	/* citus.max_cached_conns_per_worker */

/*
 * What the budget asks of the connection cache, which it does not know: close
 * the idle connections to a node, close every connection (backend exit).
 * The cache hands them over at start (tt_budget_set_cache_callbacks, called
 * by _PG_init), so the budget needs no header of the cache.
 */
typedef void (*TTBudgetDropIdle) (int node);
typedef void (*TTBudgetCloseAll) (void);

extern void tt_budget_define_settings(void);
extern void tt_budget_set_cache_callbacks(TTBudgetDropIdle drop_idle,
										  TTBudgetCloseAll close_all);
extern Size tt_budget_shmem_size(void);
extern void tt_budget_shmem_request(void);
extern void tt_budget_shmem_init(void);

extern int	tt_budget_node(const char *host, int port);
extern bool tt_budget_open(int node, TTSlotKind kind);
extern void tt_budget_close(int node, bool idle);
extern void tt_budget_idle(int node, bool idle);
extern bool tt_budget_keep_idle(int node, int idle_now, int max_idle);
extern void tt_budget_reserve(const int *nodes, int n);
extern void tt_budget_unreserve(const int *nodes, int n);
extern void tt_budget_process_drops(void);
extern bool tt_budget_connect_begin(int node, bool wait);
extern void tt_budget_connect_end(int node);
extern int	tt_budget_turns_held(void);
extern bool tt_budget_connect_quiet(int node);
extern const char *tt_budget_learn_query(int node);
extern void tt_budget_learn(int node, int connections);

#endif							/* TT_NODE_BUDGET_H */
