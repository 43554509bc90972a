"""A small shop application with seeded tracking problems (linted by tests/cli)."""
