"""The plan, one module per domain."""
