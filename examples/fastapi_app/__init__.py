"""A FastAPI service that sends commands in its SQLAlchemy session's transaction."""
