"""What request handlers, workers and the relay share in one process."""

from __future__ import annotations

import dataclasses

from service import db
from service.config import Settings
from service.drivers.registry import DriverRegistry
from service.vault import Vault


@dataclasses.dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    pool: db.Pool
    vault: Vault
    drivers: DriverRegistry
