"""still-image pools (frames without a video or clip) and Network Dissection's automatic label per unit

Revision ID: d8c2a5f7e913
Revises: b5e1c3d9f024
Create Date: 2026-12-01 09:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'd8c2a5f7e913'
down_revision = 'b5e1c3d9f024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.alter_column('video_id', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('clip_path', existing_type=sa.String(length=1000), nullable=True)

    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_netdissect_category_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('auto_netdissect_iou', sa.Double(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_units_auto_netdissect_category_id_categories'), 'categories',
                                    ['auto_netdissect_category_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_units_auto_netdissect_category_id_categories'), type_='foreignkey')
        batch_op.drop_column('auto_netdissect_iou')
        batch_op.drop_column('auto_netdissect_category_id')

    # Still images have no video: they cannot stay in a schema that requires one.
    op.execute("DELETE FROM frames WHERE video_id IS NULL")
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.alter_column('clip_path', existing_type=sa.String(length=1000), nullable=False)
        batch_op.alter_column('video_id', existing_type=sa.Integer(), nullable=False)
