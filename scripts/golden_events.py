"""Writes docs/golden-events/: a few paylink.v1.Event examples, encoded exactly as the relay puts
them on Kafka (<name>.bin: the message value) and decoded (<name>.json: the Kafka record's topic,
key and headers, the value in base64 and hex, and the Event as proto3 JSON).

Deterministic (fixed ids and times), so the files only change when the contract does:

    .venv/bin/python scripts/golden_events.py            # rewrite docs/golden-events/
    .venv/bin/python scripts/golden_events.py --check    # exit 1 if the committed files differ

Consumers test their decoders against these files; tests/unit/test_golden_events.py keeps them
decodable and in step with this script.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "generated"))

from google.protobuf import json_format  # noqa: E402
from paylink.v1 import common_pb2 as c  # noqa: E402
from paylink.v1 import event_pb2  # noqa: E402

OUT = ROOT / "docs" / "golden-events"
PREFIX = "paylink."  # the default PAYLINK_TOPIC_PREFIX
WORKSPACE = "0b7e6c52-3f1a-4c39-9d0e-6f1f2a9b7c01"
ACCOUNT = "5f3c1d2e-8a4b-4c6d-9e0f-1a2b3c4d5e6f"
END_USER = "customer-42"
FIRST_LINK = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
SESSION = "c0ffee00-1234-4abc-8def-001122334455"
SWITCH_LINK = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"
SWITCH_SESSION = "d00dfeed-5678-4bcd-9ef0-112233445566"
IDENTITY_JOB = "11111111-2222-4333-8444-555555555555"
SWITCH_JOB = "66666666-7777-4888-9999-aaaaaaaaaaaa"
INCOME_JOB = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff"
SHIFTS_JOB = "12121212-3434-4565-8787-909090909090"
TAX_FORMS_JOB = "23232323-4545-4676-8989-a0a0a0a0a0a0"
DOCUMENTS_JOB = "34343434-5656-4787-9a9a-b0b0b0b0b0b0"
VERSION = "2021-07-28"
START = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)


def _event(number: int, name: str, sequence: int, at: float, **payload: object) -> event_pb2.Event:
    event = event_pb2.Event(
        event_id=f"e0e0e0e0-0000-4000-8000-{number:012d}",
        event=name,
        workspace_id=WORKSPACE,
        account_id=ACCOUNT,
        sequence=sequence,
        api_version=VERSION,
        **payload,  # type: ignore[arg-type]
    )
    event.created_at.FromDatetime((START + dt.timedelta(seconds=at)).replace(tzinfo=None))
    return event


def _stamp(message: object, at: float) -> object:
    message.timestamp.FromDatetime((START + dt.timedelta(seconds=at)).replace(tzinfo=None))  # type: ignore[attr-defined]
    return message


def examples() -> dict[str, event_pb2.Event]:
    """The golden events of one account's story, by file name (in sequence order)."""
    masked_target = c.AllocationTarget(
        type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
        routing_number="021000021",
        account_number="",  # never in events: only the last four digits
        name="Everyday Checking",
        account_number_last_four="9012",
    )
    return {
        "01-account.added": _event(
            1,
            "account.added",
            1,
            1.0,
            account_added=_stamp(
                event_pb2.AccountAddedPayload(
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    link_token_id=FIRST_LINK,
                    platform_id="sandbox_adp",
                    platform_name="ADP (Sandbox)",
                ),
                1.0,
            ),
        ),
        "02-identity.added": _event(
            2,
            "identity.added",
            2,
            2.5,
            job=_stamp(
                event_pb2.JobEventPayload(
                    job_id=IDENTITY_JOB,
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    link_token_id=FIRST_LINK,
                    platform_id="sandbox_adp",
                    name=c.JOB_NAME_IDENTITY,
                    outcome=c.JOB_OUTCOME_SUCCESS,
                    origin=c.JOB_ORIGIN_LINK,
                    link_session_id=SESSION,
                ),
                2.5,
            ),
        ),
        "03-link_session.completed": _event(
            3,
            "link_session.completed",
            3,
            2.5,
            link_session_completed=_stamp(
                event_pb2.LinkSessionCompletedPayload(
                    link_session_id=SESSION,
                    link_token_id=FIRST_LINK,
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    origin=c.JOB_ORIGIN_LINK,
                    jobs=[
                        event_pb2.SettledJob(
                            job_id=IDENTITY_JOB, name=c.JOB_NAME_IDENTITY, outcome=c.JOB_OUTCOME_SUCCESS
                        )
                    ],
                ),
                2.5,
            ),
        ),
        "04-direct_deposit_switch.added": _event(
            4,
            "direct_deposit_switch.added",
            4,
            60.0,
            job=_stamp(
                event_pb2.JobEventPayload(
                    job_id=SWITCH_JOB,
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    link_token_id=SWITCH_LINK,
                    platform_id="sandbox_adp",
                    name=c.JOB_NAME_DIRECT_DEPOSIT_SWITCH,
                    outcome=c.JOB_OUTCOME_SUCCESS,
                    params=c.JobParams(
                        direct_deposit_switch=c.SwitchParams(
                            action=c.SWITCH_ACTION_PARTIAL,
                            allocation=c.Allocation(
                                type=c.ALLOCATION_TYPE_AMOUNT, value=25_000, targets=[masked_target]
                            ),
                        )
                    ),
                    origin=c.JOB_ORIGIN_LINK,
                    link_session_id=SWITCH_SESSION,
                ),
                60.0,
            ),
        ),
        "05-account.monitoring_status.updated": _event(
            5,
            "account.monitoring_status.updated",
            5,
            3600.0,
            monitoring_status_updated=_stamp(
                event_pb2.MonitoringStatusUpdatedPayload(
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    previous_status=c.MONITORING_STATUS_ACTIVE,
                    monitoring_status=c.MONITORING_STATUS_USER_ACTION_REQUIRED,
                    reason="mfa_required",
                ),
                3600.0,
            ),
        ),
        "06-income.added-error": _event(
            6,
            "income.added",
            6,
            3600.0,
            job=_stamp(
                event_pb2.JobEventPayload(
                    job_id=INCOME_JOB,
                    account_id=ACCOUNT,
                    end_user_id=END_USER,
                    platform_id="sandbox_adp",
                    name=c.JOB_NAME_INCOME,
                    outcome=c.JOB_OUTCOME_ERROR,
                    error_type=c.JOB_ERROR_TYPE_USER_ACTION,
                    error_code=c.JOB_ERROR_CODE_USER_ACTION_REQUIRED,
                    error_message="the platform asks for MFA: send the user through Link",
                    origin=c.JOB_ORIGIN_REFRESH,
                ),
                3600.0,
            ),
        ),
        # Issue 13: the shifts, tax forms and documents jobs, here as server-side refreshes.
        "07-shifts.added": _event(
            7,
            "shifts.added",
            7,
            7200.0,
            job=_record_job(
                SHIFTS_JOB,
                c.JOB_NAME_SHIFTS,
                7200.0,
                c.JobParams(shifts=c.ShiftsParams(from_date="2026-08-01", to_date="2026-11-13")),
            ),
        ),
        "08-tax_forms.added": _event(
            8,
            "tax_forms.added",
            8,
            7260.0,
            job=_record_job(
                TAX_FORMS_JOB,
                c.JOB_NAME_TAX_FORMS,
                7260.0,
                c.JobParams(tax_forms=c.TaxFormsParams(year=2025)),
            ),
        ),
        "09-documents.added": _event(
            9,
            "documents.added",
            9,
            7320.0,
            job=_record_job(DOCUMENTS_JOB, c.JOB_NAME_DOCUMENTS, 7320.0, c.JobParams()),
        ),
    }


