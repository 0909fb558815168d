"""campaigns: each run's layer is put before annotators in a campaign; answers, marks (through their answers),
settlements, reservations and sound judgements belong to one, and skips are new (issue 35)

Every existing answer, settlement and sound judgement moves into one campaign per run and layer that has
any (named after them, open, and the run's default: for a run with answers on several layers, the layer
with the most), so nothing is lost. A run without answers gets no campaign: it enters no queue until an
admin puts it in one. Reservations move with their unit; one whose run has no campaign is dropped (a
hold lasts minutes).

Revision ID: f6a1d3c8b9e4
Revises: e5c2b9d7a3f1
Create Date: 2026-12-07 15:00:00
"""
import warnings

from alembic import op
import sqlalchemy as sa


revision = 'f6a1d3c8b9e4'
down_revision = 'e5c2b9d7a3f1'
branch_labels = None
depends_on = None

JUDGES = 3          # model.settings.AnnotationSettings.annotators_per_unit when this revision was written
# (table, old unique constraint and its columns, new unique columns): the tables whose rows gain a campaign.
CAMPAIGN_TABLES = (
    ('annotations', 'uq_annotations_unit_id', ['campaign_id', 'unit_id', 'annotator_id']),
    ('unit_settlements', 'uq_unit_settlements_unit_id', ['campaign_id', 'unit_id']),
    ('sound_judgements', 'uq_sound_judgements_annotator_id', ['campaign_id', 'annotator_id', 'unit_image_id']),
    ('unit_reservations', 'uq_unit_reservations_unit_id', ['campaign_id', 'unit_id', 'annotator_id']),
    ('sound_reservations', 'uq_sound_reservations_unit_id', ['campaign_id', 'unit_id', 'annotator_id']),
)
# Each table's rows -> the run and layer of their unit.
UNIT_OF = {'annotations': 'unit_id', 'unit_settlements': 'unit_id', 'unit_reservations': 'unit_id',
           'sound_reservations': 'unit_id',
           'sound_judgements': '(SELECT unit_images.unit_id FROM unit_images '
                               'WHERE unit_images.id = sound_judgements.unit_image_id)'}


