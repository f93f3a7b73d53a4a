"""topic list order: an index on (submitters, heat, size), the order of every list of topics

Lists of topics are ordered by distinct citizens first, then heat, then size (``RANK_ORDER`` in
``triage/judge/rank.py``). The heat index alone no longer serves that order; without this one the
default list sorts every candidate topic before its LIMIT.

Plain index (no table rebuild), so SQLite's full-text triggers of 0003 are untouched.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 11:45:00
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_topics_rank', 'topics', ['submitters', 'heat', 'size'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_topics_rank', table_name='topics')
