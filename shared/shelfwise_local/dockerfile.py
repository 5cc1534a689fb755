"""Reading the training image's Dockerfile without Docker: base image, user, entrypoint, copies.

Used by the tests that check the recipe where no Docker daemon runs (CI, these machines) and by
the local runtime, which starts a Batch job as the container would: the image's ENTRYPOINT
followed by the job definition's Command. Only what the recipe uses is understood: line
continuations, comments, parser directives, exec-form (JSON) and shell-form instructions.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, USER, ...
    args: str  # the rest of the logical line, as written
    line: int  # 1-based line where the instruction starts

    def words(self) -> list[str]:
        """Exec form (a JSON array) as given; shell form split like a POSIX shell."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                pass
            else:
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    return value
        return shlex.split(text)


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> Dockerfile:
        p = Path(path)
        out: list[Instruction] = []
        pending, start = "", 0
        for number, raw in enumerate(p.read_text().splitlines(), 1):
            stripped = raw.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue  # comments and parser directives (# syntax=...) between instructions
            if pending and stripped.startswith("#"):
                continue  # a comment inside a continued instruction is dropped, as Docker does
            if not pending:
                start = number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text = pending + stripped
            pending = ""
            keyword, _, args = text.partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
        if pending:
            raise ValueError(f"{p}: the last instruction ends with a line continuation")
        return cls(p, out)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    @property
    def base_image(self) -> str:
        """The image of the final stage's FROM (without ``AS name``)."""
        last = self.last("FROM")
        if last is None:
            raise ValueError(f"{self.path}: no FROM")
        return last.words()[0]

    @property
    def user(self) -> str | None:
        last = self.last("USER")
        return last.args.strip() if last else None

    @property
    def entrypoint(self) -> list[str]:
        last = self.last("ENTRYPOINT")
        return last.words() if last else []

    @property
    def cmd(self) -> list[str]:
        last = self.last("CMD")
        return last.words() if last else []

    def copy_sources(self) -> list[str]:
        """Every local source path of COPY/ADD (not ``--from`` stages), relative to the context."""
        out = []
        for ins in self.all("COPY") + self.all("ADD"):
            words = ins.words()
            if any(w.startswith("--from") for w in words):
                continue
            args = [w for w in words if not w.startswith("--")]
            out.extend(args[:-1])  # the last one is the destination
        return out


def environment(recipe: Dockerfile) -> dict[str, str]:
    """The ``ENV`` variables the recipe sets (``KEY=value`` form)."""
    out: dict[str, str] = {}
    for ins in recipe.all("ENV"):
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            if sep:
                out[key] = value
    return out


def build_virtualenv(recipe: Dockerfile, context: Path, target: Path, python: str) -> Path:
    """What the image's Python environment gets, without Docker: a virtual environment built by the
    recipe's own ``pip install`` steps, run on a copy of exactly the files its COPY lines take.

    WORKDIR, COPY and ENV are followed in order; of RUN lines only the ``python -m pip`` commands run
    (with the virtual environment's Python); user creation and clean-ups have no meaning here.
    Returns the environment's ``bin`` directory.
    """
    import os
    import shutil
    import subprocess

    venv, root = target / "venv", target / "image"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    env = {**os.environ, **environment(recipe)}
    # The image keeps no pip cache (its size); here the host's cache makes a rebuild cheap.
    env.pop("PIP_NO_CACHE_DIR", None)
    cwd = root
    for ins in recipe.instructions:
        if ins.keyword == "WORKDIR":
            cwd = root / ins.args.strip().lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            words = [w for w in ins.words() if not w.startswith("--")]
            *sources, dest = words
            base = root / dest.lstrip("/") if dest.startswith("/") else cwd / dest
            for src in sources:
                origin = context / src
                into = base / origin.name if dest.endswith("/") or len(sources) > 1 else base
                into.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(
                        origin, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(origin, into)
        elif ins.keyword == "RUN":
            for part in ins.args.split("&&"):
                words = shlex.split(part)
                if words[:3] == ["python", "-m", "pip"]:
                    subprocess.run([str(venv_python), *words[1:]], cwd=cwd, env=env, check=True)
    return venv / "bin"


def recipe_digest(recipe: Dockerfile, context: Path) -> str:
    """SHA-256 over the recipe and every file its COPY lines take: equal digests, equal images."""
    import hashlib

    h = hashlib.sha256(recipe.path.read_bytes())
    for src in recipe.copy_sources():
        origin = context / src
        files = sorted(p for p in origin.rglob("*") if p.is_file()) if origin.is_dir() else [origin]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(context)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
