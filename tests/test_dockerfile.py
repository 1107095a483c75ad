"""The Dockerfile: its instructions, and its install steps run the way a build runs them.

No Docker engine here: the build context is assembled from the Dockerfile's own COPY
lines, the wheel is built as its build stage does, and installed into a clean venv.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from harness import DaemonProcess

from sidecar.cli import build_parser
from sidecar.config import load_config

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"

Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def final(keyword: str) -> list[str]:
    return [args for k, args in stages()[-1] if k == keyword]


def test_both_stages_use_slim_python_311() -> None:
    for stage in stages():
        assert stage[0][1].split()[0] == "python:3.11-slim"


def test_runs_as_a_non_root_user() -> None:
    (user,) = final("USER")
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it"
    deployment = yaml.safe_load((REPO / "k8s" / "base" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_cmd_and_healthcheck() -> None:
    assert [json.loads(a) for a in final("ENTRYPOINT")] == [["drift-sidecar", "run"]]
    assert [json.loads(a) for a in final("CMD")] == [
        ["--config", "/etc/drift-sidecar/sidecar.yaml"]
    ]
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    # It reads the config CMD names, so it asks where the daemon really listens.
    assert command[3] == json.loads(final("CMD")[0])[1]
    assert {"EXTRAS", "TORCH_VERSION"} <= {a.split("=")[0] for a in final("ARG")}
    assert "9108" in final("EXPOSE")


def test_entrypoint_and_cmd_parse_as_the_cli_expects() -> None:
    (entrypoint,) = [json.loads(a) for a in final("ENTRYPOINT")]
    (cmd,) = [json.loads(a) for a in final("CMD")]
    assert entrypoint[0] == "drift-sidecar"
    args = build_parser().parse_args(entrypoint[1:] + cmd)
    assert args.command == "run"
    assert args.config == "/etc/drift-sidecar/sidecar.yaml"
    # The chart and the kustomize base replace CMD with the same arguments.
    assert cmd == ["--config", args.config]


def healthcheck_command() -> list[str]:
    (healthcheck,) = final("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


def run_healthcheck(config: Path) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's command, with this interpreter and `config` where the image's is."""
    _, flag, code, _ = healthcheck_command()
    return subprocess.run(
        [sys.executable, flag, code, str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_healthcheck_asks_the_daemon_of_the_mounted_config(
    daemon_factory: Callable[..., DaemonProcess], host: str
) -> None:
    # A port of its own (not 9108): the check must take it from the config.
    daemon = daemon_factory({"http": {"host": host}, "auto_register": {"enabled": True}})
    assert daemon.port != 9108
    healthy = run_healthcheck(daemon.config_path)
    assert healthy.returncode == 0, healthy.stderr
    assert daemon.stop() == 0
    down = run_healthcheck(daemon.config_path)
    assert down.returncode != 0
    assert "Connection refused" in down.stderr or "URLError" in down.stderr


def test_healthcheck_fails_on_a_config_the_daemon_would_refuse(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text("http: {port: not-a-port}\n")
    result = run_healthcheck(config)
    assert result.returncode != 0
    assert "http.port" in result.stderr


def docker_config() -> str:
    """The config docs/deploy.md gives for `docker run` (the block after its marker)."""
    text = (REPO / "docs" / "deploy.md").read_text()
    after = text.split("<!-- docker-run-config -->", 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_docker_config_is_valid_and_reachable(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(docker_config())
    config = load_config(path)
    # Reachable through `docker run -p`: on every interface, on the port EXPOSE names.
    assert config.http.host == "0.0.0.0"
    assert str(config.http.port) in final("EXPOSE")
    # Its socket and state folders are the ones the image creates for uid 10001.
    (run,) = [args for k, args in stages()[-1] if k == "RUN" and "install -d" in args]
    created = run.split("install -d", 1)[1].split()
    assert str(Path(str(config.socket_path)).parent) in created
    assert str(config.state_path) in created
    assert "-o 10001 -g 10001" in run
    docs = (REPO / "docs" / "deploy.md").read_text()
    assert "-p 9108:9108" in docs and ":/etc/drift-sidecar/sidecar.yaml" in docs


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    copied = {src for k, args in stages()[0] if k == "COPY" for src in args.split()[:-1]}
    assert copied == {"constraints.txt", "pyproject.toml", "README.md", "sidecar"}
    patterns = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == copied
    assert any(fnmatch.fnmatch("sidecar/x/__pycache__", p) for p in patterns)


def build_context(tmp_path: Path) -> Path:
    """The files the build stage COPYs, laid out as in the image's /src."""
    context = tmp_path / "src"
    context.mkdir()
    for keyword, args in stages()[0]:
        if keyword != "COPY":
            continue
        for src in args.split()[:-1]:
            source = REPO / src
            if source.is_dir():
                shutil.copytree(
                    source, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy(source, context / src)
    return context


def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    # The build stage: `pip wheel --no-deps` in the copied context (build isolation
    # on, as in the image, so pyproject's build requirements are honoured).
    context = build_context(tmp_path)
    wheels = tmp_path / "wheels"
    # PIP_CONSTRAINT as in the build stage: the isolated build's setuptools and wheel too.
    (constraint_env,) = [a for k, a in stages()[0] if k == "ENV"]
    assert "PIP_CONSTRAINT=/src/constraints.txt" in constraint_env
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", wheels, context],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_CONSTRAINT": str(context / "constraints.txt")},
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("drift_sidecar-*.whl")

    # The final stage installs the wheel into a bare interpreter. Dependencies come
    # from this environment's site-packages, added after the clean venv's own (a
    # plain path line, so its .pth files, the editable install among them, stay
    # inert); `pip check` then proves the wheel's requirements are all met.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    installed = subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", wheel],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    clean_env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    where = subprocess.run(
        [python, "-c", "import sidecar; print(sidecar.__file__)"],
        capture_output=True,
        text=True,
        env=clean_env,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"sidecar imported from {where}"
    helped = subprocess.run(
        [env_dir / "bin" / "drift-sidecar", "--help"],
        capture_output=True,
        text=True,
        env=clean_env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout

    # EXTRAS turns into a direct reference with extras; pip must accept that form.
    extras = subprocess.run(
        [
            *pip,
            "install",
            "--dry-run",
            "-q",
            "--no-deps",
            "--no-index",
            f"drift-sidecar[torch] @ {wheel.as_uri()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert extras.returncode == 0, extras.stderr


@pytest.mark.parametrize("extras", ["", "torch"])
def test_install_step_builds_the_requirement_the_extras_ask_for(
    tmp_path: Path, extras: str
) -> None:
    (run,) = [args for k, args in stages()[-1] if k == "RUN" and "pip install" in args]
    # Run the RUN line's shell up to the install, with pip replaced by an echo.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "drift_sidecar-0.1.0-py3-none-any.whl").touch()
    (wheels / "constraints.txt").write_text("numpy==2.0.0\n")
    script = run.replace("/wheels", str(wheels)).split("rm -rf")[0]
    script = script.replace("pip install", "printf '%s\\n'")
    result = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "EXTRAS": extras, "TORCH_VERSION": "2.13.0"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wheel = wheels / "drift_sidecar-0.1.0-py3-none-any.whl"
    expected = f"drift-sidecar[{extras}] @ file://{wheel}" if extras else str(wheel)
    # Through the constraints, with torch pinned to TORCH_VERSION on top of them.
    assert result.stdout.splitlines() == ["-c", str(wheels / "constraints.txt"), expected]
    assert (wheels / "constraints.txt").read_text() == "numpy==2.0.0\ntorch==2.13.0\n"
