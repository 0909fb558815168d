"""api tokens expire (expires_at; existing tokens get 30 days from their making); account names are
unique whatever their case; accounts can be disabled (disabled_at)

Revision ID: c1d5e8a9f2b7
Revises: 5d2e8a4c7b19
Create Date: 2026-12-03 09:00:00
"""
from datetime import timedelta, timezone

from alembic import op
import sqlalchemy as sa


revision = 'c1d5e8a9f2b7'
down_revision = '5d2e8a4c7b19'
branch_labels = None
depends_on = None

# Settings.token_days: the default life of a token, given to those made before tokens expired.
TOKEN_DAYS = 30


def upgrade() -> None:
    connection = op.get_bind()
    # Accounts that differ only by case must be renamed first: say which, rather than fail on the index.
    names = sa.table('annotators', sa.column('name', sa.String()))
    clashes = connection.execute(sa.select(sa.func.lower(names.c.name)).group_by(sa.func.lower(names.c.name))
                                 .having(sa.func.count() > 1)).scalars().all()
    if clashes:
        raise RuntimeError(f"accounts whose names differ only by case: {', '.join(clashes)}; rename all but one "
                           "of each (e.g. in the database) before upgrading")
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table('api_tokens', sa.column('id', sa.Integer()), sa.column('created_at', sa.DateTime(timezone=True)),
                      sa.column('expires_at', sa.DateTime(timezone=True)))
    for token_id, created_at in connection.execute(sa.select(tokens.c.id, tokens.c.created_at)).all():
        created_at = created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc)
        connection.execute(tokens.update().where(tokens.c.id == token_id)
                           .values(expires_at=created_at + timedelta(days=TOKEN_DAYS)))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=sa.DateTime(timezone=True), nullable=False)

    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('uq_annotators_lower_name', 'annotators', [sa.literal_column('lower(name)')], unique=True)


def downgrade() -> None:
    # The index first: SQLite's batch mode copies the table without an index on an expression.
    op.drop_index('uq_annotators_lower_name', table_name='annotators')
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
