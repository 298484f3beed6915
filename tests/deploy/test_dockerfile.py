"""The Dockerfile's invariants, read from the file itself (fast, in every run).

The image must run as a numeric non-root user, install only from the hash-checked lock,
take its base as an argument, copy no secret in, and declare its port, volume and probe.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, numbered by stage."""
    out: list[Instruction] = []
    stage = -1
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        keyword, _, args = logical.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, " ".join(args.split())))
        logical = ""
    assert not logical, "a continuation line ends the file"
    return out


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def test_the_base_image_is_an_argument_and_every_stage_uses_it() -> None:
    assert INSTRUCTIONS[0].keyword == "ARG"
    assert INSTRUCTIONS[0].args.startswith("BASE_IMAGE=")
    froms = [i.args for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) == 2  # build stage and runtime stage
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = final("USER")
    assert users, "no USER in the final stage: the gateway would run as root"
    uid, _, gid = users[-1].partition(":")
    for number in (uid, gid):
        assert number.isdigit(), users[-1]
        assert int(number) >= 1000, users[-1]
    last_user = max(n for n, i in enumerate(INSTRUCTIONS) if i.keyword == "USER")
    later = [i.keyword for i in INSTRUCTIONS[last_user + 1 :]]
    assert "RUN" not in later  # nothing runs as root after it either


def test_every_pip_install_uses_the_hash_checked_lock_or_no_dependencies() -> None:
    installs = [i.args for i in INSTRUCTIONS if i.keyword == "RUN" and "pip install" in i.args]
    assert installs
    for run in installs:
        for command in re.split(r"&&|;", run):
            if "pip install" not in command:
                continue
            words = shlex.split(command)
            locked = "--require-hashes" in words and "-r" in words
            assert locked or "--no-deps" in words, command
            assert not {"--upgrade", "-U"} & set(words), command
    locked_files = {w for run in installs for w in shlex.split(run) if w.endswith(".txt")}
    assert locked_files == {"/tmp/gateway.txt"}
    copies = [i.args for i in INSTRUCTIONS if i.keyword == "COPY"]
    assert "requirements/gateway.txt /tmp/gateway.txt" in copies


def test_nothing_is_added_from_urls_or_secrets_baked_into_layers() -> None:
    assert [i for i in INSTRUCTIONS if i.keyword == "ADD"] == []  # ADD fetches URLs, unpacks
    secretish = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)", re.IGNORECASE)
    for i in INSTRUCTIONS:
        if i.keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", i.args) or [i.args.split()[0]]
            assert not [n for n in names if secretish.search(n)], i
        if i.keyword == "COPY" and not i.args.startswith("--from="):  # another stage's output
            sources = i.args.split()[:-1]
            allowed = {"requirements/gateway.txt", "pyproject.toml", "README.md", "cigate"}
            assert {s for s in sources if not s.startswith("--")} <= allowed, i
    # The proxy CA for pip comes only as a build secret mount, never a file in a layer.
    assert all("/run/secrets/" not in i.args for i in INSTRUCTIONS if i.keyword != "RUN")


def test_the_image_declares_port_volume_home_probe_and_entrypoint() -> None:
    assert final("EXPOSE") == ["8080"]
    assert json.loads(final("VOLUME")[0]) == ["/var/lib/cigate"]
    env = " ".join(final("ENV"))
    assert "CIGATE_HOME=/var/lib/cigate" in env
    assert "CIGATE_GATEWAY_HOST=0.0.0.0" in env
    (health,) = final("HEALTHCHECK")
    assert "/healthz" in health
    assert json.loads(final("ENTRYPOINT")[0]) == ["cigate", "gateway"]
    assert json.loads(final("CMD")[0]) == ["serve"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE}\nRUN pip install -r r.txt\n", "unhashed"),
        ("ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE}\nUSER root\n", "root user"),
        ("ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE}\nENV CIGATE_GATEWAY_UPSTREAM_KEY=k\n", "secret"),
    ],
    ids=["unhashed-install", "root-user", "secret-env"],
)
def test_the_checks_catch_a_broken_dockerfile(
    monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    """Each invariant fails on a Dockerfile that breaks it (the checks can fail)."""
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "INSTRUCTIONS", parse(text))
    monkeypatch.setattr(module, "FINAL", 0)
    check = {
        "unhashed": test_every_pip_install_uses_the_hash_checked_lock_or_no_dependencies,
        "root user": test_the_final_stage_runs_as_a_numeric_non_root_user,
        "secret": test_nothing_is_added_from_urls_or_secrets_baked_into_layers,
    }[problem]
    with pytest.raises(AssertionError):
        check()
