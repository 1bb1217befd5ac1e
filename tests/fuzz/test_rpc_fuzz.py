"""Bad input: every RPC of every paylink.v1 service gets random and boundary requests (hypothesis
strategies built from the request descriptors), and raw bytes that are no message at all (invalid
UTF-8 in string fields, truncated messages, random bytes). The answer is always a defined status,
never INTERNAL or UNKNOWN, nothing is logged at ERROR, and the server stays healthy. Oversized
messages and huge page sizes are refused cleanly."""

from __future__ import annotations

import collections
import logging
import os
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paylink.v1 import (
    account_pb2,
    catalog_pb2,
    common_pb2,
    document_pb2,
    job_pb2,
    link_pb2,
    link_token_pb2,
    monitoring_pb2,
    sandbox_pb2,
)

from service import auth, runtime
from tests.e2e.test_zz_secrets_scan import looks_secret
from tests.harness import DATA_JOBS, TEST_ALLOCATION, Client, link_account, rpc_error, violation_fields

pytestmark = pytest.mark.timeout(300)
RECORD_JOBS = [common_pb2.JOB_NAME_SHIFTS, common_pb2.JOB_NAME_TAX_FORMS, common_pb2.JOB_NAME_DOCUMENTS]

# With a valid secret of a sandbox workspace: never UNAUTHENTICATED or PERMISSION_DENIED (that would
# be a broken authentication), never INTERNAL or UNKNOWN.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # rate limits answer with RetryInfo
}
FILES = (link_token_pb2, link_pb2, account_pb2, job_pb2, sandbox_pb2, monitoring_pb2, catalog_pb2)
METHODS: list[MethodDescriptor] = [
    method for f in FILES for service in f.DESCRIPTOR.services_by_name.values() for method in service.methods
]
# RPCs whose base request cannot succeed again: StartSession's token is already used by the world's
# waiting session (a token starts one session), and ExpireCredentials targets the spare account that
# DisconnectAccount's fuzzing disconnects.
MAY_NEVER_ANSWER_OK = {"StartSession", "ExpireCredentials"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))  # per RPC; raise it for a deeper run
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
BOUNDARY_STRINGS = [
    "",
    " ",
    "  padded  ",
    "a" * 2,
    "a" * 3,
    "a" * 30,
    "a" * 31,
    "a" * 255,
    "a" * 256,
    "x" * 20_000,
    "\x00",
    "nul\x00inside",
    "\t\n\r",
    "名前の例",
    "🙂" * 40,
    "' OR 1=1 --",
    "%s%n{0}",
    "2021-07-28",
    "2021-02-30",
    "9999-12-31",
    "0000-00-00",
    "-1",
    "00000000-0000-0000-0000-000000000000",
    "\uff21\uff22\uff23\uff11\uff12\uff13",  # full-width letters and digits
    "user_good",
    "pass_good",
    "mfa_code",
    "sandbox_adp",
    "sandbox_slow",
    "lt_" + "A" * 43,
]
_UNSET = object()


def _uuidish() -> st.SearchStrategy[str]:
    return st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.text(alphabet="0123456789abcdef-", min_size=36, max_size=36),
    )


def _strings(known: list[str]) -> st.SearchStrategy[str]:
    options: list[st.SearchStrategy[str]] = [
        st.text(max_size=40),
        st.text(alphabet=string.printable, max_size=300),
        st.sampled_from(BOUNDARY_STRINGS),
        _uuidish(),
    ]
    if known:
        options.append(st.sampled_from(known))
    # Hypothesis also draws literals from the code (the sandbox's password, MFA code, a test's sample
    # API secret...): keep whatever tests/e2e/test_zz_secrets_scan.py flags out of requests (the
    # scan's own rule, encoded forms included), or a fuzzed request_id stored in idempotency_keys
    # reads as a leaked secret.
    return st.one_of(options).filter(lambda value: not looks_secret(value))


