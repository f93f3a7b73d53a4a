"""job heartbeats: a job whose worker died is seen as dead, not "running" forever

A retraining job runs in a thread of one API worker. If that worker is killed, the job's row stayed
``running`` and every later ``POST /retrain`` answered 409. The worker now beats ``heartbeat_at``
while the job runs (``holder`` names the process); a running job whose beat is older than the
staleness bound is marked failed with the reason, and a new one may start.

Plain added columns (no table rebuild), so SQLite's full-text triggers of 0003 are untouched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 14:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('holder', sa.String(length=64), nullable=True))
    op.add_column('jobs', sa.Column('heartbeat_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('heartbeat_at')
        batch.drop_column('holder')
