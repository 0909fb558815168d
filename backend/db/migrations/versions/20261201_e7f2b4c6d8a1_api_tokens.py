"""api tokens (personal tokens for the JSON API, stored hashed, read or admin scope); the unit page's
activation histograms and lower-quantile samples

Revision ID: e7f2b4c6d8a1
Revises: d8c2a5f7e913
Create Date: 2026-12-01 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'e7f2b4c6d8a1'
down_revision = 'd8c2a5f7e913'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("scope IN ('read', 'admin')", name=op.f('ck_api_tokens_scope')),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_api_tokens_annotator_id_annotators'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_annotator_id'), 'api_tokens', ['annotator_id'], unique=False)
    op.create_table('unit_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('quantile', sa.Double(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('activation', sa.Double(), nullable=False),
    sa.Column('masked_jpeg', sa.LargeBinary(), nullable=False),
    sa.Column('frame_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_unit_samples_frame_id_frames'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_unit_samples_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_samples')),
    sa.UniqueConstraint('unit_id', 'quantile', 'rank', name=op.f('uq_unit_samples_unit_id'))
    )
    op.create_index(op.f('ix_unit_samples_frame_id'), 'unit_samples', ['frame_id'], unique=False)
    op.create_index(op.f('ix_unit_samples_unit_id'), 'unit_samples', ['unit_id'], unique=False)
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('histogram', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('histogram')
    op.drop_index(op.f('ix_unit_samples_unit_id'), table_name='unit_samples')
    op.drop_index(op.f('ix_unit_samples_frame_id'), table_name='unit_samples')
    op.drop_table('unit_samples')
    op.drop_index(op.f('ix_api_tokens_annotator_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
