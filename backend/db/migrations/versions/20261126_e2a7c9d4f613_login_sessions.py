"""login sessions: server-side sessions that logout and password changes end

Revision ID: e2a7c9d4f613
Revises: c4e8f1a2b3d5
Create Date: 2026-11-26 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'e2a7c9d4f613'
down_revision = 'c4e8f1a2b3d5'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Cookies signed before this revision carry no session token: their holders log in again.
    op.create_table('login_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_login_sessions_annotator_id_annotators'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_login_sessions_token_hash'))
    )
    op.create_index(op.f('ix_login_sessions_annotator_id'), 'login_sessions', ['annotator_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_login_sessions_annotator_id'), table_name='login_sessions')
    op.drop_table('login_sessions')
