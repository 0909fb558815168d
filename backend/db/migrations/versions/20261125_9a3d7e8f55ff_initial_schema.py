"""initial schema

Revision ID: 9a3d7e8f55ff
Revises: 
Create Date: 2026-11-25 13:28:26.873438
"""
from alembic import op
import sqlalchemy as sa


revision = '9a3d7e8f55ff'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=500), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotators')),
    sa.UniqueConstraint('name', name=op.f('uq_annotators_name'))
    )
    op.create_table('categories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('synonyms', sa.String(length=1000), nullable=False),
    sa.Column('stuff', sa.Boolean(), nullable=False),
    sa.Column('characteristic_sound', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_categories')),
    sa.UniqueConstraint('name', name=op.f('uq_categories_name'))
    )
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('data_dir', sa.String(length=1000), nullable=False),
    sa.Column('videos_dir', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('data_dir', name=op.f('uq_datasets_data_dir'))
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('run_dir', sa.String(length=1000), nullable=False),
    sa.Column('model_kind', sa.String(length=200), nullable=False),
    sa.Column('labels_kind', sa.String(length=50), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_runs_dataset_id_datasets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('run_dir', name=op.f('uq_runs_run_dir'))
    )
    op.create_table('videos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_videos_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_videos')),
    sa.UniqueConstraint('dataset_id', 'key', name=op.f('uq_videos_dataset_id'))
    )
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_videos_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('frames',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('video_id', sa.Integer(), nullable=False),
    sa.Column('row', sa.Integer(), nullable=False),
    sa.Column('frame_index', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('image_path', sa.String(length=1000), nullable=False),
    sa.Column('clip_path', sa.String(length=1000), nullable=False),
    sa.Column('split', sa.String(length=10), nullable=False),
    sa.Column('silent', sa.Boolean(), nullable=False),
    sa.Column('texture', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_frames_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_frames_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_frames')),
    sa.UniqueConstraint('dataset_id', 'row', name=op.f('uq_frames_dataset_id'))
    )
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_frames_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_video_id'), ['video_id'], unique=False)

    op.create_table('layers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('num_units', sa.Integer(), nullable=False),
    sa.Column('input_size', sa.Integer(), nullable=False),
    sa.Column('rf_size', sa.Double(), nullable=False),
    sa.Column('rf_radius', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_layers_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_layers')),
    sa.UniqueConstraint('run_id', 'name', name=op.f('uq_layers_run_id'))
    )
    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_layers_run_id'), ['run_id'], unique=False)

    op.create_table('sound_clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('centroid', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_sound_clusters_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sound_clusters')),
    sa.UniqueConstraint('run_id', 'index', name=op.f('uq_sound_clusters_run_id'))
    )
    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sound_clusters_run_id'), ['run_id'], unique=False)

    op.create_table('units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('layer_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('auto_category_id', sa.Integer(), nullable=True),
    sa.Column('auto_precision', sa.Double(), nullable=True),
    sa.Column('auto_iou', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['auto_category_id'], ['categories.id'], name=op.f('fk_units_auto_category_id_categories'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['layer_id'], ['layers.id'], name=op.f('fk_units_layer_id_layers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_units')),
    sa.UniqueConstraint('layer_id', 'index', name=op.f('uq_units_layer_id'))
    )
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_units_layer_id'), ['layer_id'], unique=False)

    op.create_table('annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('answer', sa.String(length=10), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("answer IN ('yes', 'no', 'texture')", name=op.f('ck_annotations_answer')),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_annotations_annotator_id_annotators'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_annotations_category_id_categories'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_annotations_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations')),
    sa.UniqueConstraint('unit_id', 'annotator_id', name=op.f('uq_annotations_unit_id'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotations_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_annotations_unit_id'), ['unit_id'], unique=False)

    op.create_table('unit_images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('activation', sa.Double(), nullable=False),
    sa.Column('masked_jpeg', sa.LargeBinary(), nullable=False),
    sa.Column('frame_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_unit_images_frame_id_frames'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_unit_images_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_images')),
    sa.UniqueConstraint('unit_id', 'rank', name=op.f('uq_unit_images_unit_id'))
    )
    with op.batch_alter_table('unit_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unit_images_frame_id'), ['frame_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_images_unit_id'), ['unit_id'], unique=False)

    op.create_table('unit_reservations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_unit_reservations_annotator_id_annotators'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_unit_reservations_unit_id_units'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_reservations')),
    sa.UniqueConstraint('unit_id', 'annotator_id', name=op.f('uq_unit_reservations_unit_id'))
    )
    with op.batch_alter_table('unit_reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unit_reservations_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_reservations_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_reservations_unit_id'), ['unit_id'], unique=False)

    op.create_table('image_marks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('annotation_id', sa.Integer(), nullable=False),
    sa.Column('unit_image_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['annotation_id'], ['annotations.id'], name=op.f('fk_image_marks_annotation_id_annotations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_image_id'], ['unit_images.id'], name=op.f('fk_image_marks_unit_image_id_unit_images'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image_marks')),
    sa.UniqueConstraint('annotation_id', 'unit_image_id', name=op.f('uq_image_marks_annotation_id'))
    )
    with op.batch_alter_table('image_marks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_marks_annotation_id'), ['annotation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_marks_unit_image_id'), ['unit_image_id'], unique=False)

    op.create_table('sound_judgements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('unit_image_id', sa.Integer(), nullable=False),
    sa.Column('audible', sa.String(length=10), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("audible IN ('yes', 'no', 'unsure')", name=op.f('ck_sound_judgements_audible')),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_sound_judgements_annotator_id_annotators'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_image_id'], ['unit_images.id'], name=op.f('fk_sound_judgements_unit_image_id_unit_images'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sound_judgements')),
    sa.UniqueConstraint('annotator_id', 'unit_image_id', name=op.f('uq_sound_judgements_annotator_id'))
    )
    with op.batch_alter_table('sound_judgements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sound_judgements_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sound_judgements_unit_image_id'), ['unit_image_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sound_judgements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sound_judgements_unit_image_id'))
        batch_op.drop_index(batch_op.f('ix_sound_judgements_annotator_id'))

    op.drop_table('sound_judgements')
    with op.batch_alter_table('image_marks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_marks_unit_image_id'))
        batch_op.drop_index(batch_op.f('ix_image_marks_annotation_id'))

    op.drop_table('image_marks')
    with op.batch_alter_table('unit_reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_reservations_unit_id'))
        batch_op.drop_index(batch_op.f('ix_unit_reservations_expires_at'))
        batch_op.drop_index(batch_op.f('ix_unit_reservations_annotator_id'))

    op.drop_table('unit_reservations')
    with op.batch_alter_table('unit_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_images_unit_id'))
        batch_op.drop_index(batch_op.f('ix_unit_images_frame_id'))

    op.drop_table('unit_images')
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotations_unit_id'))
        batch_op.drop_index(batch_op.f('ix_annotations_annotator_id'))

    op.drop_table('annotations')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_units_layer_id'))

    op.drop_table('units')
    with op.batch_alter_table('sound_clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sound_clusters_run_id'))

    op.drop_table('sound_clusters')
    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_layers_run_id'))

    op.drop_table('layers')
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_frames_video_id'))
        batch_op.drop_index(batch_op.f('ix_frames_dataset_id'))

    op.drop_table('frames')
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_videos_dataset_id'))

    op.drop_table('videos')
    op.drop_table('runs')
    op.drop_table('datasets')
    op.drop_table('categories')
    op.drop_table('annotators')
