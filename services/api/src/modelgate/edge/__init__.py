"""The HTTP edge of a replica worker: the gunicorn worker class, the ASGI middleware, the
prediction lane, the guard (keys, quotas), the access line and the documented answers."""