def _scalar(field: FieldDescriptor, known: list[str], depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None  # an enum field has its enum's descriptor
        values = [v.number for v in field.enum_type.values]
        return st.one_of(
            st.sampled_from(values),
            st.integers(min(values) - 3, max(values) + 3),  # unknown values just outside the range
            st.integers(-(2**31), 2**31 - 1),
        )
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None  # a message field has its message's descriptor
        return _message(field.message_type, known, depth + 1)
    low, high = INT_RANGES[kind]
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([0, 1, -1, low, high, 100, 101, 10**9]).filter(lambda v: low <= v <= high),
    )


def _message(descriptor: Descriptor, known: list[str], depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            value: st.SearchStrategy[Any] = st.dictionaries(
                _scalar(key_field, known, depth), _scalar(value_field, known, depth), max_size=25
            )
        elif field.is_repeated:
            value = st.lists(_scalar(field, known, depth), max_size=4 if depth else 6)
        else:
            value = _scalar(field, known, depth)
        fields[field.name] = st.one_of(st.just(_UNSET), value)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, item in values.items():
            if item is _UNSET:
                continue
            field = descriptor.fields_by_name[name]
            target: Any = (
                getattr(message, name) if field.message_type is not None or field.is_repeated else None
            )
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, val in item.items():
                    if isinstance(val, Message):
                        target[key].CopyFrom(val)
                    else:
                        target[key] = val
            elif field.is_repeated:
                if field.message_type is not None:
                    for element in item:
                        target.add().CopyFrom(element)
                else:
                    target.extend(item)
            elif field.message_type is not None:
                target.CopyFrom(item)
            else:
                setattr(message, name, item)
        return message

    return st.fixed_dictionaries(fields).map(build)


def _mutated(base: Message, known: list[str]) -> st.SearchStrategy[Message]:
    """A valid request with one or two fields replaced by random values: reaches past validation."""
    descriptor = base.DESCRIPTOR
    assert isinstance(descriptor, Descriptor)  # upb's descriptor is one (the stubs type it apart)
    names = [f.name for f in descriptor.fields]

    def merge(args: tuple[set[str], Message]) -> Message:
        chosen, noise = args
        out = type(base)()
        out.CopyFrom(base)
        for name in chosen:
            field = descriptor.fields_by_name[name]
            out.ClearField(name)
            if field.is_repeated:
                getattr(out, name).MergeFrom(getattr(noise, name))
            elif field.message_type is not None:
                if noise.HasField(name):
                    getattr(out, name).CopyFrom(getattr(noise, name))
            else:
                setattr(out, name, getattr(noise, name))
        return out

    chosen = (
        st.sets(st.sampled_from(names), max_size=2) if names else st.just(set[str]())
    )  # a request may have no fields
    return st.tuples(chosen, _message(descriptor, known)).map(merge)


def _call(channel: grpc.aio.Channel, method: MethodDescriptor) -> Any:
    """A callable that sends one request and waits for the whole answer (every message of a
    server stream)."""
    response = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    if not method.server_streaming:
        return channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
    stream: grpc.aio.UnaryStreamMultiCallable[Message, Message] = channel.unary_stream(
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response.FromString
    )

    async def drain(request: Message, **kwargs: Any) -> list[Message]:
        return [message async for message in stream(request, **kwargs)]

    async def first(request: Message, **kwargs: Any) -> Any:
        """WatchSession (it streams until the session ends): its first message (or its error), then
        hang up."""
        call = stream(request, **kwargs)
        try:
            async for message in call:
                return message
            return None
        finally:
            call.cancel()

    return first if method.name == "WatchSession" else drain


def _raw_call(channel: grpc.aio.Channel, method: MethodDescriptor) -> Any:
    """The RPC with identity serializers: bytes in, bytes out. A server stream answers with its first
    message (or its error), then the call hangs up: a unary call on it waited for the deadline when
    the stream had more than one message (a DownloadDocument of several chunks, a WatchSession)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if not method.server_streaming:
        return channel.unary_unary(path)
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)

    async def first(body: bytes, **kwargs: Any) -> bytes | None:
        call = stream(body, **kwargs)
        try:
            async for message in call:
                return bytes(message)
            return None
        finally:
            call.cancel()

    return first


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unreadable(method: MethodDescriptor, base: Message) -> list[tuple[str, bytes]]:
    """Bodies that no parser may accept: each string field holding bytes that are not UTF-8, and
    the valid request cut short."""
    bodies: list[tuple[str, bytes]] = []
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            value = b"ok\xc3" if field.number % 2 else b"\xff\xfe\xfd"
            bodies.append(
                (f"{field.name} not UTF-8", _varint(field.number << 3 | 2) + _varint(len(value)) + value)
            )
    whole = base.SerializeToString()
    if whole:  # an empty request (no fields) cannot be cut short: b"" is that message
        bodies.append(("truncated request", whole[:-1]))
    bodies.append(("truncated field", b"\x0a\x05ab"))
    return bodies


class ErrorLog(logging.Handler):
    """Every record at ERROR or above while the module runs, but aiokafka's: the relay's producer
    logs "Topic … not found in cluster metadata" at ERROR while Kafka auto-creates a topic of this
    run's fresh prefix, whatever the requests were."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("aiokafka"):
            self.records.append(record)


class World:
    """A sandbox workspace with real resources, so some fuzzed ids hit existing rows, and one valid
    request per RPC for the mutation strategy."""

    def __init__(
        self, app: runtime.Running, client: Client, known: list[str], bases: dict[str, Message]
    ) -> None:
        self.app = app
        self.client = client
        self.known = known
        self.bases = bases
        self.codes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.errors = ErrorLog()
        self._logins: dict[str, tuple[Client, list[str], Message]] = {}

    async def target(self, method: MethodDescriptor) -> tuple[Client, list[str], Message]:
        """The client, known ids and valid request for an RPC. Logins are rate limited per workspace
        (a burst of 20), so each login RPC gets a workspace and sessions of its own."""
        base = self.bases[method.input_type.full_name]
        if method.name == "DisconnectAccount":  # only the spare account: the others stay connected
            return self.client, [base.account_id, *self.known[1:]], base  # type: ignore[attr-defined]
        if method.name not in ("SubmitCredentials", "SubmitMfa"):
            return self.client, self.known, base
        if method.name not in self._logins:
            _, secret = await auth.create_workspace(self.app.deps.pool, f"fuzz-{uuid.uuid4().hex[:6]}")
            client = Client(self.client.channel, secret)
            known: list[str] = []
            if method.name == "SubmitCredentials":
                for _ in range(8):
                    token = await client.token([common_pb2.JOB_NAME_IDENTITY])
                    session = await client.link.StartSession(
                        link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
                    )
                    known.append(session.id)
                base = link_pb2.SubmitCredentialsRequest(
                    session_id=known[0], platform_id="sandbox_adp", username="user_good", password="wrong"
                )
            else:
                for _ in range(4):
                    _, session = await client.connect("user_mfa", [common_pb2.JOB_NAME_IDENTITY])
                    assert session.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED
                    known.append(session.id)
                base = link_pb2.SubmitMfaRequest(session_id=known[0], answer="not the code")
            self._logins[method.name] = (client, known, base)
        return self._logins[method.name]


@pytest.fixture(scope="module")
async def world(app: runtime.Running, channel: grpc.aio.Channel) -> AsyncIterator[World]:
    _, secret = await auth.create_workspace(app.deps.pool, f"fuzz-{uuid.uuid4().hex[:6]}")
    client = Client(channel, secret)
    token, session = await link_account(client, "user_good", [*DATA_JOBS, *RECORD_JOBS])
    docs = await client.accounts.ListDocuments(
        account_pb2.ListDocumentsRequest(account_id=session.account_id), metadata=client.md()
    )
    stubs = await client.accounts.ListPaystubs(
        account_pb2.ListPaystubsRequest(account_id=session.account_id), metadata=client.md()
    )
    mfa_token = await client.token(
        [common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
        allocation=common_pb2.Allocation(
            type=TEST_ALLOCATION.type, value=TEST_ALLOCATION.value, targets=[TEST_ALLOCATION.targets[0]] * 2
        ),
    )
    waiting = await client.link.StartSession(
        link_pb2.StartSessionRequest(token=mfa_token.token), metadata=client.md()
    )
    _, spare = await link_account(client, "user_good")  # the one DisconnectAccount may disconnect
    employer = app.deps.drivers.employers()[0]
    known = [
        session.account_id,
        session.id,
        token.id,
        waiting.id,
        mfa_token.id,
        *(job.job_id for job in session.jobs),
        *(stub.id for stub in stubs.paystubs[:2]),
        employer.id,
        employer.ein,
        docs.documents[0].id,
        "sandbox_gig",
    ]
    account_id, job_id = session.account_id, session.jobs[0].job_id
    c = common_pb2
    bases: list[Message] = [
        link_token_pb2.CreateLinkTokenRequest(
            org_name="Acme Bank",
            required_jobs=[c.JOB_NAME_IDENTITY, c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
            end_user_id="fuzz-user",
            allocation=TEST_ALLOCATION,
            language=link_token_pb2.LANGUAGE_EN,
            tags={"team": "fuzz"},
        ),
        link_token_pb2.GetLinkTokenRequest(link_token_id=token.id),
        link_pb2.StartSessionRequest(token=mfa_token.token),
        link_pb2.GetSessionRequest(session_id=waiting.id),
        link_pb2.WatchSessionRequest(session_id=waiting.id),
        link_pb2.SearchPlatformsRequest(session_id=waiting.id, query="adp"),
        link_pb2.SubmitCredentialsRequest(
            session_id=waiting.id, platform_id="sandbox_adp", username="user_mfa", password="pass_good"
        ),
        link_pb2.SubmitMfaRequest(session_id=waiting.id, answer="mfa_code"),
        link_pb2.ChooseAllocationRequest(
            session_id=waiting.id, target_index=1, type=c.ALLOCATION_TYPE_AMOUNT, value=TEST_ALLOCATION.value
        ),
        account_pb2.GetAccountRequest(account_id=account_id),
        account_pb2.ListAccountsRequest(end_user_id=session.account_id, page_size=10),
        account_pb2.DisconnectAccountRequest(account_id=spare.account_id, request_id="fuzz-disconnect"),
        account_pb2.GetIdentityRequest(account_id=account_id),
        account_pb2.GetEmploymentRequest(account_id=account_id),
        account_pb2.GetIncomeRequest(account_id=account_id),
        account_pb2.ListPaystubsRequest(
            account_id=account_id, page_size=5, from_pay_date="2020-01-01", to_pay_date="2030-01-01"
        ),
        account_pb2.GetPaystubRequest(account_id=account_id, paystub_id=stubs.paystubs[0].id),
        account_pb2.GetDirectDepositAllocationsRequest(account_id=account_id),
        job_pb2.GetJobRequest(job_id=job_id),
        job_pb2.ListJobsRequest(
            account_id=account_id, names=[c.JOB_NAME_IDENTITY], outcome=c.JOB_OUTCOME_SUCCESS, page_size=10
        ),
        job_pb2.CreateJobRequest(account_id=account_id, name=c.JOB_NAME_INCOME, request_id="fuzz-refresh"),
        sandbox_pb2.SetMonitoringStatusRequest(account_id=account_id, status=c.MONITORING_STATUS_DEGRADED),
        sandbox_pb2.ExpireCredentialsRequest(account_id=spare.account_id),
        sandbox_pb2.AddPaystubRequest(account_id=account_id),
        account_pb2.ListShiftsRequest(
            account_id=account_id, page_size=5, from_date="2020-01-01", to_date="2030-01-01"
        ),
        account_pb2.ListTaxFormsRequest(account_id=account_id, year=2025, page_size=5),
        account_pb2.ListDocumentsRequest(
            account_id=account_id, type=document_pb2.DOCUMENT_TYPE_PAYSTUB, page_size=5
        ),
        account_pb2.GetDocumentRequest(account_id=account_id, document_id=docs.documents[0].id),
        account_pb2.DownloadDocumentRequest(
            account_id=account_id, document_id=docs.documents[0].id, chunk_size=512
        ),
        sandbox_pb2.AdvanceClockRequest(account_id=account_id, days=14),
        sandbox_pb2.TriggerRefreshesRequest(account_id=account_id, names=[c.JOB_NAME_PAYSTUBS]),
        sandbox_pb2.ChangeAllocationRequest(
            account_id=account_id,
            target=c.AllocationTarget(
                type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING, routing_number="011000015", account_number="5550001234"
            ),
        ),
        monitoring_pb2.EnableMonitoringRequest(account_id=account_id),
        monitoring_pb2.DisableMonitoringRequest(account_id=account_id),
        monitoring_pb2.GetMonitoringSettingsRequest(),
        monitoring_pb2.UpdateMonitoringSettingsRequest(
            enabled=True, cadences=[monitoring_pb2.RefreshCadence(name=c.JOB_NAME_INCOME)]
        ),
        catalog_pb2.ListPlatformsRequest(query="pay", supported_jobs=[c.JOB_NAME_SHIFTS], page_size=2),
        catalog_pb2.GetPlatformRequest(platform_id="sandbox_gig"),
        catalog_pb2.SearchEmployersRequest(query="logistics inc", platform_id="sandbox_adp", page_size=2),
        catalog_pb2.GetEmployerRequest(employer_id=employer.id),
        catalog_pb2.LookupEmployerRequest(ein=employer.ein),
    ]
    by_type = {type(b).DESCRIPTOR.full_name: b for b in bases}
    missing = {m.input_type.full_name for m in METHODS} - by_type.keys()
    assert not missing, f"no valid base request for {missing}"
    world = World(app, client, known, by_type)
    logging.getLogger().addHandler(world.errors)
    yield world
    logging.getLogger().removeHandler(world.errors)
    for name, counts in sorted(world.codes.items()):  # what the fuzzing produced (visible with -s)
        print(f"{name}: {dict(counts)}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@pytest.mark.parametrize("method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS])
@given(data=st.data())
async def test_every_rpc_answers_a_defined_status(
    world: World, channel: grpc.aio.Channel, method: MethodDescriptor, data: st.DataObject
) -> None:
    client, known, base = await world.target(method)
    request = data.draw(st.one_of(_message(method.input_type, known), _mutated(base, known)), label="request")
    version = data.draw(st.sampled_from(["2021-07-28", "2021-04-29", None]), label="api-version")
    call = _call(channel, method)
    try:
        await call(request, metadata=client.md(version), timeout=20)
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        assert code in ALLOWED, f"{method.full_name} answered {code.name}: {exc.details()}\n{request}"
    world.codes[method.name][code.name] += 1


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.one_of(
        st.none(),
        st.text(alphabet=string.printable.strip() + " ", max_size=80),
        st.sampled_from(["VALID", "VALID ", " VALID", "VALIDx", "VALID_", "cut"]),
    ),
    version=st.one_of(
        st.none(),
        st.text(alphabet=string.printable.strip() + " ", max_size=20),
        st.sampled_from(["2021-07-28", "1999-01-01", "2021-7-28"]),
    ),
)
async def test_random_metadata_is_refused_cleanly(
    world: World, channel: grpc.aio.Channel, secret: str | None, version: str | None
) -> None:
    """GetJob of a job that exists: only the workspace's exact secret reads it; any other secret
    is UNAUTHENTICATED (a bypass would answer OK, or NOT_FOUND for a job of another workspace)."""
    valid = world.client.secret
    if secret is not None:
        secret = secret.replace("VALID", valid).replace("cut", valid[:-1])
    metadata = [(k, v) for k, v in (("x-api-secret", secret), ("api-version", version)) if v is not None]
    job_id = world.bases[job_pb2.GetJobRequest.DESCRIPTOR.full_name].job_id  # type: ignore[attr-defined]
    try:
        job = await world.client.jobs.GetJob(
            job_pb2.GetJobRequest(job_id=job_id), metadata=metadata, timeout=20
        )
    except grpc.aio.AioRpcError as exc:
        if secret == valid:  # the right secret: only a bad api-version is refused
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
            assert violation_fields(exc) == ["api-version"]
        else:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
    else:
        assert secret == valid, f"secret {secret!r} was accepted"
        assert job.id == job_id


@pytest.mark.parametrize("method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS])
async def test_unreadable_bytes_answer_invalid_argument(
    world: World, channel: grpc.aio.Channel, method: MethodDescriptor
) -> None:
    """Invalid UTF-8 in every string field and truncated messages, with and without a secret:
    INVALID_ARGUMENT on field `request`, and no ERROR log line."""
    client, _, base = await world.target(method)
    call = _raw_call(channel, method)
    before = len(world.errors.records)
    for what, body in _unreadable(method, base):
        for metadata in (client.md(), []):
            exc = await rpc_error(call(body, metadata=metadata, timeout=20))
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, exc.code(), exc.details())
            assert violation_fields(exc) == ["request"], what
            assert method.input_type.full_name in (exc.details() or "")
    assert world.errors.records[before:] == []


@settings(
    max_examples=max(EXAMPLES // 2, 10),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.parametrize("method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS])
@given(data=st.data())
async def test_random_bytes_answer_a_defined_status(
    world: World, channel: grpc.aio.Channel, method: MethodDescriptor, data: st.DataObject
) -> None:
    client, _, base = await world.target(method)
    whole = base.SerializeToString()
    body = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.integers(0, max(len(whole) - 1, 0)).map(lambda n: whole[:n]),  # every cut of a valid request
            st.binary(min_size=1, max_size=8).map(lambda b: whole + b),  # garbage after a valid request
        ),
        label="body",
    )
    try:
        await _raw_call(channel, method)(body, metadata=client.md(), timeout=20)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in ALLOWED, (
            f"{method.full_name} answered {exc.code().name}: {exc.details()}\n{body!r}"
        )
    assert [r.getMessage() for r in world.errors.records] == []


async def test_oversized_message_is_refused_by_grpc(world: World, app: runtime.Running) -> None:
    limit = app.deps.settings.grpc_max_message_bytes
    request = link_token_pb2.CreateLinkTokenRequest(
        org_name="x" * (limit + 1), required_jobs=[common_pb2.JOB_NAME_IDENTITY], end_user_id="big"
    )
    exc = await rpc_error(
        world.client.tokens.CreateLinkToken(request, metadata=world.client.md(), timeout=20)
    )
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under the limit: read and refused by validation, not by the transport.
    request.org_name = "x" * (limit - 1024)
    exc = await rpc_error(
        world.client.tokens.CreateLinkToken(request, metadata=world.client.md(), timeout=20)
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["org_name"]


async def test_huge_page_sizes_are_invalid(world: World) -> None:
    client, account_id = world.client, world.known[0]
    calls = [
        client.accounts.ListAccounts(account_pb2.ListAccountsRequest(page_size=10**9), metadata=client.md()),
        client.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=10**9), metadata=client.md()),
        client.accounts.ListPaystubs(
            account_pb2.ListPaystubsRequest(account_id=account_id, page_size=10**9), metadata=client.md()
        ),
        client.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=-1), metadata=client.md()),
        client.catalog.ListPlatforms(catalog_pb2.ListPlatformsRequest(page_size=10**9), metadata=client.md()),
        client.accounts.ListShifts(
            account_pb2.ListShiftsRequest(account_id=account_id, page_size=10**9), metadata=client.md()
        ),
        client.accounts.ListDocuments(
            account_pb2.ListDocumentsRequest(account_id=account_id, page_size=-1), metadata=client.md()
        ),
        client.catalog.SearchEmployers(
            catalog_pb2.SearchEmployersRequest(page_size=-5), metadata=client.md()
        ),
    ]
    for call in calls:
        exc = await rpc_error(call)
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_size"]


async def test_zz_server_still_healthy(world: World, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *(s.full_name for f in FILES for s in f.DESCRIPTOR.services_by_name.values())):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    jobs = await world.client.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=world.client.md(), timeout=5)
    assert jobs.jobs  # and still answering real requests
    # The fuzzing reached past validation: every RPC fuzzed in this run (all of them, unless a -k
    # selected some) answered OK to some mutated request, except those no random request can satisfy.
    assert world.codes, "no RPC was fuzzed"
    never_ok = sorted(name for name, counts in world.codes.items() if not counts["OK"])
    assert set(never_ok) <= MAY_NEVER_ANSWER_OK, never_ok
    assert [r.getMessage() for r in world.errors.records] == []
