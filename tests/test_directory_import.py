"""The department directory from an operator's files (signaling/directory_io.py and
``jointreview directory import|export``): CSV and JSON checked whole, each problem with
its line and field; a dry run that writes nothing; the TOML file written atomically,
read back as the server reads it, the previous one kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jointreview import cli
from jointreview.version import EXIT_CONFIG, EXIT_OK
from signaling.directory import load_directory
from signaling.directory_io import DirectoryInputError, parse_csv, parse_json, to_csv

CSV = """\ufeffkind,id,name,name_en,level,role,dept,window
department,city-amr,市市场监督管理局,City AMR,city,,,
department,district-amr,海珠区市场监督管理局,,district,,,

user,rev-1,王建国,,,reviewer,city-amr,
user,clerk-01,陈晓,,,clerk,,琶洲 3 号窗口
"""


def problems(parse: object, text: str) -> list[str]:
    with pytest.raises(DirectoryInputError) as info:
        parse(text, "dir.csv")  # type: ignore[operator]
    return info.value.problems


def test_a_csv_from_a_spreadsheet() -> None:
    d = parse_csv(CSV, "dir.csv")
    assert [(x.id, x.level, x.name_en) for x in d.departments] == [
        ("city-amr", "city", "City AMR"),
        ("district-amr", "district", ""),
    ]
    assert [(u.sub, u.role, u.dept, u.window) for u in d.users] == [
        ("rev-1", "reviewer", "city-amr", None),
        ("clerk-01", "clerk", None, "琶洲 3 号窗口"),
    ]
    assert parse_csv(to_csv(d)) == d  # export, edit, import


def test_csv_problems_name_the_line_and_the_column() -> None:
    text = (
        "kind,id,name,level,role,dept\n"
        "department,city-amr,市局,city,,\n"
        "department,city-tax,税务局,cty,,\n"
        "department,city-amr,又一个,city,,\n"
        "user,rev-1,王建国,,reviewer,city-customs\n"
        "user,rev-2,李敏,,reviwer,\n"
        "person,x,某人,,,\n"
        "user,bad id,某人,city,clerk,\n"
        "user,rev-3,,,reviewer\n"
    )
    assert problems(parse_csv, text) == [
        "dir.csv:3: column 'level': Input should be 'city' or 'district' (got 'cty')",
        "dir.csv:4: department 'city-amr' again (first on line 2)",
        "dir.csv:5: column 'dept': a reviewer needs one: 'city-customs' is not a department above",
        "dir.csv:6: column 'role': Input should be 'clerk', 'reviewer', 'applicant', "
        "'supervisor' or 'admin' (got 'reviwer')",
        "dir.csv:7: column 'kind': 'person' is not department or user",
        "dir.csv:8: column 'level': not used for a user",
        "dir.csv:8: column 'id': String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$' (got 'bad id')",
        "dir.csv:9: column 'name': Field required",
    ]
    assert problems(parse_csv, "kind,id,nom\n") == [
        "dir.csv:1: unknown column 'nom' (columns: kind, id, name, name_en, level, role, "
        "dept, window)",
        "dir.csv:1: missing column 'name'",
    ]


def test_json_problems_name_the_line_and_the_field() -> None:
    doc = {
        "departments": [
            {"id": "city-amr", "level": "city", "name": "市局"},
            {"id": "city-tax", "level": "province", "name": "税务局"},
        ],
        "users": [
            {"sub": "rev-1", "name": "王建国", "role": "reviewer", "dept": "city-amr"},
            {"sub": "rev-2", "name": "李敏", "role": "reviewer", "dept": "nowhere", "x": 1},
        ],
    }
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    assert len(parse_json(json.dumps({"departments": doc["departments"][:1]})).departments) == 1
    assert problems(parse_json, text) == [
        "dir.csv:8: departments[1]: field 'level': Input should be 'city' or 'district' "
        "(got 'province')",
        "dir.csv:21: users[1]: field 'x': unknown field",
    ]
    assert problems(parse_json, '{"departments": [\n  {"id": "a",}\n]}') == [
        "dir.csv:2: not valid JSON: Expecting property name enclosed in double quotes"
    ]


def directory_import(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["directory", "import", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_dry_run_then_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "directory.toml"
    config = tmp_path / "jointreview.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\ndirectory_file = "{target}"\n')
    target.write_text('[[departments]]\nid = "city-amr"\nlevel = "city"\nname = "旧名"\n')
    os.chmod(target, 0o640)
    source = tmp_path / "dir.csv"
    source.write_text(CSV, encoding="utf-8")
    before = target.read_bytes()

    code, out, err = directory_import(capsys, str(source), "--dry-run", "--config", str(config))
    assert (code, err) == (EXIT_OK, "")
    assert "departments: +1 -0 ~1\n    + district-amr\n    ~ city-amr\n" in out
    assert "users: +2 -0 ~0\n" in out and out.endswith("dry run: nothing written\n")
    assert target.read_bytes() == before

    code, out, err = directory_import(capsys, str(source), "--config", str(config))
    assert (code, err) == (EXIT_OK, "")
    assert f"written to {target}\n" in out
    assert load_directory(target) == parse_csv(CSV)  # as the server reads it
    assert (tmp_path / "directory.toml.previous").read_bytes() == before
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    code, out, _ = (
        cli.main(["directory", "export", "--config", str(config)]),
        *capsys.readouterr(),
    )
    assert code == EXIT_OK and parse_csv(out) == parse_csv(CSV)


def test_import_refuses_a_bad_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "directory.toml"
    source = tmp_path / "dir.csv"
    source.write_bytes("kind,id,name,level\ndepartment,a,市局,city\n".encode("gbk"))
    flags = ["--output", str(target), "--data-dir", str(tmp_path / "data")]
    code, out, err = directory_import(capsys, str(source), *flags)
    assert code == EXIT_CONFIG and out == ""
    assert err == (
        f"error: {source}:2: not UTF-8 (save the file as UTF-8, e.g. 'CSV UTF-8')\n"
        "jointreview directory import: 1 problem(s); nothing written\n"
    )
    assert not target.exists()
