"""A FastAPI app whose browser page tracks a frontend event through the backend.

Run it with ``ANALYTICS_DEBUG=true python -m examples.fastapi_app`` and open
http://127.0.0.1:8000 (see ``app.py``).
"""
