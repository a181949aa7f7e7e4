"""The Prefect flows that compose splitrec's tasks, and the `splitrec` command line."""
