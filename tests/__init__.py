"""The test suite: every folder is a package, so test modules import by dotted name and basenames may repeat."""
