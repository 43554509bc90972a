"""A minimal Django project for the Django integration tests, set up as the docs describe."""
