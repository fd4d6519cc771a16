"""Departments and (for standalone use) demo users, read from a TOML file."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .auth import DEPARTMENTAL, MAX_NAME, Level, Role
from .config import ConfigError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"


class Department(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=ID_PATTERN)
    level: Level
    name: str = Field(min_length=1, max_length=MAX_NAME)
    name_en: str = Field("", max_length=MAX_NAME)


class DirectoryUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sub: str = Field(pattern=ID_PATTERN)
    # Within what a token may carry (auth.MAX_NAME): a sign-in must not mint a token
    # that verification then refuses.
    name: str = Field(min_length=1, max_length=MAX_NAME)
    role: Role
    dept: str | None = None
    window: str | None = Field(None, max_length=MAX_NAME)


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    departments: list[Department] = Field(default_factory=list)
    users: list[DirectoryUser] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Directory:
        ids = {d.id for d in self.departments}
        for user in self.users:
            if user.role in DEPARTMENTAL and user.dept not in ids:
                raise ValueError(f"user {user.sub}: reviewer needs a dept from departments")
        return self

    def department(self, dept_id: str) -> Department | None:
        return next((d for d in self.departments if d.id == dept_id), None)

    def user(self, sub: str) -> DirectoryUser | None:
        return next((u for u in self.users if u.sub == sub), None)

    def level_of(self, dept_id: str | None) -> str | None:
        dept = self.department(dept_id) if dept_id else None
        return dept.level if dept else None

    def replace_with(self, other: Directory) -> None:
        """Take ``other``'s content in place (a reload): everything that holds this
        object (the service, supervision, the live overview, the routes) sees it."""
        # Both lists at once, between two awaits: no reader sees half of a reload.
        self.departments, self.users = list(other.departments), list(other.users)


def load_directory(path: Path | None) -> Directory:
    """The configured directory, or the packaged demo directory."""
    try:
        if path is None:
            text = resources.files("signaling").joinpath("directory.toml").read_text("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        return Directory.model_validate(tomllib.loads(text))
    except OSError as exc:
        raise ConfigError(f"directory_file: cannot read {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"directory_file: {path or 'packaged directory'}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(
            f"directory_file: {path or 'packaged directory'}: {_problems(exc)}"
        ) from exc


def _problems(exc: ValidationError) -> str:
    """Each problem with where it is (``users[3].dept``), without pydantic's links."""
    out = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        where = parts[0] if parts else "file"
        for p in parts[1:]:
            where += f"[{p}]" if p.isdigit() else f".{p}"
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return "; ".join(out)
