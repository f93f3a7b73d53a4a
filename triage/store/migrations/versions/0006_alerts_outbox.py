"""alerts: subscriptions, the outbox of alerts that are due, and every delivery attempt

A committee hears about a heating topic without opening the page. The decision that an alert is due
is a row in ``alerts`` whose ``dedup_key`` is unique: two workers, or one restarted, cannot decide it
twice. Delivery claims a row for a while (``claimed_by``/``claimed_until``), records each attempt in
``deliveries`` and retries with backoff until it succeeds or gives up.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 17:15:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriptions',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('owner_key_id', sa.Integer(), nullable=True),
                    sa.Column('owner', sa.String(length=120), nullable=False),
                    sa.Column('name', sa.String(length=200), nullable=False),
                    sa.Column('filters', sa.JSON(), nullable=False),
                    sa.Column('triggers', sa.JSON(), nullable=False),
                    sa.Column('channel', sa.String(length=16), nullable=False),
                    sa.Column('target', sa.String(length=500), nullable=False),
                    sa.Column('secret', sa.String(length=128), nullable=False),
                    sa.Column('feed_token', sa.String(length=64), nullable=False),
                    sa.Column('schedule', sa.String(length=16), nullable=False),
                    sa.Column('active', sa.Boolean(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('last_digest_at', sa.DateTime(), nullable=True),
                    sa.ForeignKeyConstraint(['owner_key_id'], ['api_keys.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_subscriptions_owner_key_id', 'subscriptions', ['owner_key_id'])
    op.create_index('ix_subscriptions_feed_token', 'subscriptions', ['feed_token'], unique=True)
    op.create_table('alerts',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('subscription_id', sa.Integer(), nullable=False),
                    sa.Column('dedup_key', sa.String(length=200), nullable=False),
                    sa.Column('trigger', sa.String(length=32), nullable=False),
                    sa.Column('topic_id', sa.String(length=32), nullable=True),
                    sa.Column('title', sa.Text(), nullable=False),
                    sa.Column('payload', sa.JSON(), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('status', sa.String(length=16), nullable=False),
                    sa.Column('attempts', sa.Integer(), nullable=False),
                    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
                    sa.Column('claimed_by', sa.String(length=64), nullable=True),
                    sa.Column('claimed_until', sa.DateTime(), nullable=True),
                    sa.Column('sent_at', sa.DateTime(), nullable=True),
                    sa.Column('last_error', sa.Text(), nullable=True),
                    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('dedup_key'))
    op.create_index('ix_alerts_subscription_id', 'alerts', ['subscription_id'])
    op.create_index('ix_alerts_created_at', 'alerts', ['created_at'])
    op.create_index('ix_alerts_status', 'alerts', ['status'])
    op.create_table('deliveries',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('alert_id', sa.Integer(), nullable=False),
                    sa.Column('at', sa.DateTime(), nullable=False),
                    sa.Column('attempt', sa.Integer(), nullable=False),
                    sa.Column('channel', sa.String(length=16), nullable=False),
                    sa.Column('ok', sa.Boolean(), nullable=False),
                    sa.Column('status_code', sa.Integer(), nullable=True),
                    sa.Column('error', sa.Text(), nullable=True),
                    sa.Column('worker', sa.String(length=64), nullable=False),
                    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_deliveries_alert_id', 'deliveries', ['alert_id'])


def downgrade() -> None:
    op.drop_table('deliveries')
    op.drop_table('alerts')
    op.drop_table('subscriptions')
