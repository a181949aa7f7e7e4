"""The one error type for bad input: it names the file, the column and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input that the user must fix; the CLI prints it and exits with status 2."""

    def __init__(self, file: Path | str, column: str | None, problem: str) -> None:
        self.file = str(file)
        self.column = column
        self.problem = problem
        where = f"{self.file}, column '{column}'" if column else self.file
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str | None, str]]:
        """Rebuild from the three parts.

        A check that fails on a party's Dask worker raises it there, and the party's own process
        re-raises it.
        """
        return InputError, (self.file, self.column, self.problem)
