"""SQLAlchemy models: one table per resource plus the tables that make references real.

Each resource row keeps the searchable first-level scalars as columns and the whole
resource as its serialized protobuf (`body`), so a Get is one primary-key read. Every
reference between resources is a row with foreign keys, so the database itself refuses
a dangling one. Money is NUMERIC: the exact record used for every comparison.

Every column List can filter on has an index led by it and ending in `pk`, so an
equality filter in the default order, a range, an `order_by` and the keyset of the
next page all walk one index. Values inside repeated messages that people search by
(contact media, characteristics) live in child rows with their own indexes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MONEY_SCALE = 6


class Money(TypeDecorator[Decimal]):
    """Exact decimal amounts: NUMERIC(18, 6) on PostgreSQL; on SQLite, whose NUMERIC is
    a binary float, an integer count of millionths (exact, ordered, summable)."""

    impl = Numeric(18, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return int(Decimal(value).scaleb(MONEY_SCALE))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(value).scaleb(-MONEY_SCALE).normalize()
        return Decimal(value).normalize()


MONEY = Money()


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLAlchemy's SQLite DATETIME writes its text through a format string and a dict,
        # about 5 us a value and four values a Create; isoformat writes the same text.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            naive = value.astimezone(UTC).replace(tzinfo=None)
            return naive.isoformat(" ", timespec="microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid alias.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def search_indexes(
    table: str, columns: tuple[str, ...], text: tuple[str, ...] = ()
) -> tuple[Index, ...]:
    """A `(column, pk)` index per searchable column, and a hash index per free-text one:
    long text can outgrow a B-tree entry on PostgreSQL, and is only compared for equality."""
    return (
        *(Index(f"ix_{table}_{column}_pk", column, "pk") for column in columns),
        *(Index(f"ix_{table}_{column}", column, postgresql_using="hash") for column in text),
    )


class ResourceRow(Base):
    """Columns every resource has. `pk` orders rows by creation (newest first)."""

    __abstract__ = True
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy declares it)

    pk: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class NamedRow(ResourceRow):
    """TMF's resources: each has a display name."""

    __abstract__ = True

    name: Mapped[str] = mapped_column(String(1024))


CUSTOMER_SEARCH = (
    "name",
    "status",
    "customer_rank",
    "valid_for_start",
    "valid_for_end",
    "related_party_id",
    "related_party_role",
    "create_time",
    "update_time",
)


class CustomerRow(NamedRow):
    __tablename__ = "customer"
    __table_args__ = search_indexes("customer", CUSTOMER_SEARCH, ("description",))

    status: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(String(4096))
    customer_rank: Mapped[int | None] = mapped_column(Integer)
    valid_for_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    valid_for_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    related_party_id: Mapped[str | None] = mapped_column(String(256))
    related_party_role: Mapped[str | None] = mapped_column(String(256))


ACCOUNT_SEARCH = (
    "name",
    "status",
    "account_type",
    "credit_limit",
    "receivable_balance",
    "customer_id",
    "credit_category_code",
    "create_time",
    "update_time",
)


class CustomerAccountRow(NamedRow):
    __tablename__ = "customer_account"
    __table_args__ = search_indexes("customer_account", ACCOUNT_SEARCH, ("description",))

    status: Mapped[str] = mapped_column(String(256))
    account_type: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(String(4096))
    credit_limit: Mapped[Decimal | None] = mapped_column(MONEY)
    receivable_balance: Mapped[Decimal | None] = mapped_column(MONEY)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customer.id", ondelete="RESTRICT"))
    pin_hash: Mapped[str | None] = mapped_column(String(256))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    """Verification attempts since the last match (counted before each is checked)."""
    pin_locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    external_reference: Mapped[str | None] = mapped_column(String(128), unique=True)
    credit_category_code: Mapped[str | None] = mapped_column(
        ForeignKey("credit_category.code", ondelete="RESTRICT")
    )


PAYMENT_MEAN_SEARCH = (
    "name",
    "type",
    "valid_for_start",
    "valid_for_end",
    "related_party_id",
    "related_party_role",
    "create_time",
    "update_time",
)