def _record_job(job_id: str, name: int, at: float, params: c.JobParams) -> object:
    """A successful shifts, tax_forms or documents refresh."""
    return _stamp(
        event_pb2.JobEventPayload(
            job_id=job_id,
            account_id=ACCOUNT,
            end_user_id=END_USER,
            platform_id="sandbox_adp",
            name=name,  # type: ignore[arg-type]
            outcome=c.JOB_OUTCOME_SUCCESS,
            params=params,
            origin=c.JOB_ORIGIN_REFRESH,
        ),
        at,
    )


def record(event: event_pb2.Event) -> tuple[bytes, dict[str, object]]:
    """The Kafka value and the decoded description of one event, as the relay publishes it."""
    value = event.SerializeToString(deterministic=True)
    description = {
        "topic": PREFIX + event.event,
        "key": event.account_id,
        "headers": {
            "event-id": event.event_id,
            "event-type": event.event,
            "workspace-id": event.workspace_id,
            "content-type": "application/x-protobuf",
        },
        "value_base64": base64.b64encode(value).decode(),
        "value_hex": value.hex(),
        "event": json_format.MessageToDict(event, preserving_proto_field_name=True),
    }
    return value, description


def render() -> dict[str, bytes]:
    """File name -> content of every file in docs/golden-events/."""
    files: dict[str, bytes] = {}
    for name, event in examples().items():
        value, description = record(event)
        files[f"{name}.bin"] = value
        files[f"{name}.json"] = (json.dumps(description, indent=2) + "\n").encode()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    args = parser.parse_args()
    files = render()
    if args.check:
        stale = [n for n, data in files.items() if not (OUT / n).exists() or (OUT / n).read_bytes() != data]
        extra = sorted(
            ({p.name for p in OUT.glob("*.bin")} | {p.name for p in OUT.glob("*.json")}) - set(files)
        )
        if stale or extra:
            print(
                f"docs/golden-events is stale: {stale + extra}; run scripts/golden_events.py", file=sys.stderr
            )
            return 1
        print("docs/golden-events is current")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
