"""settlements and server secrets (web app)

Revision ID: b7c41e2a9d10
Revises: 9a3d7e8f55ff
Create Date: 2026-11-25 14:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'b7c41e2a9d10'
down_revision = '9a3d7e8f55ff'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('unit_settlements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.String(length=10), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('admin_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("answer IN ('yes', 'no', 'texture')", name=op.f('ck_unit_settlements_answer')),
    sa.ForeignKeyConstraint(['admin_id'], ['annotators.id'], name=op.f('fk_unit_settlements_admin_id_annotators'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_unit_settlements_category_id_categories'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_unit_settlements_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_settlements')),
    sa.UniqueConstraint('unit_id', name=op.f('uq_unit_settlements_unit_id'))
    )
    op.create_table('server_secrets',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_server_secrets'))
    )


def downgrade() -> None:
    op.drop_table('server_secrets')
    op.drop_table('unit_settlements')
