"""Which driver serves which platform. The core looks drivers up here and nowhere else, so a real
platform is added by registering its driver (`DriverRegistry.register`)."""

from __future__ import annotations

import datetime as dt

from service.drivers.base import EmployerInfo, PlatformDriver, PlatformInfo
from service.drivers.sandbox import SandboxDriver
from service.drivers.sandbox_auth import SESSION_LIFETIME
from service.drivers.traced import TracedDriver


class UnknownPlatform(LookupError):
    """No registered driver serves this platform id."""

    def __init__(self, platform_id: str) -> None:
        super().__init__(f"unknown platform {platform_id!r}")
        self.platform_id = platform_id


class DriverRegistry:
    """Maps platform ids to the driver that serves them."""

    def __init__(self) -> None:
        self._drivers: dict[str, PlatformDriver] = {}
        self._traced: dict[str, PlatformDriver] = {}
        self._platforms: dict[str, PlatformInfo] = {}
        self._employers: dict[str, EmployerInfo] = {}

    def register(self, driver: PlatformDriver) -> None:
        """Adds a driver for all its platforms; ValueError if a platform id is already taken."""
        infos = driver.platforms()
        taken = sorted({p.id for p in infos if p.id in self._platforms})
        if taken:
            raise ValueError(f"platform ids already registered: {', '.join(taken)}")
        if len({p.id for p in infos}) != len(infos):
            raise ValueError("a driver lists the same platform id twice")
        employers = driver.employers()
        if any(e.platform_id not in {p.id for p in infos} for e in employers):
            raise ValueError("a driver lists an employer on a platform it does not serve")
        taken = sorted({e.id for e in employers if e.id in self._employers})
        if taken:
            raise ValueError(f"employer ids already registered: {', '.join(taken)}")
        traced = TracedDriver(driver)
        for info in infos:
            self._platforms[info.id] = info
            self._drivers[info.id] = driver
            self._traced[info.id] = traced
        for employer in employers:
            self._employers[employer.id] = employer

    def platforms(self) -> list[PlatformInfo]:
        """Every registered platform, sorted by name (case-insensitive, then id)."""
        return sorted(self._platforms.values(), key=lambda p: (p.name.casefold(), p.id))

    def platform(self, platform_id: str) -> PlatformInfo | None:
        """The platform with this id, or None."""
        return self._platforms.get(platform_id)

    def employers(self) -> list[EmployerInfo]:
        """Every registered employer, sorted by name (case-insensitive, then id)."""
        return sorted(self._employers.values(), key=lambda e: (e.name.casefold(), e.id))

    def employer(self, employer_id: str) -> EmployerInfo | None:
        """The employer with this id, or None."""
        return self._employers.get(employer_id)

    def driver_for(self, platform_id: str) -> PlatformDriver:
        """The driver serving this platform, each call traced (a span per platform call); raises
        UnknownPlatform."""
        driver = self._traced.get(platform_id)
        if driver is None:
            raise UnknownPlatform(platform_id)
        return driver

    def implementation(self, platform_id: str) -> PlatformDriver:
        """The driver object itself (for driver-specific controls such as the sandbox's)."""
        driver = self._drivers.get(platform_id)
        if driver is None:
            raise UnknownPlatform(platform_id)
        return driver


def default_registry(
    latency: float = 0.0,
    slow_latency: float = 2.0,
    jitter: float = 0.0,
    pending_delay: dt.timedelta = dt.timedelta(seconds=60),
    session_lifetime: dt.timedelta = SESSION_LIFETIME,
) -> DriverRegistry:
    """A registry with the sandbox driver (the only driver paylink ships)."""
    registry = DriverRegistry()
    registry.register(
        SandboxDriver(
            latency=latency,
            slow_latency=slow_latency,
            pending_delay=pending_delay,
            jitter=jitter,
            session_lifetime=session_lifetime,
        )
    )
    return registry
