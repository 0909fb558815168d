"""the SHA-256 of each model file a run's network loads from, recorded when it is published: the server
loads only a model file that still has it (issue 34, item 1)

Revision ID: d1f0a5c3e7b2
Revises: a4e9c3b7d5f1
Create Date: 2026-12-07 07:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'd1f0a5c3e7b2'
down_revision = 'a4e9c3b7d5f1'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_files', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('model_files')
