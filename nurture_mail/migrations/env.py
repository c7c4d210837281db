"""Alembic environment: runs on the connection handed in by nurture_mail.database.upgrade."""

from alembic import context
from sqlalchemy import create_engine

from nurture_mail.models import Base, postgresql_options

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    if conn.dialect.name == "postgresql":
        postgresql_options()  # the partial indexes' WHERE, compared by --autogenerate
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:  # `alembic revision --autogenerate` during development
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
