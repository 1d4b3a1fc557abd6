"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

# Frozen here, as this revision created it: store.models.Money's storage (NUMERIC(18, 6)
# on PostgreSQL, an integer count of millionths on SQLite). A migration never imports live
# code, which may change after it ran.


def Money() -> sa.types.TypeEngine[Decimal]:
    return sa.Numeric(18, 6).with_variant(sa.BigInteger(), "sqlite")


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "customer",
        sa.Column("status", sa.String(length=256), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("customer_rank", sa.Integer(), nullable=True),
        sa.Column("valid_for_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_for_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_customer")),
        sa.UniqueConstraint("id", name=op.f("uq_customer_id")),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_status"), ["status"], unique=False)

    op.create_table(
        "payment_mean",
        sa.Column("type", sa.String(length=256), nullable=False),
        sa.Column("valid_for_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_for_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_payment_mean")),
        sa.UniqueConstraint("id", name=op.f("uq_payment_mean_id")),
    )
    with op.batch_alter_table("payment_mean", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_mean_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_payment_mean_type"), ["type"], unique=False)

    op.create_table(
        "request_key",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_key")),
    )
    with op.batch_alter_table("request_key", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_key_create_time"), ["create_time"], unique=False
        )

    op.create_table(
        "customer_account",
        sa.Column("status", sa.String(length=256), nullable=False),
        sa.Column("account_type", sa.String(length=256), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("credit_limit", Money(), nullable=True),
        sa.Column("receivable_balance", Money(), nullable=True),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("pin_hash", sa.String(length=256), nullable=True),
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_account_customer_id_customer"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_customer_account")),
        sa.UniqueConstraint("id", name=op.f("uq_customer_account_id")),
    )
    with op.batch_alter_table("customer_account", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_account_account_type"), ["account_type"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_customer_account_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_customer_account_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_account_status"), ["status"], unique=False)

    op.create_table(
        "customer_payment_mean_link",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("payment_mean_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_payment_mean_link_customer_id_customer"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_mean_id"],
            ["payment_mean.id"],
            name=op.f("fk_customer_payment_mean_link_payment_mean_id_payment_mean"),
        ),
        sa.PrimaryKeyConstraint(
            "customer_id", "position", name=op.f("pk_customer_payment_mean_link")
        ),
    )
    with op.batch_alter_table("customer_payment_mean_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_payment_mean_link_payment_mean_id"),
            ["payment_mean_id"],
            unique=False,
        )

    op.create_table(
        "account_balance",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=256), nullable=False),
        sa.Column("amount", Money(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["customer_account.id"],
            name=op.f("fk_account_balance_account_id_customer_account"),
        ),
        sa.PrimaryKeyConstraint("account_id", "position", name=op.f("pk_account_balance")),
    )
    op.create_table(
        "account_relationship_link",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("related_account_id", sa.String(length=64), nullable=False),
        sa.Column("relationship_type", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["customer_account.id"],
            name=op.f("fk_account_relationship_link_account_id_customer_account"),
        ),
        sa.ForeignKeyConstraint(
            ["related_account_id"],
            ["customer_account.id"],
            name=op.f("fk_account_relationship_link_related_account_id_customer_account"),
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "position", name=op.f("pk_account_relationship_link")
        ),
    )
    with op.batch_alter_table("account_relationship_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_relationship_link_related_account_id"),
            ["related_account_id"],
            unique=False,
        )

    op.create_table(
        "customer_account_link",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["customer_account.id"],
            name=op.f("fk_customer_account_link_account_id_customer_account"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_customer_account_link_customer_id_customer"),
        ),
        sa.PrimaryKeyConstraint("customer_id", "position", name=op.f("pk_customer_account_link")),
    )
    with op.batch_alter_table("customer_account_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_account_link_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "payment_plan",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("payment_mean_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=256), nullable=False),
        sa.Column("amount", Money(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["customer_account.id"],
            name=op.f("fk_payment_plan_account_id_customer_account"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_mean_id"],
            ["payment_mean.id"],
            name=op.f("fk_payment_plan_payment_mean_id_payment_mean"),
        ),
        sa.PrimaryKeyConstraint("account_id", "position", name=op.f("pk_payment_plan")),
    )
    with op.batch_alter_table("payment_plan", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_plan_payment_mean_id"), ["payment_mean_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("payment_plan", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_plan_payment_mean_id"))

    op.drop_table("payment_plan")
    with op.batch_alter_table("customer_account_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_account_link_account_id"))

    op.drop_table("customer_account_link")
    with op.batch_alter_table("account_relationship_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_relationship_link_related_account_id"))

    op.drop_table("account_relationship_link")
    op.drop_table("account_balance")
    with op.batch_alter_table("customer_payment_mean_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_payment_mean_link_payment_mean_id"))

    op.drop_table("customer_payment_mean_link")
    with op.batch_alter_table("customer_account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_account_status"))
        batch_op.drop_index(batch_op.f("ix_customer_account_name"))
        batch_op.drop_index(batch_op.f("ix_customer_account_customer_id"))
        batch_op.drop_index(batch_op.f("ix_customer_account_account_type"))

    op.drop_table("customer_account")
    with op.batch_alter_table("request_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_key_create_time"))

    op.drop_table("request_key")
    with op.batch_alter_table("payment_mean", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_mean_type"))
        batch_op.drop_index(batch_op.f("ix_payment_mean_name"))

    op.drop_table("payment_mean")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_status"))
        batch_op.drop_index(batch_op.f("ix_customer_name"))

    op.drop_table("customer")
