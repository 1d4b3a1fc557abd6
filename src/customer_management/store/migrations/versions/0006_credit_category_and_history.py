"""credit categories (and an account's by code); the field-level history of every change

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "credit_category",
        sa.Column("pk", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("code", sa.String(255), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_credit_category")),
        sa.UniqueConstraint("id", name=op.f("uq_credit_category_id")),
        sa.UniqueConstraint("code", name=op.f("uq_credit_category_code")),
    )
    for column in ("code", "create_time", "update_time"):
        op.create_index(f"ix_credit_category_{column}_pk", "credit_category", [column, "pk"])

    # An account names its category by code (which never changes).
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.add_column(sa.Column("credit_category_code", sa.String(255), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_customer_account_credit_category_code_credit_category"),
            "credit_category",
            ["credit_category_code"],
            ["code"],
            ondelete="RESTRICT",
        )
        batch_op.create_index(
            "ix_customer_account_credit_category_code_pk", ["credit_category_code", "pk"]
        )

    op.create_table(
        "resource_change",
        sa.Column("seq", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("change_kind", sa.Integer(), nullable=False),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("before", sa.LargeBinary(), nullable=True),
        sa.Column("after", sa.LargeBinary(), nullable=True),
        sa.Column("secrets", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_resource_change")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_resource_change_resource", "resource_change", ["resource_id", "kind", "seq"]
    )
    op.create_index(op.f("ix_resource_change_change_time"), "resource_change", ["change_time"])


def downgrade() -> None:
    op.drop_table("resource_change")
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.drop_index("ix_customer_account_credit_category_code_pk")
        batch_op.drop_constraint(
            op.f("fk_customer_account_credit_category_code_credit_category"), type_="foreignkey"
        )
        batch_op.drop_column("credit_category_code")
    op.drop_table("credit_category")
