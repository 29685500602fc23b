"""Unit tests: pure logic of one package, no broker, database or browser (fakes allowed)."""
