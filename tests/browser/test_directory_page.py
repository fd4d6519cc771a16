"""The admin's directory page (/admin/directory): the directory this node holds, in
Chinese first and in English, axe-clean; a reload after the file changed shows what
changed, a broken file shows its problems and changes nothing; other roles are sent on.
With hundreds of users, the page shows them a page at a time ("Load more") and finds
them by a search."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Person
from .test_supervise_tabs import axe_clean

PACKAGED = Path(__file__).resolve().parents[2] / "signaling" / "directory.toml"
NEW_DEPT = '\n[[departments]]\nid = "city-new"\nlevel = "city"\nname = "市新设局"\n'


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dir") / "directory.toml"
    shutil.copy(PACKAGED, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, directory: Path) -> Iterator[ServerProcess]:
    """This module's own node: its directory file is one the test rewrites."""
    root = tmp_path_factory.mktemp("jr")
    env = {"JR_DIRECTORY_FILE": str(directory), "JR_MEDIA_ENABLED": "false"}
    proc = ServerProcess(root / "data", env=env).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


def test_the_directory_page(
    people: Callable[..., Person], tokens: TokenService, directory: Path
) -> None:
    admin = people("admin")
    page = admin.open("/admin/directory", tokens.issue(sub="admin", role="admin", name="管理员"))
    depts, users = admin.by("dir-departments"), admin.by("dir-users")
    expect(depts.locator("tbody tr")).to_have_count(5)
    expect(users.locator("tbody tr")).to_have_count(10)
    expect(depts).to_contain_text("市市场监督管理局")
    expect(depts).to_contain_text("市级")
    expect(users).to_contain_text("审批人员")
    expect(admin.by("dir-state")).to_contain_text(str(directory))
    expect(admin.by("dir-state")).to_contain_text("节点启动时")
    axe_clean(page)

    directory.write_text(directory.read_text() + NEW_DEPT, encoding="utf-8")
    admin.by("dir-reload").click()
    expect(admin.by("dir-result")).to_contain_text("部门：新增 1，删除 0，修改 0")
    expect(depts.locator("tbody tr")).to_have_count(6)
    expect(depts).to_contain_text("市新设局")
    expect(admin.by("dir-state")).to_contain_text("管理员 admin")
    admin.shot("directory-zh")

    directory.write_text(directory.read_text().replace('level = "city"', 'level = "cty"', 1))
    admin.by("dir-reload").click()
    expect(admin.by("dir-problems")).to_contain_text(
        "departments[0].level: Input should be 'city' or 'district'"
    )
    expect(admin.by("dir-error")).to_contain_text("目录文件有误")
    expect(depts.locator("tbody tr")).to_have_count(6)  # unchanged
    refused = [e for e in admin.errors if "status of 422" in e]  # the browser's own line
    assert len(refused) == 1, admin.errors
    admin.errors.remove(refused[0])

    admin.set_lang("en")
    expect(admin.by("dir-error")).to_contain_text("has errors and was not loaded")
    expect(depts).to_contain_text("City")
    expect(page.locator("h1")).to_have_text("Directory")
    axe_clean(page)

    # Hundreds of reviewers: a page at a time, and a search.
    fixed = directory.read_text().replace('level = "cty"', 'level = "city"', 1)
    generated = "".join(
        f'\n[[users]]\nsub = "gen-{n:04d}"\nname = "审批员{n}"\nrole = "reviewer"\n'
        'dept = "city-tax"\n'
        for n in range(450)
    )
    directory.write_text(fixed + generated, encoding="utf-8")
    admin.set_lang("zh-CN")
    admin.by("dir-reload").click()
    expect(admin.by("dir-shown")).to_have_text("显示 200 / 460 条")
    rows = users.locator("tbody tr")
    expect(rows).to_have_count(200)
    admin.by("dir-more").click()
    expect(rows).to_have_count(400)
    admin.by("dir-more").click()
    expect(rows).to_have_count(460)
    expect(admin.by("dir-more")).to_be_hidden()
    expect(admin.by("dir-shown")).to_have_text("显示 460 / 460 条")
    admin.by("dir-q").fill("审批员42")
    admin.by("dir-search-go").click()
    expect(rows).to_have_count(11)
    expect(admin.by("dir-shown")).to_have_text("显示 11 / 11 条")
    expect(admin.by("dir-more")).to_be_hidden()

    clerk = people("clerk")
    clerk.open("/admin/directory", tokens.issue(sub="clerk-01", role="clerk", name="陈晓"))
    expect(clerk.by("page-error")).to_have_attribute("data-code", "wrong_screen")
