"""End-to-end stories: the fleet server as its own process, its broker and simulated nodes."""
