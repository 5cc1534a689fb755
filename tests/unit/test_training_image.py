"""The training image's recipe, checked without Docker: base image, user, entrypoint, copies, tags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shelfwise_local.dockerfile import Dockerfile
from shelfwise_local.runtime.template import load_template

REPO = Path(__file__).resolve().parents[2]
RECIPE = Dockerfile.read(REPO / "Dockerfile")


def test_base_image_is_python_312_pinned_by_digest() -> None:
    image = RECIPE.base_image
    assert re.fullmatch(r"python:3\.12[\w.-]*@sha256:[0-9a-f]{64}", image), image
    assert len(RECIPE.all("FROM")) == 1  # one stage: what is tested is what runs


def test_runs_as_a_non_root_user() -> None:
    user = RECIPE.user
    assert user is not None and user.split(":")[0] not in {"root", "0"}
    # the user exists before the switch
    useradd = [i for i in RECIPE.all("RUN") if "useradd" in i.args]
    assert useradd and useradd[-1].line < RECIPE.last("USER").line  # type: ignore[union-attr]
    uid = user.split(":")[0]
    assert f"--uid {uid}" in useradd[-1].args or uid in useradd[-1].args


def test_entrypoint_is_the_shelfwise_command_and_the_job_supplies_the_rest() -> None:
    assert RECIPE.entrypoint == ["shelfwise"]
    template = load_template(REPO / "template.yaml")
    container = template["Resources"]["TrainingJobDefinition"]["Properties"]["ContainerProperties"]
    command = container["Command"]
    assert command[0] == "train" and "--register" in command and "--report-progress" in command
    # pyproject declares the console script the entrypoint names
    assert 'shelfwise = "shelfwise.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_every_copied_file_exists_and_the_context_lets_it_through() -> None:
    sources = RECIPE.copy_sources()
    assert "requirements/train.txt" in sources and "shared/shelfwise" in sources
    for src in sources:
        assert (REPO / src).exists(), src
    ignore = (REPO / ".dockerignore").read_text().split()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore and set(sources) <= allowed, set(sources) - allowed


def test_requirements_installed_are_the_pinned_training_files() -> None:
    pip = [i.args for i in RECIPE.all("RUN") if "pip install" in i.args]
    assert any("-r requirements/train.txt" in a and "-c requirements/constraints.txt" in a for a in pip)
    # every file train.txt includes is copied, so the install sees the same pins as `make setup`
    copied = set(RECIPE.copy_sources())
    for line in (REPO / "requirements/train.txt").read_text().splitlines():
        if line.startswith("-r "):
            included = (REPO / "requirements" / line[3:].strip()).resolve().relative_to(REPO)
            assert str(included) in copied, included
        elif line and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement {line!r}"


def test_the_image_has_pytorch_from_its_hashed_lock_for_the_families_that_need_it() -> None:
    pip = [i.args for i in RECIPE.all("RUN") if "pip install" in i.args]
    assert any("--require-hashes -r requirements/torch-lock.txt" in a for a in pip)
    assert "requirements/torch-lock.txt" in set(RECIPE.copy_sources())


def test_training_families_reach_both_places_that_train() -> None:
    template = load_template(REPO / "template.yaml")
    param = template["Parameters"]["TrainingFamilies"]
    pattern = re.compile(param["AllowedPattern"])
    assert param["Default"] == "" and pattern.fullmatch("") and pattern.fullmatch("sequential,als")
    assert not pattern.fullmatch("sequential;rm") and not pattern.fullmatch("sequential,")
    resources = template["Resources"]
    env = resources["TrainModelFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TRAINING_FAMILIES"] == {"Ref": "TrainingFamilies"}
    command = resources["TrainingJobDefinition"]["Properties"]["ContainerProperties"]["Command"]
    assert command[command.index("--extra-families") + 1] == {"Ref": "TrainingFamilies"}


def test_the_job_definition_takes_the_image_by_digest_or_unique_tag_never_latest() -> None:
    template = load_template(REPO / "template.yaml")
    param = template["Parameters"]["TrainingImageUri"]
    pattern = re.compile(param["AllowedPattern"])
    repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shelfw-train"
    assert pattern.fullmatch(f"{repo}@sha256:{'a' * 64}")
    assert pattern.fullmatch(f"{repo}:0f3c2a1b9e7d-20261207T080000Z")
    assert pattern.fullmatch("")  # first deploy: no job definition yet
    for bad in (f"{repo}:latest", repo, f"{repo}@sha256:abc", f"{repo}:"):
        assert not pattern.fullmatch(bad), bad
    resources = template["Resources"]
    assert resources["TrainingImageRepository"]["Properties"]["ImageTagMutability"] == "IMMUTABLE"
    jobdef = resources["TrainingJobDefinition"]
    assert jobdef["Condition"] == "HasTrainingImage"
    assert jobdef["Properties"]["ContainerProperties"]["Image"] == {"Ref": "TrainingImageUri"}
    assert ":latest" not in (REPO / "template.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "entrypoint", "cmd"),
    [
        ('FROM x\nENTRYPOINT ["a", "b c"]\nCMD echo "hi there"\n', ["a", "b c"], ["echo", "hi there"]),
        ("FROM x\n# c\nENTRYPOINT a \\\n  # inner comment\n  b\n", ["a", "b"], []),
    ],
)
def test_parser_reads_exec_and_shell_forms_and_continuations(
    tmp_path: Path, text: str, entrypoint: list[str], cmd: list[str]
) -> None:
    (tmp_path / "Dockerfile").write_text(text)
    parsed = Dockerfile.read(tmp_path / "Dockerfile")
    assert parsed.entrypoint == entrypoint and parsed.cmd == cmd


def test_parser_rejects_a_dangling_continuation(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nRUN a \\\n")
    with pytest.raises(ValueError, match="continuation"):
        Dockerfile.read(tmp_path / "Dockerfile")
