"""A fleet of nodes: the node side (the shipper, standard library only) and the center side
(landing, the node registry)."""
