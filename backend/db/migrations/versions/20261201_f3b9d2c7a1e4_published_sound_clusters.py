"""published sound clusters (with members) and units digests: the cluster browser reads the database

Revision ID: f3b9d2c7a1e4
Revises: e2a7c9d4f613
Create Date: 2026-12-01 09:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3b9d2c7a1e4'
down_revision = 'e2a7c9d4f613'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nothing ever wrote sound_clusters before this revision; emptying it lets NOT NULL columns be added.
    op.execute("DELETE FROM sound_clusters")
    op.create_table('sound_cluster_members',
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('frame_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['sound_clusters.id'], name=op.f('fk_sound_cluster_members_cluster_id_sound_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_sound_cluster_members_frame_id_frames'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cluster_id', 'frame_id', name=op.f('pk_sound_cluster_members'))
    )
    with op.batch_alter_table('sound_cluster_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sound_cluster_members_frame_id'), ['frame_id'], unique=False)

    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('units_digest', sa.String(length=64), nullable=True))

    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=100), nullable=False))
        batch_op.add_column(sa.Column('share', sa.Double(), nullable=False))
        batch_op.add_column(sa.Column('texture', sa.LargeBinary(), nullable=False))
        batch_op.add_column(sa.Column('contrast', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('sources', sa.JSON(), nullable=False))
        batch_op.add_column(sa.Column('closest_frame_ids', sa.JSON(), nullable=False))
        batch_op.drop_column('centroid')



def downgrade() -> None:
    op.execute("DELETE FROM sound_clusters")
    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('centroid', sa.LargeBinary(), nullable=False))
        batch_op.drop_column('closest_frame_ids')
        batch_op.drop_column('sources')
        batch_op.drop_column('contrast')
        batch_op.drop_column('texture')
        batch_op.drop_column('share')
        batch_op.drop_column('name')

    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.drop_column('units_digest')

    with op.batch_alter_table('sound_cluster_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sound_cluster_members_frame_id'))

    op.drop_table('sound_cluster_members')
