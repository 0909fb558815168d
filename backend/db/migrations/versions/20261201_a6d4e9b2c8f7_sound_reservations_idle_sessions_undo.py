"""sound reservations, the last use of each login session (idle timeout), each annotator's last undo

Revision ID: a6d4e9b2c8f7
Revises: f3b9d2c7a1e4
Create Date: 2026-12-01 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'a6d4e9b2c8f7'
down_revision = 'f3b9d2c7a1e4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sound_reservations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_sound_reservations_annotator_id_annotators'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_sound_reservations_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sound_reservations')),
    sa.UniqueConstraint('unit_id', 'annotator_id', name=op.f('uq_sound_reservations_unit_id'))
    )
    op.create_index(op.f('ix_sound_reservations_annotator_id'), 'sound_reservations', ['annotator_id'], unique=False)
    op.create_index(op.f('ix_sound_reservations_expires_at'), 'sound_reservations', ['expires_at'], unique=False)
    op.create_index(op.f('ix_sound_reservations_unit_id'), 'sound_reservations', ['unit_id'], unique=False)
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_undo_at', sa.DateTime(timezone=True), nullable=True))
    # Sessions from before this revision count as used now: nobody is logged out by the upgrade itself.
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False,
                                      server_default=sa.func.current_timestamp()))


def downgrade() -> None:
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
    with op.batch_alter_table('annotators', schema=None) as batch_op:
        batch_op.drop_column('last_undo_at')
    op.drop_index(op.f('ix_sound_reservations_unit_id'), table_name='sound_reservations')
    op.drop_index(op.f('ix_sound_reservations_expires_at'), table_name='sound_reservations')
    op.drop_index(op.f('ix_sound_reservations_annotator_id'), table_name='sound_reservations')
    op.drop_table('sound_reservations')
