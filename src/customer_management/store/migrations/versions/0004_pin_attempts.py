"""pin attempts: failed verifications and the lock they lead to; pin_set in the stored body

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tmf629.v1.customer_account_pb2 import CustomerAccount

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.add_column(
            sa.Column("pin_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("pin_locked_until", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.alter_column("pin_failures", server_default=None)
    # Accounts with a PIN say so in the stored resource from now on.
    account = sa.table(
        "customer_account", sa.column("id"), sa.column("body"), sa.column("pin_hash")
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(account.c.id, account.c.body).where(account.c.pin_hash.is_not(None))
    ).all()
    for id, body in rows:
        resource = CustomerAccount.FromString(body)
        resource.pin_set = True
        connection.execute(
            account.update().where(account.c.id == id).values(body=resource.SerializeToString())
        )


def downgrade() -> None:
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.drop_column("pin_locked_until")
        batch_op.drop_column("pin_failures")
