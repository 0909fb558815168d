"""campaigns.gold_rate and .adaptive, gold_units, campaign_exclusions, annotations.seconds,
unit_reservations.handed_at: crowd quality control (issue 36)

Revision ID: a7c3e5f9d2b1
Revises: f3a8c1d6b4e9
Create Date: 2026-12-07 16:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'a7c3e5f9d2b1'
down_revision = 'f3a8c1d6b4e9'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch copy drops `campaigns`, and its ON DELETE CASCADE
    # would take every answer with it.
    op.add_column('campaigns', sa.Column('gold_rate', sa.Float(), nullable=False, server_default=sa.text('0')))
    op.add_column('campaigns', sa.Column('adaptive', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('annotations', sa.Column('seconds', sa.Float(), nullable=True))
    op.add_column('unit_reservations', sa.Column('handed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('gold_units',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('campaign_id', sa.Integer(), nullable=False),
                    sa.Column('unit_id', sa.Integer(), nullable=False),
                    sa.Column('answer', sa.String(length=10), nullable=False),
                    sa.Column('category_id', sa.Integer(), nullable=True),
                    sa.Column('marked', sa.JSON(), nullable=True),
                    sa.Column('source', sa.String(length=10), nullable=False),
                    sa.Column('admin_id', sa.Integer(), nullable=True),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.CheckConstraint("answer IN ('yes', 'no', 'texture')", name=op.f('ck_gold_units_answer')),
                    sa.CheckConstraint("source IN ('truth', 'settled', 'typed')", name=op.f('ck_gold_units_source')),
                    sa.ForeignKeyConstraint(['admin_id'], ['annotators.id'],
                                            name=op.f('fk_gold_units_admin_id_annotators'), ondelete='SET NULL'),
                    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                            name=op.f('fk_gold_units_campaign_id_campaigns'), ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['category_id'], ['categories.id'],
                                            name=op.f('fk_gold_units_category_id_categories'), ondelete='SET NULL'),
                    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_gold_units_unit_id_units'),
                                            ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_gold_units')),
                    sa.UniqueConstraint('campaign_id', 'unit_id', name=op.f('uq_gold_units_campaign_id')))
    op.create_index(op.f('ix_gold_units_campaign_id'), 'gold_units', ['campaign_id'])
    op.create_index(op.f('ix_gold_units_unit_id'), 'gold_units', ['unit_id'])
    op.create_table('campaign_exclusions',
                    sa.Column('campaign_id', sa.Integer(), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.Column('admin_id', sa.Integer(), nullable=True),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(['admin_id'], ['annotators.id'],
                                            name=op.f('fk_campaign_exclusions_admin_id_annotators'), ondelete='SET NULL'),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_campaign_exclusions_annotator_id_annotators'),
                                            ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                            name=op.f('fk_campaign_exclusions_campaign_id_campaigns'), ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('campaign_id', 'annotator_id', name=op.f('pk_campaign_exclusions')))
    op.create_index(op.f('ix_campaign_exclusions_annotator_id'), 'campaign_exclusions', ['annotator_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_campaign_exclusions_annotator_id'), table_name='campaign_exclusions')
    op.drop_table('campaign_exclusions')
    op.drop_index(op.f('ix_gold_units_unit_id'), table_name='gold_units')
    op.drop_index(op.f('ix_gold_units_campaign_id'), table_name='gold_units')
    op.drop_table('gold_units')
    with op.batch_alter_table('unit_reservations') as batch:
        batch.drop_column('handed_at')
    with op.batch_alter_table('annotations') as batch:
        batch.drop_column('seconds')
    with op.batch_alter_table('campaigns') as batch:
        batch.drop_column('adaptive')
        batch.drop_column('gold_rate')
