"""search: an index per filterable column, child rows for contact media and
characteristics, related-party columns and the account's external reference

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import re
from collections.abc import Sequence

import phonenumbers
import sqlalchemy as sa
from alembic import op

from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import PaymentMean

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_INDEXES = {
    "customer": ("name", "status"),
    "customer_account": ("name", "status", "account_type", "customer_id"),
    "payment_mean": ("name", "type"),
}
_COMMON = ("name", "create_time", "update_time")
SEARCH = {
    "customer": (
        *_COMMON,
        "status",
        "customer_rank",
        "valid_for_start",
        "valid_for_end",
        "related_party_id",
        "related_party_role",
    ),
    "customer_account": (
        *_COMMON,
        "status",
        "account_type",
        "credit_limit",
        "receivable_balance",
        "customer_id",
    ),
    "payment_mean": (
        *_COMMON,
        "type",
        "valid_for_start",
        "valid_for_end",
        "related_party_id",
        "related_party_role",
    ),
}


def upgrade() -> None:
    for table in ("customer", "payment_mean"):
        op.add_column(table, sa.Column("related_party_id", sa.String(256), nullable=True))
        op.add_column(table, sa.Column("related_party_role", sa.String(256), nullable=True))
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.add_column(sa.Column("external_reference", sa.String(128), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_customer_account_external_reference"), ["external_reference"]
        )
    for table, columns in OLD_INDEXES.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}", table_name=table)
    for table, columns in SEARCH.items():
        for column in columns:
            op.create_index(f"ix_{table}_{column}_pk", table, [column, "pk"])
    for table in ("customer", "customer_account"):
        op.create_index(f"ix_{table}_description", table, ["description"], postgresql_using="hash")
    op.create_index(
        "ix_account_relationship_link_relationship_type",
        "account_relationship_link",
        ["relationship_type"],
    )
    op.create_index("ix_payment_plan_status", "payment_plan", ["status"])
    contact = op.create_table(
        "contact_medium",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(256), nullable=False),
        sa.Column("preferred", sa.Boolean(), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_contact_medium_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", "position", name=op.f("pk_contact_medium")),
    )
    for column in ("type", "preferred", "email", "number"):
        op.create_index(f"ix_contact_medium_{column}", "contact_medium", [column])
    characteristic = op.create_table(
        "characteristic",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_characteristic_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("customer_id", "position", name=op.f("pk_characteristic")),
    )
    op.create_index("ix_characteristic_name_value", "characteristic", ["name", "value"])
    op.create_index("ix_characteristic_value", "characteristic", ["value"])
    _backfill(contact, characteristic)


def _backfill(contact: sa.Table, characteristic: sa.Table) -> None:
    """Fills the new search columns and rows from the resources already stored. Values
    from before the new length limits are cut to the columns' widths (a filter cannot
    match them exactly any more; the resources themselves are unchanged)."""
    connection = op.get_bind()
    customer = sa.table(
        "customer",
        sa.column("id"),
        sa.column("body"),
        sa.column("related_party_id"),
        sa.column("related_party_role"),
    )
    for id, body in connection.execute(sa.select(customer.c.id, customer.c.body)).all():
        resource = Customer.FromString(body)
        _related_party(connection, customer, id, resource.related_party)
        media = [
            {
                "customer_id": id,
                "position": i,
                "type": medium.type[:256],
                "preferred": medium.preferred,
                "email": (email_key(medium.medium.email_address) or "")[:320] or None,
                "number": (phone_key(medium.medium.number) or "")[:64] or None,
            }
            for i, medium in enumerate(resource.contact_medium)
        ]
        if media:
            connection.execute(contact.insert(), media)
        pairs = [
            {"customer_id": id, "position": i, "name": c.name[:256], "value": c.value[:512]}
            for i, c in enumerate(resource.characteristic)
        ]
        if pairs:
            connection.execute(characteristic.insert(), pairs)
    payment_mean = sa.table(
        "payment_mean",
        sa.column("id"),
        sa.column("body"),
        sa.column("related_party_id"),
        sa.column("related_party_role"),
    )
    for id, body in connection.execute(sa.select(payment_mean.c.id, payment_mean.c.body)).all():
        _related_party(connection, payment_mean, id, PaymentMean.FromString(body).related_party)


def _related_party(
    connection: sa.Connection, table: sa.TableClause, id: str, party: object
) -> None:
    party_id = getattr(party, "id", "")[:256] or None
    role = getattr(party, "role", "")[:256] or None
    if party_id or role:
        connection.execute(
            table.update()
            .where(table.c.id == id)
            .values(related_party_id=party_id, related_party_role=role)
        )


def downgrade() -> None:
    op.drop_table("characteristic")
    op.drop_table("contact_medium")
    op.drop_index("ix_payment_plan_status", table_name="payment_plan")
    op.drop_index(
        "ix_account_relationship_link_relationship_type", table_name="account_relationship_link"
    )
    for table in ("customer", "customer_account"):
        op.drop_index(f"ix_{table}_description", table_name=table)
    for table, columns in SEARCH.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}_pk", table_name=table)
    for table, columns in OLD_INDEXES.items():
        for column in columns:
            op.create_index(f"ix_{table}_{column}", table, [column])
    with op.batch_alter_table("customer_account") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_customer_account_external_reference"))
        batch_op.drop_column("external_reference")
    for table in ("customer", "payment_mean"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("related_party_role")
            batch_op.drop_column("related_party_id")


# The search keys as this revision computed them (store/search_keys.py then), frozen: a
# migration never imports live code, which may change after it ran.
_NOT_DIGITS = re.compile(r"\D")
_E164 = re.compile(r"\+[1-9]\d{6,14}")


def email_key(address: str) -> str | None:
    address = address.strip()
    return address.lower() if address else None


def phone_key(number: str) -> str | None:
    """E.164 when the number carries its country code, else its digits."""
    number = number.strip()
    if not number:
        return None
    if _E164.fullmatch(number):
        return number
    international = "+" + number[2:] if number.startswith("00") else number
    try:
        parsed = phonenumbers.parse(international, None)
    except phonenumbers.NumberParseException:
        return _NOT_DIGITS.sub("", number) or None
    if not phonenumbers.is_possible_number(parsed):
        return _NOT_DIGITS.sub("", number) or None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
