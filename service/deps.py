"""What request handlers, workers and the relay share in one process."""

from __future__ import annotations

import dataclasses

from service import db, outbox
from service.audit_commit import GroupCommit
from service.config import Settings
from service.documents import DocumentStore, PostgresDocumentStore
from service.drivers.registry import DriverRegistry
from service.job_intake import Intake
from service.release_guard import Guard
from service.vault import Vault


@dataclasses.dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    pool: db.Pool
    vault: Vault
    drivers: DriverRegistry
    # The reads of personal data, many to a durable commit with their audit records (service/audit_commit.py).
    audited: GroupCommit
    # Where document bytes live (docs/architecture.md: moving them to object storage).
    documents: DocumentStore = dataclasses.field(default_factory=PostgresDocumentStore)
    # CreateJob's group commit (job_intake.py).
    intake: Intake = dataclasses.field(default_factory=Intake)
    # Whether the database's release guard refuses this process's code (release_guard.py).
    release_guard: Guard = dataclasses.field(default_factory=Guard)
    # This process's relay while it leads: units of work wake it by a call, not a NOTIFY (outbox.py).
    relay_wake: outbox.RelayWake = dataclasses.field(default_factory=outbox.RelayWake)
