"""job progress: a re-clustering or retraining job says which stage it is in

A re-clustering of 100k stored messages or a retraining takes minutes; ``GET /api/v1/jobs/{id}``
said only "running". The job now records its stage (e.g. 聚类与描述), how many of its stages are done,
how many messages it works on and the seconds so far; the heartbeat goes with each report.

Plain added column (no table rebuild), so SQLite's full-text triggers of 0003 are untouched.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('progress', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('progress')
