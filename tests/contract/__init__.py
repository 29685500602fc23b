"""Contract tests: the wire contract (golden files, schemas), the dependency rules, one test over every hardware backend."""
