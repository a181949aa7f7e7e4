"""`python -m flows.cli`: the `splitrec` command line."""

from flows.cli import app

if __name__ == "__main__":
    app(prog_name="splitrec")
