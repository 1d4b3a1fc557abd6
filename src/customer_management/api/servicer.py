"""CustomerManagementService: adapts requests to the domain and results to responses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from customer_management.api.handlers import Context
from customer_management.changes.watching import Watching
from customer_management.domain.history import History
from customer_management.domain.kinds import M
from customer_management.domain.pin_checks import PinChecks
from customer_management.domain.service import ResourceService
from customer_management.domain.wire import Encoded
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest, WatchEventsResponse
from tmf629.v1.history_pb2 import ListChangesRequest, ListChangesResponse
from tmf629.v1.payment_mean_pb2 import PaymentMean

R = TypeVar("R", bound=Message)


class CustomerManagementServicer:
    """One method per RPC of the service's descriptor (api/handlers.py registers them)."""

    def __init__(
        self,
        customers: ResourceService[Customer],
        customer_accounts: ResourceService[CustomerAccount],
        payment_means: ResourceService[PaymentMean],
        credit_categories: ResourceService[CreditCategory],
        watching: Watching,
        pin_checks: PinChecks,
        history: History,
    ) -> None:
        self._customers = customers
        self._pin_checks = pin_checks
        self._accounts = customer_accounts
        self._payment_means = payment_means
        self._credit_categories = credit_categories
        self._watching = watching
        self._history = history

    # Customer

    async def CreateCustomer(self, request: pb.CreateCustomerRequest, context: Context) -> Encoded:
        return await self._customers.create(request.customer, request.request_id)

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Context
    ) -> Customer | Encoded:
        return await _get(self._customers, request.id, request, context)

    async def ListCustomers(
        self, request: pb.ListCustomersRequest, context: Context
    ) -> pb.ListCustomersResponse:
        return await _list(self._customers, request, pb.ListCustomersResponse, "customers")

    async def UpdateCustomer(self, request: pb.UpdateCustomerRequest, context: Context) -> Encoded:
        return await self._customers.update(request.customer, request.update_mask)

    async def DeleteCustomer(self, request: pb.DeleteCustomerRequest, context: Context) -> Empty:
        await self._customers.delete(request.id, request.etag)
        return Empty()

    # CustomerAccount

    async def CreateCustomerAccount(
        self, request: pb.CreateCustomerAccountRequest, context: Context
    ) -> Encoded:
        return await self._accounts.create(request.customer_account, request.request_id)

    async def GetCustomerAccount(
        self, request: pb.GetCustomerAccountRequest, context: Context
    ) -> CustomerAccount | Encoded:
        if not request.external_reference:
            return await _get(self._accounts, request.id, request, context)
        return await self._accounts.lookup(
            request.id, {"external_reference": request.external_reference}, request.read_mask
        )

    async def VerifyCustomerAccountPin(
        self, request: pb.VerifyCustomerAccountPinRequest, context: Context
    ) -> pb.VerifyCustomerAccountPinResponse:
        verdict = await self._pin_checks.verify(request.id, request.pin)
        response = pb.VerifyCustomerAccountPinResponse(
            match=verdict.match, attempts_left=verdict.attempts_left
        )
        if verdict.locked_until is not None:
            response.locked_until.FromDatetime(verdict.locked_until)
        return response

    async def ListCustomerAccounts(
        self, request: pb.ListCustomerAccountsRequest, context: Context
    ) -> pb.ListCustomerAccountsResponse:
        return await _list(
            self._accounts, request, pb.ListCustomerAccountsResponse, "customer_accounts"
        )

    async def UpdateCustomerAccount(
        self, request: pb.UpdateCustomerAccountRequest, context: Context
    ) -> Encoded:
        return await self._accounts.update(request.customer_account, request.update_mask)

    async def DeleteCustomerAccount(
        self, request: pb.DeleteCustomerAccountRequest, context: Context
    ) -> Empty:
        await self._accounts.delete(request.id, request.etag)
        return Empty()

    # PaymentMean

    async def CreatePaymentMean(
        self, request: pb.CreatePaymentMeanRequest, context: Context
    ) -> Encoded:
        return await self._payment_means.create(request.payment_mean, request.request_id)

    async def GetPaymentMean(
        self, request: pb.GetPaymentMeanRequest, context: Context
    ) -> PaymentMean | Encoded:
        return await _get(self._payment_means, request.id, request, context)

    async def ListPaymentMeans(
        self, request: pb.ListPaymentMeansRequest, context: Context
    ) -> pb.ListPaymentMeansResponse:
        return await _list(
            self._payment_means, request, pb.ListPaymentMeansResponse, "payment_means"
        )

    async def UpdatePaymentMean(
        self, request: pb.UpdatePaymentMeanRequest, context: Context
    ) -> Encoded:
        return await self._payment_means.update(request.payment_mean, request.update_mask)

    async def DeletePaymentMean(
        self, request: pb.DeletePaymentMeanRequest, context: Context
    ) -> Empty:
        await self._payment_means.delete(request.id, request.etag)
        return Empty()

    # CreditCategory

    async def CreateCreditCategory(
        self, request: pb.CreateCreditCategoryRequest, context: Context
    ) -> Encoded:
        return await self._credit_categories.create(request.credit_category, request.request_id)

    async def GetCreditCategory(
        self, request: pb.GetCreditCategoryRequest, context: Context
    ) -> CreditCategory | Encoded:
        if not request.code:
            return await _get(self._credit_categories, request.id, request, context)
        return await self._credit_categories.lookup(
            request.id, {"code": request.code}, request.read_mask
        )

    async def ListCreditCategories(
        self, request: pb.ListCreditCategoriesRequest, context: Context
    ) -> pb.ListCreditCategoriesResponse:
        return await _list(
            self._credit_categories, request, pb.ListCreditCategoriesResponse, "credit_categories"
        )

    async def UpdateCreditCategory(
        self, request: pb.UpdateCreditCategoryRequest, context: Context
    ) -> Encoded:
        return await self._credit_categories.update(request.credit_category, request.update_mask)

    async def DeleteCreditCategory(
        self, request: pb.DeleteCreditCategoryRequest, context: Context
    ) -> Empty:
        await self._credit_categories.delete(request.id, request.etag)
        return Empty()

    # History

    async def ListChanges(
        self, request: ListChangesRequest, context: Context
    ) -> ListChangesResponse:
        return await self._history.list(request)

    # Events

    async def WatchEvents(
        self, request: WatchEventsRequest, context: Context
    ) -> AsyncIterator[WatchEventsResponse]:
        async with contextlib.aclosing(self._watching.watch(request)) as responses:
            async for response in responses:
                yield response


async def _list(service: ResourceService[M], request: Any, response: type[R], field: str) -> R:
    """A List: the page in the response's repeated `field`, its token and total."""
    page = await service.list(
        request.page_size,
        request.page_token,
        request.filter,
        request.order_by,
        request.read_mask,
        request.include_total_size,
    )
    built: Any = response(**{field: page.items})
    built.next_page_token, built.total_size = page.next_page_token, page.total_size
    return built  # type: ignore[no-any-return]


async def _get(service: ResourceService[M], id: str, request: Any, context: Context) -> M | Encoded:
    """A Get by id: the stored wire form as it is, unless a read mask selects fields.
    Metadata `cache-control: no-cache` asks for a read from the database itself."""
    fresh = any(
        key == "cache-control" and "no-cache" in value
        for key, value in context.invocation_metadata() or ()
    )
    if request.HasField("read_mask") and request.read_mask.paths:
        return await service.get(id, request.read_mask, fresh=fresh)
    return await service.get_wire(id, fresh=fresh)
