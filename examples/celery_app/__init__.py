"""Delivery through Celery: ``tasks.py`` is the shared app module, ``web.py`` the web side."""
