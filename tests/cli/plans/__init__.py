"""Sample tracking plans for the CLI tests.

Each module is a complete plan. The subprocess tests copy one into a temporary project as
``kitchen.py``, so the versions of one plan (``kitchen``, ``kitchen_minor``,
``kitchen_breaking``) share their event names: import at most one of them per process.
"""
