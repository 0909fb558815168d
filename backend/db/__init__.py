"""The unit store: SQLAlchemy models, engine/sessions with Alembic migrations, and the stage writers."""
