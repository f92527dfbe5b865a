"""`bench --remote user@host`: copy the artifacts over scp to a fresh temporary directory on
the host, send the `BenchRequest` there as JSON and run `slt-deploy bench --request` over ssh
(so engines are built on the device they run on, and every option travels: nothing is rebuilt
as an argument list), fetch the JSON results, clean up. The host needs this version of
slt-deploy.

Nothing is built as a local shell string: ssh and scp get argument lists, the one command the
remote shell sees is `shlex.join` of its arguments, remote paths are names we generate, and
host keys are checked as ssh does by default (BatchMode: an unknown host fails, never asks).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from slt_deploy.bench.artifacts import inspect
from slt_deploy.bench.run import BenchRequest
from slt_deploy.errors import SltError
from slt_deploy.export.report import report_path

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")
SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=[^\n\r]*$")
TIMEOUT = 3600


def check_host(host: str) -> None:
    """Refuse what ssh could read as an option or what cannot be a user@host at all."""
    if not host or host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
        raise SltError(f"--remote {host!r} is not a host name (user@host)")


def check_ssh_options(options: list[str]) -> None:
    for option in options:
        if not SSH_OPTION.match(option):
            raise SltError(f"--ssh-option takes KEY=VALUE as ssh's -o does, got {option!r}")


class Remote:
    def __init__(self, host: str, ssh_options: list[str], timeout: float = TIMEOUT) -> None:
        check_host(host)
        check_ssh_options(ssh_options)
        self.host = host
        self.timeout = timeout
        self.options = ["-o", "BatchMode=yes"]
        for option in ssh_options:
            self.options += ["-o", option]

    def _run(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise SltError(f"{argv[0]} is not installed (OpenSSH client)") from None
        except subprocess.TimeoutExpired:
            raise SltError(f"{what} on {self.host} timed out after {self.timeout:.0f} s") from None
        if done.returncode != 0:
            lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
            raise SltError(f"{what} on {self.host} failed: {lines[-1] if lines else 'no output'}")
        return done

    def ssh(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        """Run argv on the host: its shell sees exactly one quoted command line."""
        return self._run(["ssh", *self.options, "--", self.host, shlex.join(argv)], what)

    def upload(self, local: Path, remote_path: str) -> None:
        self._run(
            ["scp", "-q", *self.options, "--", str(local), f"{self.host}:{remote_path}"],
            f"copying {local.name}",
        )

    def download(self, remote_path: str, local: Path) -> None:
        self._run(
            ["scp", "-q", *self.options, "--", f"{self.host}:{remote_path}", str(local)],
            "fetching the results",
        )


def _files_to_copy(path: str, index: int) -> list[tuple[Path, str]]:
    """(local file, remote name) for an artifact and the export report beside it; a run
    directory travels as its ticket. Remote names are generated: no user text reaches a path."""
    artifact = inspect(path)
    local = artifact.path
    if artifact.kind == "ticket" and local.is_dir():
        from slt_deploy.search.ticket import resolve_ticket_path

        local = resolve_ticket_path(local)
    name = f"{index}-{SAFE_NAME.sub('_', local.name)}"
    files = [(local, name)]
    report = report_path(artifact.path)
    if report.is_file():
        files.append((report, name + ".json"))
    return files


def run_remote(
    host: str,
    request: BenchRequest,
    ssh_options: list[str],
    remote_command: str = "slt-deploy",
    say: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """Bench `request` on `host`: its artifacts are copied there and the request travels as
    JSON (`bench --request`), every option with it. The engine cache is the host's own."""
    remote = Remote(host, ssh_options)
    command = shlex.split(remote_command)
    if not command:
        raise SltError("--remote-command is empty")
    artifacts = list(request.artifacts)
    copies = [_files_to_copy(path, i) for i, path in enumerate(artifacts)]
    say(f"creating a temporary directory on {host}")
    directory = remote.ssh(["mktemp", "-d", "-t", "slt-bench.XXXXXXXX"], "mktemp").stdout.strip()
    if not REMOTE_DIR.match(directory):
        raise SltError(f"{host} answered mktemp with {directory!r}, not a plain path")
    try:
        for files in copies:
            for local, name in files:
                say(f"copying {local.name} to {host}")
                remote.upload(local, f"{directory}/{name}")
        remote_artifacts = [f"{directory}/{files[0][1]}" for files in copies]
        there = replace(
            request,
            artifacts=tuple(remote_artifacts),
            options=replace(request.options, engine_cache=None),
        )
        results = f"{directory}/bench.json"
        with tempfile.TemporaryDirectory() as scratch:
            sent = Path(scratch) / "request.json"
            sent.write_text(json.dumps(there.to_dict(), sort_keys=True))
            remote.upload(sent, f"{directory}/request.json")
        say(f"running the bench on {host}")
        shown = remote.ssh(
            [*command, "bench", "--request", f"{directory}/request.json", "--quiet", "--json",
             results],
            "the bench",
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as scratch:
            local_json = Path(scratch) / "bench.json"
            remote.download(results, local_json)
            try:
                records = json.loads(local_json.read_text())
            except ValueError:
                raise SltError(f"the bench on {host} wrote a damaged JSON file") from None
    finally:
        with contextlib.suppress(SltError):  # the bench's own error matters more
            remote.ssh(["rm", "-rf", "--", directory], "cleaning up")
    by_remote = dict(zip(remote_artifacts, artifacts, strict=True))
    for record in records:
        record["remote"] = {"host": host, "path": record["artifact"], "output": shown.stdout}
        record["artifact"] = by_remote.get(record["artifact"], record["artifact"])
        if "baseline" in record:
            base = record["baseline"]["artifact"]
            record["baseline"]["artifact"] = by_remote.get(base, base)
    return records
