"""`bench --remote` against a real OpenSSH server that this test starts on 127.0.0.1 with
its own host key and client key (Debian's openssh-server); nothing is mocked."""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON, run_cli

from slt_deploy.export import ExportRequest, export
from slt_deploy.search.config import SearchConfig
from slt_deploy.search.loop import search

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
QUICK = ("--warmup-ms", "10", "--min-iterations", "5", "--min-seconds", "0.05")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)],
                       check=True)  # fmt: skip
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory sshd requires
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        server.kill()
        pytest.skip(f"sshd did not start: {server.stderr.read().decode()[-300:]}")
    options = [
        f"Port={port}",
        f"IdentityFile={root / 'client_key'}",
        f"UserKnownHostsFile={root / 'known_hosts'}",
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
    ]
    yield {"port": port, "options": options, "root": root}
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def odd_artifacts(tmp_path_factory):
    """An artifact in a folder whose name has spaces, quotes and a semicolon."""
    root = tmp_path_factory.mktemp("remote") / "we'ird dir; rm -rf x"
    run = root / "run"
    search(SearchConfig(data="digits", epochs=2, target_sparsity=0.8, seed=3), run, progress=False)
    export(ExportRequest(run, "onnx", root / 'my "model".onnx'))
    return root


def _ssh_args(sshd) -> list[str]:
    out = []
    for option in sshd["options"]:
        out += ["--ssh-option", option]
    return out


def _error_lines(stderr: str) -> int:
    """Progress lines go to stderr too; the error itself is one line."""
    return sum(line.startswith("error:") for line in stderr.splitlines())


def _remote_dirs() -> set[str]:
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("slt-bench.*")}


def test_remote_bench_round_trip(sshd, odd_artifacts, tmp_path):
    before = _remote_dirs()
    onnx = odd_artifacts / 'my "model".onnx'
    out = tmp_path / "remote.json"
    done = run_cli(
        "bench", str(odd_artifacts / "run"), str(onnx), "--remote", "root@127.0.0.1",
        *_ssh_args(sshd), "--remote-command", f"{PYTHON} -m slt_deploy", *QUICK,
        "--threads", "1", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert [r["artifact"] for r in records] == [str(odd_artifacts / "run"), str(onnx)]
    assert [r["backend"] for r in records] == ["torch", "ort"]
    for record in records:
        assert record["remote"]["host"] == "root@127.0.0.1"
        assert record["remote"]["path"].startswith("/") and "slt-bench." in record["remote"]["path"]
        assert record["latency_ms"]["p50"] > 0 and record["peak_memory_bytes"] > 0
        assert record["baseline"]["artifact"] == str(odd_artifacts / "run")
    assert "my" in done.stdout  # the table, with local names
    assert _remote_dirs() == before  # the temporary directory was removed


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1;touch {canary}",
        "root@127.0.0.1 touch {canary}",
        "$(touch {canary})@127.0.0.1",
        "-oProxyCommand=touch {canary}",
        "`touch {canary}`",
    ],
)
def test_hostile_host_names_cannot_run_commands(sshd, odd_artifacts, tmp_path, host):
    canary = tmp_path / "pwned"
    done = run_cli(
        "bench", str(odd_artifacts / "run"), "--remote", host.format(canary=canary),
        *_ssh_args(sshd), "--remote-command", f"{PYTHON} -m slt_deploy", *QUICK,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and _error_lines(done.stderr) == 1
    assert not canary.exists()


def test_hostile_remote_command_arguments_stay_arguments(sshd, odd_artifacts, tmp_path):
    """A --backend value with shell syntax reaches the remote slt-deploy as one argument."""
    canary = tmp_path / "pwned"
    done = run_cli(
        "bench", str(odd_artifacts / "run"), "--remote", "root@127.0.0.1", *_ssh_args(sshd),
        "--remote-command", f"{PYTHON} -m slt_deploy", "--backend", f"torch; touch {canary}",
        *QUICK,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown bench back-end" in done.stderr and not canary.exists()


def test_unknown_host_key_is_refused(sshd, odd_artifacts, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = [o for o in sshd["options"] if not o.startswith("UserKnownHostsFile")]
    args = []
    for option in [*options, f"UserKnownHostsFile={empty}"]:
        args += ["--ssh-option", option]
    done = run_cli("bench", str(odd_artifacts / "run"), "--remote", "root@127.0.0.1", *args, *QUICK)
    assert done.returncode == 2
    assert "Host key verification failed" in done.stderr
    assert _error_lines(done.stderr) == 1 and "Traceback" not in done.stderr


def test_bad_ssh_option_is_refused(odd_artifacts):
    done = run_cli("bench", str(odd_artifacts / "run"), "--remote", "h", "--ssh-option", "-F/x")
    assert done.returncode == 2 and "--ssh-option takes KEY=VALUE" in done.stderr
