"""bench/profile_rpcs.py's py-spy command: a `--native` profile is one py-spy agrees to record."""

from __future__ import annotations

from bench import profile_rpcs


def test_a_native_profile_is_recorded_pausing_the_process() -> None:
    # py-spy refuses --native with --nonblocking ("Can't get native stack traces with the
    # --nonblocking option"): the old command passed both and no profile was written.
    command = profile_rpcs.py_spy_command(1234, "/tmp/out.txt", 8.0, native=True)
    assert "--native" in command and "--nonblocking" not in command
    assert command[command.index("-p") + 1] == "1234" and command[command.index("-o") + 1] == "/tmp/out.txt"


def test_a_python_profile_samples_without_pausing_the_process() -> None:
    command = profile_rpcs.py_spy_command(1234, "/tmp/out.txt", 8.0, native=False)
    assert "--nonblocking" in command and "--native" not in command
    assert command[command.index("-d") + 1] == "8"


def test_ghz_saturates_unless_given_a_rate_and_then_sends_it_over_all_its_workers() -> None:
    from bench.common import ghz_command

    call, data = "paylink.v1.AccountService.GetAccount", {"account_id": "a"}
    closed = ghz_command("ghz", 24151, call, data, {}, 16, 4.0)
    assert "--rps" not in closed  # the suite's measurements: as fast as the server answers
    paced = ghz_command("ghz", 24151, call, data, {}, 16, 4.0, 600)
    assert paced[paced.index("--rps") + 1] == "600"
    assert paced[paced.index("-c") + 1] == "16" and paced[paced.index("--connections") + 1] == "4"
    assert [a for a in paced if a not in ("--rps", "600")] == closed