def upgrade() -> None:
    op.create_table('campaigns',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('name', sa.String(length=200), nullable=False),
                    sa.Column('run_id', sa.Integer(), nullable=False),
                    sa.Column('layer', sa.String(length=200), nullable=False),
                    sa.Column('judges', sa.Integer(), nullable=False),
                    sa.Column('blind', sa.Boolean(), nullable=False),
                    sa.Column('instructions', sa.JSON(), nullable=False),
                    sa.Column('everyone', sa.Boolean(), nullable=False),
                    sa.Column('is_open', sa.Boolean(), nullable=False),
                    sa.Column('is_default', sa.Boolean(), nullable=False),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
                    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_campaigns_run_id_runs'),
                                            ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')))
    op.create_index(op.f('ix_campaigns_run_id'), 'campaigns', ['run_id'])
    op.create_table('campaign_members',
                    sa.Column('campaign_id', sa.Integer(), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_campaign_members_annotator_id_annotators'), ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                            name=op.f('fk_campaign_members_campaign_id_campaigns'), ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('campaign_id', 'annotator_id', name=op.f('pk_campaign_members')))
    op.create_index(op.f('ix_campaign_members_annotator_id'), 'campaign_members', ['annotator_id'])
    op.create_table('unit_skips',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('campaign_id', sa.Integer(), nullable=False),
                    sa.Column('unit_id', sa.Integer(), nullable=False),
                    sa.Column('annotator_id', sa.Integer(), nullable=False),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                            name=op.f('fk_unit_skips_annotator_id_annotators'), ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                            name=op.f('fk_unit_skips_campaign_id_campaigns'), ondelete='CASCADE'),
                    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_unit_skips_unit_id_units'),
                                            ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_skips')),
                    sa.UniqueConstraint('campaign_id', 'unit_id', 'annotator_id', name=op.f('uq_unit_skips_campaign_id')))
    op.create_index(op.f('ix_unit_skips_annotator_id'), 'unit_skips', ['annotator_id'])
    op.create_index(op.f('ix_unit_skips_campaign_id'), 'unit_skips', ['campaign_id'])
    op.create_index(op.f('ix_unit_skips_unit_id'), 'unit_skips', ['unit_id'])

    for table, _, _ in CAMPAIGN_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
    _move_answers_into_campaigns(op.get_bind())

    with warnings.catch_warnings():
        # Copying a table reflects the tables it refers to: annotators' case-blind name index cannot be
        # reflected (SQLAlchemy warns), and it is not copied, so the warning would only be noise on every upgrade.
        warnings.filterwarnings('ignore', 'Skipped unsupported reflection', sa.exc.SAWarning)
        _add_campaign_constraints()


def _add_campaign_constraints() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        # Copying `annotations` drops the old table, and with foreign keys on that deletes its marks
        # (ON DELETE CASCADE): keep them aside and put them back.
        op.execute('CREATE TEMPORARY TABLE kept_image_marks AS SELECT * FROM image_marks')
    for table, old_unique, new_unique in CAMPAIGN_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column('campaign_id', existing_type=sa.Integer(), nullable=False)
            batch_op.drop_constraint(old_unique, type_='unique')
            batch_op.create_unique_constraint(op.f(f'uq_{table}_campaign_id'), new_unique)
            batch_op.create_foreign_key(op.f(f'fk_{table}_campaign_id_campaigns'), 'campaigns', ['campaign_id'], ['id'],
                                        ondelete='CASCADE')
            batch_op.create_index(op.f(f'ix_{table}_campaign_id'), ['campaign_id'])
            if table == 'unit_settlements':      # its unit was unique, which indexed it; now an index of its own
                batch_op.create_index(op.f('ix_unit_settlements_unit_id'), ['unit_id'])
    if sqlite:
        op.execute('INSERT INTO image_marks SELECT * FROM kept_image_marks '
                   'WHERE id NOT IN (SELECT id FROM image_marks)')
        op.execute('DROP TABLE kept_image_marks')


def _move_answers_into_campaigns(connection) -> None:
    """One campaign per run and layer with answers, settlements or sound judgements; their rows (and the
    reservations of those layers' units) point to it."""
    unit_layer = ('SELECT layers.run_id, layers.name FROM units JOIN layers ON units.layer_id = layers.id '
                  'WHERE units.id = {unit}')
    answered = {}          # (run id, layer) -> answers and judgements there
    for table in ('annotations', 'unit_settlements', 'sound_judgements'):
        for run_id, layer, count in connection.execute(sa.text(
                f'SELECT layers.run_id, layers.name, count(*) FROM {table} '
                f'JOIN units ON units.id = {UNIT_OF[table]} JOIN layers ON units.layer_id = layers.id '
                'GROUP BY layers.run_id, layers.name')):
            answered[(run_id, layer)] = answered.get((run_id, layer), 0) + count
    results_open = connection.execute(sa.text(
        "SELECT value FROM campaign_settings WHERE name = 'results_open'")).scalar()
    blind = results_open not in (True, 'true', 1)
    runs = dict(connection.execute(sa.text('SELECT id, name FROM runs')).all())
    most = {}              # run id -> its layer with the most answers (the run's default campaign)
    for (run_id, layer), count in sorted(answered.items()):
        if run_id not in most or count > answered[(run_id, most[run_id])]:
            most[run_id] = layer
    campaigns = sa.table('campaigns', sa.column('id', sa.Integer), sa.column('name', sa.String),
                         sa.column('run_id', sa.Integer), sa.column('layer', sa.String),
                         sa.column('judges', sa.Integer), sa.column('blind', sa.Boolean),
                         sa.column('instructions', sa.JSON), sa.column('everyone', sa.Boolean),
                         sa.column('is_open', sa.Boolean), sa.column('is_default', sa.Boolean),
                         sa.column('created_at', sa.DateTime(timezone=True)))
    for run_id, layer in sorted(answered):
        connection.execute(campaigns.insert().values(
            name=f'{runs[run_id]} {layer}'[:200], run_id=run_id, layer=layer, judges=JUDGES, blind=blind,
            instructions={}, everyone=True, is_open=True, is_default=most[run_id] == layer,
            created_at=sa.func.now()))
    for table, _, _ in CAMPAIGN_TABLES:
        unit = UNIT_OF[table]
        connection.execute(sa.text(
            f'UPDATE {table} SET campaign_id = (SELECT campaigns.id FROM campaigns WHERE '
            f'(campaigns.run_id, campaigns.layer) = ({unit_layer.format(unit=unit)}))'))
        if table.endswith('_reservations'):
            connection.execute(sa.text(f'DELETE FROM {table} WHERE campaign_id IS NULL'))


def downgrade() -> None:
    # Back to one answer per unit and annotator: where a unit was answered in several campaigns, the
    # default campaign's answer (else the oldest campaign's) is kept.
    connection = op.get_bind()
    for table, _, new_unique in CAMPAIGN_TABLES:
        others = ' AND '.join(f'other.{column} = {table}.{column}' for column in new_unique[1:])
        connection.execute(sa.text(
            f'DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {table} other JOIN campaigns kept '
            f'ON kept.id = other.campaign_id JOIN campaigns mine ON mine.id = {table}.campaign_id '
            f'WHERE {others} AND other.id != {table}.id AND (kept.is_default > mine.is_default OR '
            f'(kept.is_default = mine.is_default AND kept.id < mine.id)))'))
    sqlite = connection.dialect.name == 'sqlite'
    if sqlite:
        op.execute('CREATE TEMPORARY TABLE kept_image_marks AS SELECT * FROM image_marks')
    for table, old_unique, new_unique in CAMPAIGN_TABLES:
        with op.batch_alter_table(table) as batch_op:
            if table == 'unit_settlements':
                batch_op.drop_index(op.f('ix_unit_settlements_unit_id'))
            batch_op.drop_index(op.f(f'ix_{table}_campaign_id'))
            batch_op.drop_constraint(op.f(f'fk_{table}_campaign_id_campaigns'), type_='foreignkey')
            batch_op.drop_constraint(op.f(f'uq_{table}_campaign_id'), type_='unique')
            batch_op.create_unique_constraint(old_unique, new_unique[1:])
            batch_op.drop_column('campaign_id')
    if sqlite:
        op.execute('INSERT INTO image_marks SELECT * FROM kept_image_marks '
                   'WHERE id NOT IN (SELECT id FROM image_marks) AND annotation_id IN (SELECT id FROM annotations)')
        op.execute('DROP TABLE kept_image_marks')
    op.drop_table('unit_skips')
    op.drop_table('campaign_members')
    op.drop_table('campaigns')
