"""stored embeddings and leases

Each suggestion keeps the sentence embeddings made at intake, so index rebuilds and re-clustering
never embed stored messages again; a lease table lets one worker re-cluster for all of them.
Existing rows get no embeddings: they are embedded once, on the next rebuild that needs them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 11:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('suggestions') as batch:
        batch.add_column(sa.Column('embedding', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('head_embedding', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('embedding_model', sa.String(length=80), nullable=True))
    op.create_table('leases',
                    sa.Column('name', sa.String(length=32), nullable=False),
                    sa.Column('holder', sa.String(length=64), nullable=False),
                    sa.Column('until', sa.DateTime(), nullable=False),
                    sa.Column('mark', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('name'))


def downgrade() -> None:
    op.drop_table('leases')
    with op.batch_alter_table('suggestions') as batch:
        batch.drop_column('embedding_model')
        batch.drop_column('head_embedding')
        batch.drop_column('embedding')
