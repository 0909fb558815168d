"""units.visualization_png, units.similar, sound_clusters.visualization_png, runs.comparisons: feature
visualisations, similar units and two runs compared (issue 38)

Revision ID: f3a8c1d6b4e9
Revises: f3a8d6c1b9e4
Create Date: 2026-12-07 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3a8c1d6b4e9'
down_revision = 'f3a8d6c1b9e4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('comparisons', sa.JSON(), nullable=True))
    with op.batch_alter_table('units') as batch:
        batch.add_column(sa.Column('visualization_png', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('similar', sa.JSON(), nullable=True))
    with op.batch_alter_table('sound_clusters') as batch:
        batch.add_column(sa.Column('visualization_png', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sound_clusters') as batch:
        batch.drop_column('visualization_png')
    with op.batch_alter_table('units') as batch:
        batch.drop_column('similar')
        batch.drop_column('visualization_png')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('comparisons')
