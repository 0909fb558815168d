"""a run's emergence (dissected checkpoints) and ablation results; each unit's "sounds it helps predict"
and each sound cluster's units it depends on most (issue 28)

Revision ID: a4e9c3b7d5f1
Revises: c1d5e8a9f2b7
Create Date: 2026-12-03 12:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'a4e9c3b7d5f1'
down_revision = 'c1d5e8a9f2b7'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('emergence', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('ablation', sa.JSON(), nullable=True))
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('helps_predict', sa.JSON(), nullable=True))
    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('depends_on', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.drop_column('depends_on')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('helps_predict')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('ablation')
        batch_op.drop_column('emergence')
