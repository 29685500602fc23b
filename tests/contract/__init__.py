"""Contract tests: the wire contract (golden files, schemas), the dependency rules, and one
test over every hardware backend."""
