"""paylink.v1.AccountService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

from paylink.v1 import account_pb2, account_pb2_grpc, data_pb2, document_pb2

from service import accounts, audit, records, result_reads
from service.api import context
from service.deps import Deps


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def GetAccount(  # noqa: N802 - gRPC method name
        self, request: account_pb2.GetAccountRequest, ctx: context.Ctx
    ) -> Awaitable[account_pb2.Account]:
        """The read itself, for the call pipeline to await: no coroutine of its own around it."""
        deps = self.deps
        return accounts.get(deps.pool, context.current().workspace.id, request.account_id, deps.drivers)

    async def ListAccounts(  # noqa: N802
        self, request: account_pb2.ListAccountsRequest, ctx: context.Ctx
    ) -> account_pb2.ListAccountsResponse:
        return await accounts.list_page(self.deps, context.current().workspace.id, request)

    async def DisconnectAccount(  # noqa: N802
        self, request: account_pb2.DisconnectAccountRequest, ctx: context.Ctx
    ) -> account_pb2.Account:
        return await accounts.disconnect_rpc(self.deps, context.current(), request)

    async def GetIdentity(  # noqa: N802
        self, request: account_pb2.GetIdentityRequest, ctx: context.Ctx
    ) -> data_pb2.Identity:
        return await result_reads.identity(
            self.deps, audit.who(context.current(), "GetIdentity"), request.account_id
        )

    async def GetEmployment(  # noqa: N802
        self, request: account_pb2.GetEmploymentRequest, ctx: context.Ctx
    ) -> data_pb2.Employment:
        return await result_reads.employment(
            self.deps, audit.who(context.current(), "GetEmployment"), request.account_id
        )

    async def GetIncome(  # noqa: N802
        self, request: account_pb2.GetIncomeRequest, ctx: context.Ctx
    ) -> data_pb2.Income:
        return await result_reads.income(
            self.deps, audit.who(context.current(), "GetIncome"), request.account_id
        )

    async def ListPaystubs(  # noqa: N802
        self, request: account_pb2.ListPaystubsRequest, ctx: context.Ctx
    ) -> account_pb2.ListPaystubsResponse:
        return await result_reads.list_paystubs(
            self.deps, audit.who(context.current(), "ListPaystubs"), request
        )

    async def GetPaystub(  # noqa: N802
        self, request: account_pb2.GetPaystubRequest, ctx: context.Ctx
    ) -> data_pb2.Paystub:
        who = audit.who(context.current(), "GetPaystub")
        return await result_reads.get_paystub(self.deps, who, request.account_id, request.paystub_id)

    async def GetDirectDepositAllocations(  # noqa: N802
        self, request: account_pb2.GetDirectDepositAllocationsRequest, ctx: context.Ctx
    ) -> data_pb2.DirectDepositAllocations:
        return await result_reads.allocations(
            self.deps, audit.who(context.current(), "GetDirectDepositAllocations"), request.account_id
        )

    async def ListShifts(  # noqa: N802
        self, request: account_pb2.ListShiftsRequest, ctx: context.Ctx
    ) -> account_pb2.ListShiftsResponse:
        return await records.list_shifts(self.deps, audit.who(context.current(), "ListShifts"), request)

    async def ListTaxForms(  # noqa: N802
        self, request: account_pb2.ListTaxFormsRequest, ctx: context.Ctx
    ) -> account_pb2.ListTaxFormsResponse:
        return await records.list_tax_forms(self.deps, audit.who(context.current(), "ListTaxForms"), request)

    async def ListDocuments(  # noqa: N802
        self, request: account_pb2.ListDocumentsRequest, ctx: context.Ctx
    ) -> account_pb2.ListDocumentsResponse:
        return await records.list_documents(self.deps, audit.who(context.current(), "ListDocuments"), request)

    async def GetDocument(  # noqa: N802
        self, request: account_pb2.GetDocumentRequest, ctx: context.Ctx
    ) -> document_pb2.Document:
        return await records.get_document(self.deps, audit.who(context.current(), "GetDocument"), request)

    async def DownloadDocument(  # noqa: N802 - a server stream
        self, request: account_pb2.DownloadDocumentRequest, ctx: context.Ctx
    ) -> AsyncIterator[document_pb2.DocumentChunk]:
        """Validates and finds the document, then streams it (the interceptor runs everything up to
        the first chunk under the call's authentication and error mapping)."""
        chunks = await records.download_document(
            self.deps, audit.who(context.current(), "DownloadDocument"), request
        )
        async for chunk in chunks:
            yield chunk
