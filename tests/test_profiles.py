"""Profiles end to end: backup, forget, ls and restore read [profiles.NAME] of a TOML
file; the command line wins over the environment, which wins over the profile; bad files
and secrets are one-line usage errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path):
    """Two trees, three device directories, and a config file with a profile for each
    tree, found where XDG_CONFIG_HOME says."""
    for name in ("docs", "music"):
        src = tmp_path / name
        src.mkdir()
        (src / "keep.txt").write_bytes(name.encode() * 1000)
        (src / "junk.tmp").write_bytes(b"junk")
    for d in ("d1", "d2", "d3"):
        (tmp_path / d).mkdir()
    write_config(
        tmp_path / "xdg" / "parbackup" / "config.toml",
        f"""
[profiles.docs]
sources = ["{tmp_path}/docs"]
devices = ["{tmp_path}/d1", "{tmp_path}/d2"]
catalog = "{tmp_path}/cat.sqlite"
exclude = "*.tmp"
strategy = "threshold"

[profiles.docs.retention]
keep-last = 1

[profiles.music]
sources = ["{tmp_path}/music"]
devices = ["{tmp_path}/d1", "{tmp_path}/d2"]
catalog = "{tmp_path}/cat.sqlite"
keep_last = 2
""",
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PARBACKUP_CATALOG": ""}
    return tmp_path, env


@pytest.mark.slow
def test_backup_and_forget_take_everything_from_the_profile(home) -> None:
    root, env = home
    r = run_cli("backup", "--profile", "docs", "--json", env=env)
    assert r.code == 0, r.err
    doc = r.json
    assert doc["strategy"] == "threshold"
    assert doc["excluded"] and doc["files"] == 2  # the tree and keep.txt, not junk.tmp
    assert sorted(d["url"] for d in doc["devices"]) == [f"{root}/d1", f"{root}/d2"]
    assert (root / "cat.sqlite").exists()
    second = run_cli("backup", "--profile", "docs", "--json", env=env).json["set"]
    music = run_cli("backup", "--profile", "music", "--json", env=env).json["set"]

    r = run_cli("ls", "latest", "--profile", "docs", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json["set"] == second  # the profile's newest set, not music's (newer still)
    r = run_cli("ls", "latest~1", "--profile", "music", "--json", env=env)
    assert r.code == 1 and "holds only 1 restorable set" in r.json["error"]
    assert (
        run_cli(
            "ls", "latest", "--json", env={**env, "PARBACKUP_CATALOG": str(root / "cat.sqlite")}
        ).json["set"]
        == music
    )

    r = run_cli("forget", "--profile", "docs", "--json", env=env)
    assert r.code == 0, r.err
    (group,) = r.json["groups"]  # only the docs sets: music is another profile's
    assert group["sources"] == [f"{root}/docs"]
    assert [k["set"] for k in group["keep"]] == [second]
    assert len(r.json["forgotten"]) == 1
    sets = {
        s["set"]: s["status"]
        for s in run_cli("sets", "--profile", "docs", "--json", env=env).json["sets"]
    }
    assert sets[second] == "complete" and sets[music] == "complete"

    r = run_cli(
        "restore",
        "--profile",
        "docs",
        "--set",
        second,
        "--target",
        str(root / "back"),
        "--json",
        env=env,
    )
    assert r.code == 0, r.err
    assert (
        root / "back" / str(root / "docs" / "keep.txt").lstrip("/")
    ).read_bytes() == b"docs" * 1000


@pytest.mark.slow
def test_flags_win_over_the_environment_which_wins_over_the_profile(home) -> None:
    root, env = home
    by_env = {**env, "PARBACKUP_CATALOG": str(root / "env.sqlite")}
    r = run_cli("backup", "--profile", "docs", "--json", env=by_env)
    assert r.code == 0, r.err
    assert (root / "env.sqlite").exists() and not (root / "cat.sqlite").exists()

    r = run_cli(
        "backup",
        "--profile",
        "docs",
        "--catalog",
        str(root / "flag.sqlite"),
        "-d",
        str(root / "d3"),
        "--strategy",
        "fill",
        "--json",
        env=by_env,
    )
    assert r.code == 0, r.err
    assert (root / "flag.sqlite").exists() and not (root / "cat.sqlite").exists()
    assert r.json["strategy"] == "fill"
    assert [d["url"] for d in r.json["devices"]] == [f"{root}/d3"]  # the flag replaces

    # --config names another file; the option order does not matter
    other = write_config(
        root / "other.toml",
        f'[profiles.docs]\nsources = ["{root}/music"]\ndevices = ["{root}/d3", "{root}/d2"]\n',
    )
    r = run_cli("backup", "--profile", "docs", "--config", str(other), "--json", env=by_env)
    assert r.code == 0, r.err
    assert [d["url"] for d in r.json["devices"]] == [f"{root}/d3", f"{root}/d2"]
    r = run_cli("ls", "latest", "--json", env=by_env)
    assert any(e["path"].endswith("/music/junk.tmp") for e in r.json["entries"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected", "everywhere"),
    [
        (
            '[profiles.p]\nsources = ["/x"]\npassword = "hunter2"\n',
            "profiles.p.password: secrets never",
            True,
        ),
        (
            '[profiles.p.options]\nrepo_password = "x"\n',
            "profiles.p.options.repo_password: secrets",
            True,
        ),
        ("[profiles.p]\nkeep-daly = 3\n", "profiles.p.keep-daly: unknown key", True),
        ('[profiles.p]\nstrategy = "fastest"\n', "profiles.p.strategy: ", False),
        (
            '[profiles.p]\nexclude-caches = "yes"\n',
            "profiles.p.exclude-caches: must be true or false",
            False,
        ),
        (
            '[profiles.p]\ndevice = ["/a"]\ndevices = ["/b"]\n',
            "profiles.p.devices: given twice",
            True,
        ),
        ("[profiles.p\nsources = 1\n", "not valid TOML", True),
        ('[profiles.q]\nsources = ["/x"]\n', "no profile 'p' (profiles: q)", True),
    ],
)
def test_a_bad_file_is_a_one_line_usage_error_naming_file_and_key(
    tmp_path: Path, text: str, expected: str, everywhere: bool
) -> None:
    config = write_config(tmp_path / "c.toml", text)
    r = run_cli("backup", "--profile", "p", "--config", str(config))
    assert r.code == 2, r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert r.err.startswith(f"parbackup: error: {config}: ")
    assert expected in r.err
    assert "hunter2" not in r.err
    if everywhere:  # a bad value is found by the commands that take the key
        r = run_cli("forget", "--profile", "p", "--config", str(config), "--json")
        assert r.code == 2 and r.json["status"] == "failed" and expected in r.json["error"]


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    r = run_cli("backup", "--profile", "p", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.code == 2
    assert f"{tmp_path}/parbackup/config.toml: no configuration file" in r.err


@pytest.mark.slow
def test_a_password_command_may_stand_in_the_file(tmp_path: Path) -> None:
    """Where a secret comes from (a command, a file) is not a secret: not refused as one
    (it is an unknown key only while no command takes a password)."""
    config = write_config(
        tmp_path / "c.toml",
        f'[profiles.p]\nsources = ["{tmp_path}"]\npassword-command = "pass show backup"\n',
    )
    r = run_cli(
        "plan",
        "--profile",
        "p",
        "--config",
        str(config),
        "-d",
        str(tmp_path / "x"),
        "-d",
        str(tmp_path / "y"),
    )
    assert "secrets never" not in r.err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", "keep-daily: give a value, not true or false"),
        ("7.5", "keep-daily: give a whole number, not 7.5"),
        ("[1, 2]", "keep-daily: takes one value, not a list"),
        ("[[1]]", "keep-daily: takes one value, not a list"),
    ],
)
def test_a_count_that_is_true_a_fraction_or_a_list_is_refused_not_bent(
    tmp_path: Path, value: str, expected: str
) -> None:
    """A retention count is a number. Before, ``keep-daily = true`` was taken as 1 and
    ``7.5`` as 7 (``forget --prune`` then deleted what the operator meant to keep), and a
    list was an internal error; each is a usage error naming the key now, nothing run."""
    src = tmp_path / "src"
    src.mkdir()
    cat = tmp_path / "cat.sqlite"
    config = write_config(
        tmp_path / "c.toml",
        f'[profiles.p]\nsources = ["{src}"]\ncatalog = "{cat}"\n'
        f"[profiles.p.retention]\nkeep-daily = {value}\n",
    )
    r = run_cli("forget", "--profile", "p", "--config", str(config), "--prune")
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith(f"parbackup: error: {config}: profiles.p.retention."), r.err
    assert expected in r.err and "internal error" not in r.err
    assert not cat.exists()


def test_find_with_a_profile_searches_only_the_profiles_sets(home) -> None:
    """``find --profile`` searched every set of the catalog, another profile's too (left
    in session 17): it now searches the sets of the profile's sources, as ``ls`` and
    ``restore`` read ``latest``; without a profile, every set."""
    root, env = home
    docs = run_cli("backup", "--profile", "docs", "--json", env=env).json["set"]
    music = run_cli("backup", "--profile", "music", "--json", env=env).json["set"]
    r = run_cli("find", "**/keep.txt", "--profile", "docs", "--json", env=env)
    assert r.code == 0, r.err
    assert [(f["set"], f["path"]) for f in r.json["found"]] == [(docs, f"{root}/docs/keep.txt")]
    r = run_cli("find", "**/keep.txt", "--catalog", str(root / "cat.sqlite"), "--json", env=env)
    assert [f["set"] for f in r.json["found"]] == [docs, music]
    r = run_cli("find", "--help")
    assert "with --profile, in the sets of the profile's sources only" in r.out
