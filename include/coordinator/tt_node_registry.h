/*-------------------------------------------------------------------------
 *
 * tt_node_registry.h
 *	  The coordinator's registry of worker nodes (task_tracker.nodes).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_NODE_REGISTRY_H
#define TT_NODE_REGISTRY_H

#include "nodes/pg_list.h"

typedef struct TTRegisteredNode
{
	int			node_id;		/* task_tracker.nodes.node_id */
	char	   *node_name;		/* host name, address or socket directory */
	int			node_port;		/* port */
	bool		is_active;		/* jobs may target it */
} TTRegisteredNode;

extern const TTRegisteredNode *tt_registry_find(const char *node_name, int node_port);
extern List *tt_registry_active_nodes(void);
extern void tt_parse_placement(const char *placement, char **host, int *port);
extern void tt_node_resolve(const char *host, int port);
extern bool tt_node_address(const char *host, const char **hosts,
							const char **addrs);

#endif							/* TT_NODE_REGISTRY_H */
