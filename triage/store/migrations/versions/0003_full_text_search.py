"""full-text search over the masked messages

Staff search for 路灯 and expect the topic whose messages say 路灯不亮, whatever its label says. Each
suggestion gets ``search_doc``, the character bigrams of its masked text (triage.text.search), indexed by
the database's own machinery: an external-content FTS5 table kept in step by triggers on SQLite, a
GIN index over ``to_tsvector('simple', search_doc)`` on PostgreSQL. Existing rows are indexed here.

A later migration that rebuilds ``suggestions`` on SQLite (Alembic's batch mode copies the table)
drops these triggers with it: such a migration must create them again (``FTS_TRIGGERS``) and
rebuild the index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 11:40:00
"""
import logging

from alembic import op
import sqlalchemy as sa

from triage.text.search import document


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

FTS_TRIGGERS = (
    "CREATE TRIGGER suggestion_fts_ai AFTER INSERT ON suggestions BEGIN "
    "INSERT INTO suggestion_fts(rowid, search_doc) VALUES (new.id, new.search_doc); END",
    "CREATE TRIGGER suggestion_fts_ad AFTER DELETE ON suggestions BEGIN "
    "INSERT INTO suggestion_fts(suggestion_fts, rowid, search_doc) VALUES ('delete', old.id, old.search_doc); END",
    "CREATE TRIGGER suggestion_fts_au AFTER UPDATE OF search_doc ON suggestions BEGIN "
    "INSERT INTO suggestion_fts(suggestion_fts, rowid, search_doc) VALUES ('delete', old.id, old.search_doc); "
    "INSERT INTO suggestion_fts(rowid, search_doc) VALUES (new.id, new.search_doc); END",
)


def upgrade() -> None:
    with op.batch_alter_table('suggestions') as batch:
        batch.add_column(sa.Column('search_doc', sa.Text(), nullable=False, server_default=''))
    bind = op.get_bind()
    rows = sa.table('suggestions', sa.column('id', sa.Integer), sa.column('text', sa.Text),
                    sa.column('search_doc', sa.Text))
    last = 0
    while True:   # in pages: an office's store may hold hundreds of thousands of messages
        page = bind.execute(sa.select(rows.c.id, rows.c.text).where(rows.c.id > last)
                            .order_by(rows.c.id).limit(2000)).all()
        if not page:
            break
        bind.execute(rows.update().where(rows.c.id == sa.bindparam('b_id')).values(search_doc=sa.bindparam('doc')),
                     [{'b_id': r.id, 'doc': document(r.text)} for r in page])
        last = page[-1].id
    has_fts5 = bind.dialect.name == 'sqlite' and any(
        'FTS5' in str(o) for (o,) in bind.execute(sa.text("PRAGMA compile_options")))
    if bind.dialect.name == 'sqlite' and not has_fts5:
        # an SQLite built without FTS5: searches scan for substrings instead (slower, same answers)
        logging.getLogger(__name__).warning("SQLite 未编译 FTS5：全文检索改为逐条匹配 / no FTS5, search scans")
    elif bind.dialect.name == 'sqlite':
        op.execute("CREATE VIRTUAL TABLE suggestion_fts USING fts5(search_doc, content='suggestions', "
                   "content_rowid='id')")
        for trigger in FTS_TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO suggestion_fts(suggestion_fts) VALUES ('rebuild')")
    elif bind.dialect.name == 'postgresql':
        op.execute("CREATE INDEX ix_suggestions_search ON suggestions USING gin (to_tsvector('simple', search_doc))")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        for name in ('suggestion_fts_ai', 'suggestion_fts_ad', 'suggestion_fts_au'):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS suggestion_fts")
    elif bind.dialect.name == 'postgresql':
        op.execute("DROP INDEX IF EXISTS ix_suggestions_search")
    with op.batch_alter_table('suggestions') as batch:
        batch.drop_column('search_doc')
