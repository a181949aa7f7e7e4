"""Ways to run the flows beyond one command: served deployments and the distributed demo."""
