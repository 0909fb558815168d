"""a run's localisation against the world's truth (``ambient localize``, issue 37)

Revision ID: f3a8d6c1b9e4
Revises: f3a8c1d6b9e4
Create Date: 2026-12-07 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3a8d6c1b9e4'
down_revision = 'f3a8c1d6b9e4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('localization', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('localization')
