"""The HTTP side: the quart-trio application, its routes, and how responses stream."""
