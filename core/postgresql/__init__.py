"""Django's PostgreSQL backend with a health check that skips connections proven this second
(see base.py)."""
