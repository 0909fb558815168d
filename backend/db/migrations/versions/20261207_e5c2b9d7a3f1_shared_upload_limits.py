"""upload_usage, prediction_slots, listen_predictions, synthesis_jobs: the listening limits and synthesis jobs,
kept in the database so that they hold across server processes (security round four, item 9)

Revision ID: e5c2b9d7a3f1
Revises: d1f0a5c3e7b2
Create Date: 2026-12-07 07:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'e5c2b9d7a3f1'
down_revision = 'd1f0a5c3e7b2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upload_usage',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.Column('kind', sa.String(length=10), nullable=False),
                    sa.Column('amount', sa.BigInteger(), nullable=False),
                    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_upload_usage_annotator_id_annotators'), ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_usage')))
    op.create_index(op.f('ix_upload_usage_annotator_id'), 'upload_usage', ['annotator_id'])
    op.create_index(op.f('ix_upload_usage_at'), 'upload_usage', ['at'])

    op.create_table('prediction_slots',
                    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('holder', sa.String(length=64), nullable=False),
                    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('number', name=op.f('pk_prediction_slots')))

    op.create_table('listen_predictions',
                    sa.Column('key', sa.String(length=64), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.Column('run_id', sa.Integer(), nullable=False),
                    sa.Column('texture', sa.LargeBinary(), nullable=False),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_listen_predictions_annotator_id_annotators'),
                                            ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_listen_predictions_run_id_runs'),
                                            ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('key', name=op.f('pk_listen_predictions')))
    op.create_index(op.f('ix_listen_predictions_annotator_id'), 'listen_predictions', ['annotator_id'])
    op.create_index(op.f('ix_listen_predictions_run_id'), 'listen_predictions', ['run_id'])
    op.create_index(op.f('ix_listen_predictions_created_at'), 'listen_predictions', ['created_at'])

    op.create_table('synthesis_jobs',
                    sa.Column('id', sa.String(length=64), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.Column('state', sa.String(length=10), nullable=False),
                    sa.Column('done', sa.Integer(), nullable=False),
                    sa.Column('total', sa.Integer(), nullable=False),
                    sa.Column('wav', sa.LargeBinary(), nullable=True),
                    sa.Column('error', sa.Text(), nullable=True),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
                    sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')",
                                       name=op.f('ck_synthesis_jobs_state')),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_synthesis_jobs_annotator_id_annotators'), ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_synthesis_jobs')))
    op.create_index(op.f('ix_synthesis_jobs_annotator_id'), 'synthesis_jobs', ['annotator_id'])
    op.create_index(op.f('ix_synthesis_jobs_state'), 'synthesis_jobs', ['state'])


def downgrade() -> None:
    op.drop_table('synthesis_jobs')
    op.drop_table('listen_predictions')
    op.drop_table('prediction_slots')
    op.drop_table('upload_usage')
