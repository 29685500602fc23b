"""Integration tests: real Mosquitto, real databases (SQLite, PostgreSQL where reachable),
real Chromium."""
