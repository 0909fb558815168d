"""workers.cluster: the Ray cluster a worker's ingest and units jobs run on, for the workers panel

Revision ID: c91d4a7e2b65
Revises: e7f2b4c6d8a1
Create Date: 2026-12-03 09:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'c91d4a7e2b65'
down_revision = 'e7f2b4c6d8a1'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cluster', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('cluster')