class PaymentMeanRow(NamedRow):
    __tablename__ = "payment_mean"
    __table_args__ = search_indexes("payment_mean", PAYMENT_MEAN_SEARCH)

    type: Mapped[str] = mapped_column(String(256))
    valid_for_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    valid_for_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    related_party_id: Mapped[str | None] = mapped_column(String(256))
    related_party_role: Mapped[str | None] = mapped_column(String(256))


CREDIT_CATEGORY_SEARCH = ("code", "create_time", "update_time")


class CreditCategoryRow(ResourceRow):
    """Reference data accounts name by `code`, which never changes (so it is the key
    their rows hold)."""

    __tablename__ = "credit_category"
    __table_args__ = search_indexes("credit_category", CREDIT_CATEGORY_SEARCH)

    code: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(String(255))


class ContactMediumRow(Base):
    """Customer.contactMedium[]: its type and search keys (see search_keys)."""

    __tablename__ = "contact_medium"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(256), index=True)
    preferred: Mapped[bool] = mapped_column(Boolean, index=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    number: Mapped[str | None] = mapped_column(String(64), index=True)


class CharacteristicRow(Base):
    """Customer.characteristic[]: name and value pairs."""

    __tablename__ = "characteristic"
    __table_args__ = (
        Index("ix_characteristic_name_value", "name", "value"),
        Index("ix_characteristic_value", "value"),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    value: Mapped[str] = mapped_column(String(512))


class CustomerAccountLink(Base):
    """Customer.customerAccount[]: the accounts a customer lists."""

    __tablename__ = "customer_account_link"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("customer_account.id"), index=True)


class CustomerPaymentMeanLink(Base):
    """Customer.paymentMean[]: the payment means a customer lists."""

    __tablename__ = "customer_payment_mean_link"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customer.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_mean_id: Mapped[str] = mapped_column(ForeignKey("payment_mean.id"), index=True)


class AccountRelationshipLink(Base):
    """CustomerAccount.customerAccountRelationship[].customerAccount[]."""

    __tablename__ = "account_relationship_link"

    account_id: Mapped[str] = mapped_column(ForeignKey("customer_account.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    related_account_id: Mapped[str] = mapped_column(ForeignKey("customer_account.id"), index=True)
    relationship_type: Mapped[str] = mapped_column(String(256), index=True)


class PaymentPlanRow(Base):
    """CustomerAccount.paymentPlan[]: its exact amount and the payment mean it uses."""

    __tablename__ = "payment_plan"

    account_id: Mapped[str] = mapped_column(ForeignKey("customer_account.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_mean_id: Mapped[str] = mapped_column(ForeignKey("payment_mean.id"), index=True)
    status: Mapped[str] = mapped_column(String(256), index=True)
    amount: Mapped[Decimal | None] = mapped_column(MONEY)


class AccountBalanceRow(Base):
    """CustomerAccount.customerAccountBalance[]: exact amounts."""

    __tablename__ = "account_balance"

    account_id: Mapped[str] = mapped_column(ForeignKey("customer_account.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(256))
    amount: Mapped[Decimal | None] = mapped_column(MONEY)


class RequestKey(Base):
    """The first result of each request_id, so a retried Create returns it again."""

    __tablename__ = "request_key"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class EventRow(Base):
    """The transactional outbox: each change's event, written in the change's transaction.

    `seq` is the commit order and never reused (AUTOINCREMENT on SQLite, a sequence on
    PostgreSQL), so a resume token can be a position in it.
    """

    __tablename__ = "event"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy declares it)

    seq: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    event_type: Mapped[int] = mapped_column(Integer)
    resource_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    """The serialized Event, without its event_id (which is `seq`)."""


class EventHistory(Base):
    """One row about the event history: which one it is, so tokens from another
    database are refused, and how far it has been pruned, so old tokens are refused."""

    __tablename__ = "event_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    history_id: Mapped[str] = mapped_column(String(36))
    pruned_through: Mapped[int] = mapped_column(BigInteger)


class HubListener(Base):
    """A REST hub registration: where its events go, and how far delivery has got.

    `resume_token` is the WatchEvents position after the last event handled, so
    delivery resumes there after a restart. The replica holding the lease
    (`lease_owner` until `lease_until`) is the only one delivering, which keeps the
    listener's events in order when several replicas share the database.
    """

    __tablename__ = "hub_listener"

    pk: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    callback: Mapped[str] = mapped_column(String(2048))
    query: Mapped[str] = mapped_column(String(2048))
    resume_token: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(Integer)
    """Failed deliveries in a row; reset by a success."""
    last_error: Mapped[str | None] = mapped_column(String(512))
    last_delivery_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EventRelay(Base):
    """Where a relay to a broker stream stands: the last event the broker acknowledged,
    and the replica relaying now (`lease_owner` until `lease_until`), the only one that
    may publish or move the position. Event pruning keeps every event after `seq`."""

    __tablename__ = "event_relay"

    stream: Mapped[str] = mapped_column(String(255), primary_key=True)
    history_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(BigInteger)
    relayed_time: Mapped[datetime] = mapped_column(UtcDateTime)
    """When the position last moved (or the relay was first set up)."""
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ChangeRow(Base):
    """The field-level history: each change of a resource, written in the change's own
    transaction. It keeps the resource's stored form before and after, and the history
    entry's field changes are computed from them when read (nothing extra per write)."""

    __tablename__ = "resource_change"
    __table_args__ = (
        Index("ix_resource_change_resource", "resource_id", "kind", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    change_kind: Mapped[int] = mapped_column(Integer)
    change_time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    caller: Mapped[str] = mapped_column(Text)
    """The caller's identity, as long as the callers file makes it."""
    version: Mapped[int] = mapped_column(Integer)
    before: Mapped[bytes | None] = mapped_column(LargeBinary)
    after: Mapped[bytes | None] = mapped_column(LargeBinary)
    secrets: Mapped[str] = mapped_column(String(256))
    """The secret fields the change set, space-separated: shown changed, never valued."""


@dataclass(frozen=True)
class Reference:
    """Where one resource points at another: `table.column` holds the target's id.

    `owner` is the column naming the pointing resource (its id).
    """

    table: type[Base]
    owner: str
    column: str
    source_kind: str
    path: str
    key: str = "id"
    """The target's column that `column` holds: its id, or a key that never changes."""


# Who may point at each kind of resource; deleting a target they name is refused.
REFERENCES: dict[str, tuple[Reference, ...]] = {
    "customer": (
        Reference(CustomerAccountRow, "id", "customer_id", "customer_account", "customer"),
    ),
    "customer_account": (
        Reference(CustomerAccountLink, "customer_id", "account_id", "customer", "customer_account"),
        Reference(
            AccountRelationshipLink,
            "account_id",
            "related_account_id",
            "customer_account",
            "customer_account_relationship",
        ),
    ),
    "payment_mean": (
        Reference(
            CustomerPaymentMeanLink, "customer_id", "payment_mean_id", "customer", "payment_mean"
        ),
        Reference(
            PaymentPlanRow, "account_id", "payment_mean_id", "customer_account", "payment_plan"
        ),
    ),
    "credit_category": (
        Reference(
            CustomerAccountRow,
            "id",
            "credit_category_code",
            "customer_account",
            "credit_category",
            key="code",
        ),
    ),
}

# The child rows each kind owns (rewritten with it, deleted with it).
CHILDREN: dict[str, tuple[tuple[type[Base], str], ...]] = {
    "customer": (
        (CustomerAccountLink, "customer_id"),
        (CustomerPaymentMeanLink, "customer_id"),
        (ContactMediumRow, "customer_id"),
        (CharacteristicRow, "customer_id"),
    ),
    "customer_account": (
        (AccountRelationshipLink, "account_id"),
        (PaymentPlanRow, "account_id"),
        (AccountBalanceRow, "account_id"),
    ),
    "payment_mean": (),
    "credit_category": (),
}

ROWS: dict[str, type[ResourceRow]] = {
    "customer": CustomerRow,
    "customer_account": CustomerAccountRow,
    "payment_mean": PaymentMeanRow,
    "credit_category": CreditCategoryRow,
}
