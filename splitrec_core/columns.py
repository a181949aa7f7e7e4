"""Column names every part of the library shares; a leaf module, so anything may import it."""

ID = "id"  # a party's IDs, once validated (its own ID column may be named anything)
