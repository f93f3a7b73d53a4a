"""shared rate limits: requests per key per minute, counted by every worker together

Each worker kept its own token bucket: with N workers a key had N times its rate. The counts now
live in the database (``rate_windows``: key, minute, count; a sliding window over this minute and the
last), so the limit holds whatever the number of workers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 15:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_windows',
                    sa.Column('key_id', sa.Integer(), nullable=False),
                    sa.Column('minute', sa.Integer(), nullable=False),
                    sa.Column('count', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('key_id', 'minute'))


def downgrade() -> None:
    op.drop_table('rate_windows')
