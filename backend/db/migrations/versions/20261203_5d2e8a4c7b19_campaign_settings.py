"""campaign_settings: the admins' choices for the annotation campaign (whether annotators may see results)

Revision ID: 5d2e8a4c7b19
Revises: c91d4a7e2b65
Create Date: 2026-12-03 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '5d2e8a4c7b19'
down_revision = 'c91d4a7e2b65'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaign_settings',
                    sa.Column('name', sa.String(length=100), nullable=False),
                    sa.Column('value', sa.JSON(), nullable=True),
                    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('updated_by', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['updated_by'], ['annotators.id'],
                                            name=op.f('fk_campaign_settings_updated_by_annotators'),
                                            ondelete='SET NULL'),
                    sa.PrimaryKeyConstraint('name', name=op.f('pk_campaign_settings')))


def downgrade() -> None:
    op.drop_table('campaign_settings')
