"""sound_clusters.description and given_name: what each sound cluster is, from the data at publish (the
world's true sources, else its nearest clips' videos), and the name an admin gives it (issue 35, item 5)

Revision ID: f3a8c1d6b9e4
Revises: f6a1d3c8b9e4
Create Date: 2026-12-07 15:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3a8c1d6b9e4'
down_revision = 'f6a1d3c8b9e4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sound_clusters') as batch:
        batch.add_column(sa.Column('description', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('given_name', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sound_clusters') as batch:
        batch.drop_column('given_name')
        batch.drop_column('description')
