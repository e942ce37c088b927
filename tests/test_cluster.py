"""``--cluster``: movers and readers on a real Dask cluster (REQUIREMENTS C2).

A scheduler and three workers run as real processes, each worker in a network namespace
"host" of its own with a tbf-shaped link and disks (a tmpfs) that only that host sees
(tests/clusterfixtures.py). A device named ``DIR?host=hostN`` can therefore only be
written, and read back, by a worker on hostN: a backup that completes proves placement.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import socket
import subprocess
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

import pytest

from clusterfixtures import DaskCluster, here_only, need_cluster
from conftest import SRC, make_tree, restored_root, run_cli, snapshot
from killpoints import pause_point, wait_paused
from parbackup.cluster import DaskExecutor, DaskWorker
from parbackup.clustertask import END_FRAME
from parbackup.workers import Crashed
from servers import claimed_net


def test_no_cluster_no_dask(tmp_path: Path) -> None:
    """Without --cluster a backup runs as before and never imports Dask; ?host= is
    accepted (and means nothing) there."""
    src = make_tree(tmp_path / "src", files=5)
    devs = [tmp_path / "d1", tmp_path / "d2"]
    for d in devs:
        d.mkdir()
    program = (
        "import sys\n"
        "from parbackup.cli.main import cli\n"
        "try:\n"
        f"    cli(['backup', {str(src)!r}, '-d', {str(devs[0])!r} + '?host=media1',"
        f" '-d', {str(devs[1])!r}, '--catalog', {str(tmp_path / 'cat.sqlite')!r}])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('dask imported:', any(m.split('.')[0] in ('dask', 'distributed')"
        " for m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    assert "exit 0" in proc.stdout, proc.stdout + proc.stderr
    assert "dask imported: False" in proc.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need_cluster()
    with DaskCluster(tmp_path_factory.mktemp("cluster"), hosts=3, rate="400mbit") as c:
        yield c


def cluster_devices(cluster: DaskCluster, tag: str) -> list[str]:
    """One device on each host's own disks, named with its host."""
    urls = []
    for i in cluster.indices:
        (path,) = cluster.mkdirs(i, tag)
        urls.append(f"{path}?host=host{i}")
    return urls


def devs(urls: list[str]) -> list[str]:
    return [a for u in urls for a in ("-d", u)]


@pytest.mark.slow
def test_cluster_backup_restores_like_local(cluster: DaskCluster, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", seed=3, files=60, big=(3_000_000,))
    local = [tmp_path / f"local{i}" for i in range(3)]
    for d in local:
        d.mkdir()
    cat_local, cat_cluster = str(tmp_path / "local.sqlite"), str(tmp_path / "cluster.sqlite")
    done = run_cli("backup", str(src), *devs([str(d) for d in local]), "--catalog", cat_local)
    assert done.code == 0, done.err
    shared = tmp_path / "shared"  # names no host: any worker may take it (a shared mount)
    shared.mkdir()
    urls = [*cluster_devices(cluster, "same"), str(shared)]
    on = ("--cluster", cluster.address)
    done = run_cli("backup", str(src), *devs(urls), "--catalog", cat_cluster, "--json", *on)
    assert done.code == 0, done.out + done.err
    report = done.json
    assert [d["status"] for d in report["devices"]] == ["ok"] * 4
    assert all(d["bytes"] > 0 for d in report["devices"])

    back_local, back_cluster = tmp_path / "back-local", tmp_path / "back-cluster"
    assert run_cli("restore", "--target", str(back_local), "--catalog", cat_local).code == 0
    # The volumes lie on disks only the hosts see: readers on this machine find nothing ...
    blind = run_cli("verify", "--catalog", cat_cluster, "--json")
    assert blind.code != 0
    # ... readers placed on the hosts read them back.
    assert run_cli("verify", "--catalog", cat_cluster, *on).code == 0
    # ... and send what they read back here: the target is on no host
    with here_only(back_cluster):
        done = run_cli("restore", "--target", str(back_cluster), "--catalog", cat_cluster, *on)
        assert done.code == 0, done.err
        expected = snapshot(src)
        assert snapshot(restored_root(back_local, src)) == expected
        assert snapshot(restored_root(back_cluster, src)) == expected


@pytest.mark.slow
def test_worker_killed_mid_backup(cluster: DaskCluster, tmp_path: Path) -> None:
    """Host 3's worker dies while its mover is writing: its work is replanned over the
    other hosts, the set completes degraded, and it restores."""
    src = make_tree(tmp_path / "src", seed=4, files=30, big=(4_000_000, 2_000_000))
    urls = cluster_devices(cluster, "killed")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    path3, _, query = urls[2].partition("?")
    urls[2] = f"faulty+file://{path3}?pause_after=1M&gate={gate}&{query}"
    cat = str(tmp_path / "cat.sqlite")
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), *devs(urls)]
    cmd += ["--catalog", cat, "--json", "--cluster", cluster.address]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        cluster.kill_worker(3)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.start_worker(3)
    assert proc.returncode == 3, out.decode() + err.decode()
    report = json.loads(out)
    states = {d["url"].split("?")[0].split("/")[-2]: d for d in report["devices"]}
    assert states["host3-disks"]["status"] == "failed"
    assert "lost its cluster worker" in states["host3-disks"]["error"]
    assert states["host1-disks"]["status"] == states["host2-disks"]["status"] == "ok"
    cluster.wait_workers(3)
    back = tmp_path / "back"
    done = run_cli("restore", "--target", str(back), "--catalog", cat, "--cluster", cluster.address)
    assert done.code == 0, done.err
    assert snapshot(restored_root(back, src)) == snapshot(src)


@pytest.mark.slow
def test_scheduler_lost_fails_cleanly(tmp_path: Path) -> None:
    """The scheduler dies mid-backup: the run fails (exit 1), nothing marked complete."""
    need_cluster()
    src = make_tree(tmp_path / "src", seed=5, files=20, big=(3_000_000,))
    with DaskCluster(tmp_path / "c", hosts=2, tag=f"s{claimed_net()}", first=4) as cluster:
        urls = cluster_devices(cluster, "lost")
        gate = tmp_path / "gate"
        fifo = pause_point(gate)
        path2, _, query = urls[1].partition("?")
        urls[1] = f"faulty+file://{path2}?pause_after=1M&gate={gate}&{query}"
        cat = str(tmp_path / "cat.sqlite")
        cmd = [sys.executable, "-m", "parbackup", "backup", str(src), *devs(urls)]
        cmd += ["--catalog", cat, "--json", "--cluster", cluster.address]
        env = {**os.environ, "PYTHONPATH": SRC}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert wait_paused(proc, fifo), proc.communicate()
            cluster.kill_scheduler()
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, out.decode() + err.decode()
    assert json.loads(out)["status"] == "failed"
    assert "lost the cluster scheduler" in err.decode()  # each device says why it failed
    sets = run_cli("sets", "--catalog", cat, "--json")
    assert sets.code == 0, sets.err
    states = [s["status"] for s in sets.json["sets"]]
    assert states and "complete" not in states, states


@pytest.mark.parametrize("lost", ["", "lost the cluster scheduler at tcp://127.0.0.1:1"])
def test_a_process_ended_while_the_scheduler_is_lost_says_so(lost: str) -> None:
    """A Dask worker that lost its scheduler closes; at its exit its fork server, and the
    movers forked from it, end before the worker's tasks do, so a task relays its mover's
    end as a clean one (``END_FRAME``). The engine must still read why: the lost
    scheduler (once this made test_scheduler_lost_fails_cleanly fail with both movers
    'ended unexpectedly'). With the scheduler there, a clean end stays a plain end.
    The task's connection is a real socket pair, the task's side played here."""
    worker = DaskWorker("mover-0", lambda: lost)
    task_end, link_end = socket.socketpair()
    task = Connection(task_end.detach())
    worker.attach(Connection(link_end.detach()), "tcp://10.0.0.1:1")
    task.send_bytes(pickle.dumps("a last message"))
    task.send_bytes(END_FRAME)
    assert worker.channel.recv() == "a last message"
    if lost:
        assert worker.channel.recv() == Crashed(lost)
    with pytest.raises(EOFError):
        worker.channel.recv()
    assert worker.join(10)
    task.close()


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return out


@pytest.mark.slow
def test_controller_killed_ends_remote_movers(cluster: DaskCluster, tmp_path: Path) -> None:
    """The program dies (SIGKILL) while a mover on a host is stuck: the mover processes on
    the hosts end too, as local movers die with their parent."""
    src = make_tree(tmp_path / "src", seed=6, files=10, big=(3_000_000,))
    urls = cluster_devices(cluster, "orphan")[:2]
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    path1, _, query = urls[0].partition("?")
    urls[0] = f"faulty+file://{path1}?pause_after=1M&gate={gate}&{query}"
    cmd = [sys.executable, "-m", "parbackup", "backup", str(src), *devs(urls)]
    cmd += ["--catalog", str(tmp_path / "cat.sqlite"), "--cluster", cluster.address]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        servers = children(cluster.workers[cluster.indices[0]].pid)
        movers = [p for server in servers for p in children(server)]
        assert movers  # the stuck mover runs on host 1, forked by its Dask worker's server
        pidfds = [os.pidfd_open(p) for p in movers]
        proc.kill()
        proc.wait(30)
        for fd in pidfds:  # readable once that process has ended
            ready, _, _ = select.select([fd], [], [], 60)
            os.close(fd)
            assert ready, "a mover outlived its controller"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_unknown_host_is_a_failed_device(cluster: DaskCluster, tmp_path: Path) -> None:
    """A device whose ?host= names no worker fails before the backup, like a missing
    disk; the others take the data."""
    src = make_tree(tmp_path / "src", seed=7, files=10)
    urls = [*cluster_devices(cluster, "nowhere")[:2], f"{tmp_path}/x?host=nosuchhost"]
    cat = str(tmp_path / "cat.sqlite")
    done = run_cli("backup", str(src), *devs(urls), "--catalog", cat, "--json",
                   "--cluster", cluster.address)  # fmt: skip
    assert done.code == 3, done.out + done.err
    failed = [d for d in done.json["devices"] if d["status"] == "failed"]
    assert len(failed) == 1 and "no cluster worker on host 'nosuchhost'" in failed[0]["error"]


@pytest.mark.slow
def test_call_back_needs_the_run_key(cluster: DaskCluster) -> None:
    """The controller's port answers only those holding the run's key."""
    executor = DaskExecutor(cluster.address)
    try:
        sock = socket.create_connection(("127.0.0.1", executor.port), timeout=10)
        sock.settimeout(None)
        link = Connection(sock.detach())
        with pytest.raises((AuthenticationError, EOFError, OSError)):
            answer_challenge(link, b"not the key")
            deliver_challenge(link, b"not the key")
            link.send_bytes(b"x y")
            link.recv_bytes()  # never reached: the stranger is dropped
        link.close()
    finally:
        executor.close()


@pytest.mark.slow
def test_unreachable_controller_fails_cleanly(cluster: DaskCluster, tmp_path: Path) -> None:
    """Workers that cannot call the program back (it listens where they cannot reach):
    every device fails before anything is written, saying why."""
    src = make_tree(tmp_path / "src", seed=8, files=5)
    urls = cluster_devices(cluster, "unreached")[:2]
    done = run_cli("backup", str(src), *devs(urls), "--catalog", str(tmp_path / "cat.sqlite"),
                   "--cluster", cluster.address, "--cluster-listen", "127.0.0.1")  # fmt: skip
    assert done.code == 1, done.out + done.err
    assert "no device could be opened" in done.err
    assert "before it could call this program back" in done.err


def on_host(cluster: DaskCluster, i: int, src: Path, name: str) -> Path:
    """A copy of ``src`` (hard links, times, modes kept) on host ``i``'s own disks only."""
    (parent,) = cluster.mkdirs(i, f"{name}-parent")
    dest = Path(parent) / name
    cmd = ["nsenter", "-t", str(cluster.workers[i].pid), "-m", "cp", "-a", str(src), str(dest)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert not dest.exists()  # this machine (the controller) does not see it
    return dest


@pytest.mark.slow
def test_source_on_a_host(cluster: DaskCluster, tmp_path: Path) -> None:
    """A tree that lies only on host 2 (``PATH?host=host2``) is scanned there and read
    by every mover (host 2's directly, the others' through its file server); it
    restores like the same tree backed up locally, hard links across its top-level
    directories and the files' extended attributes included. A device that names no
    host runs on host 2 (by itself, so restore needs it on a shared mount)."""
    src = make_tree(tmp_path / "src", seed=13, files=80, big=(3_000_000,))
    for d in ("hl1", "hl2"):
        (src / d).mkdir()
    (src / "hl1" / "f").write_bytes(b"one file, three names")
    os.link(src / "hl1" / "f", src / "hl2" / "g")
    os.link(src / "hl1" / "f", src / "a-rootlink")
    tagged = [
        p
        for p in sorted(src.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.stat().st_nlink == 1
    ]
    for p in tagged:  # read with the data, on host 2 or through its file server
        os.setxattr(p, "user.tag", p.name.encode())
    remote = on_host(cluster, 2, src, "tree")
    local = [tmp_path / f"local{i}" for i in range(3)]
    for d in local:
        d.mkdir()
    cat_local, cat_cluster = str(tmp_path / "local.sqlite"), str(tmp_path / "cluster.sqlite")
    assert (
        run_cli("backup", str(src), *devs([str(d) for d in local]), "--catalog", cat_local).code
        == 0
    )
    on = ("--cluster", cluster.address)
    urls = cluster_devices(cluster, "hosted")
    done = run_cli("backup", f"{remote}?host=host2", *devs(urls), "--catalog", cat_cluster,
                   "--json", *on)  # fmt: skip
    assert done.code == 0, done.out + done.err
    assert [d["status"] for d in done.json["devices"]] == ["ok"] * 3
    assert all(d["bytes"] > 0 for d in done.json["devices"])
    listed = run_cli("files", "--catalog", cat_cluster, "--json")
    assert listed.code == 0, listed.err
    back_local, back_cluster = tmp_path / "back-local", tmp_path / "back-cluster"
    assert run_cli("restore", "--target", str(back_local), "--catalog", cat_local).code == 0
    done = run_cli("restore", "--target", str(back_cluster), "--catalog", cat_cluster, *on)
    assert done.code == 0, done.err
    restored = back_cluster / str(remote).lstrip("/")
    assert snapshot(restored) == snapshot(restored_root(back_local, src)) == snapshot(src)
    names = [restored / "hl1" / "f", restored / "hl2" / "g", restored / "a-rootlink"]
    assert len({p.stat().st_ino for p in names}) == 1  # one file, three names
    for p in tagged:
        back = restored / p.relative_to(src)
        assert os.getxattr(back, "user.tag") == p.name.encode(), back
    # a device that names no host runs on the sources' host: this one is only there
    urls = [urls[0], *cluster.mkdirs(2, "unpinned")]
    done = run_cli("backup", f"{remote}?host=host2", *devs(urls), "--catalog",
                   str(tmp_path / "unpinned.sqlite"), "--json", *on)  # fmt: skip
    assert done.code == 0, done.out + done.err
    assert [d["status"] for d in done.json["devices"]] == ["ok"] * 2


@pytest.mark.slow
def test_workers_under_a_nanny(tmp_path: Path) -> None:
    """Workers started with a nanny (``dask worker``'s default): a backup runs; a worker
    process killed mid-backup is a lost worker even though its nanny starts it again at
    once (the new worker does not take the dead one's mover over), the set completes
    degraded and restores, and the restarted worker reads its host's devices again."""
    need_cluster()
    src = make_tree(tmp_path / "src", seed=14, files=30, big=(4_000_000, 2_000_000))
    tag = f"n{claimed_net()}"
    with DaskCluster(tmp_path / "c", hosts=2, tag=tag, first=7, nanny=True) as cluster:
        on = ("--cluster", cluster.address)
        urls = cluster_devices(cluster, "plain")
        done = run_cli("backup", str(src), *devs(urls), "--catalog",
                       str(tmp_path / "plain.sqlite"), "--json", *on)  # fmt: skip
        assert done.code == 0, done.out + done.err
        assert [d["status"] for d in done.json["devices"]] == ["ok"] * 2

        urls = cluster_devices(cluster, "killed")
        gate = tmp_path / "gate"
        fifo = pause_point(gate)
        path, _, query = urls[1].partition("?")
        urls[1] = f"faulty+file://{path}?pause_after=1M&gate={gate}&{query}"
        cat = str(tmp_path / "cat.sqlite")
        cmd = [sys.executable, "-m", "parbackup", "backup", str(src), *devs(urls)]
        cmd += ["--catalog", cat, "--json", *on]
        env = {**os.environ, "PYTHONPATH": SRC}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert wait_paused(proc, fifo), proc.communicate()
            dead = cluster.kill_worker_process(8)
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 3, out.decode() + err.decode()
        report = json.loads(out)
        states = {d["url"].split("?")[0].split("/")[-2]: d for d in report["devices"]}
        assert states["host8-disks"]["status"] == "failed"
        assert "lost its cluster worker" in states["host8-disks"]["error"]
        assert states["host7-disks"]["status"] == "ok"
        cluster.wait_workers(2)  # the nanny started host 8's worker again
        assert cluster.worker_pid(8) != dead
        back = tmp_path / "back"
        done = run_cli("restore", "--target", str(back), "--catalog", cat, *on)
        assert done.code == 0, done.err
        assert snapshot(restored_root(back, src)) == snapshot(src)
        # the first set lies on both hosts: host 8's restarted worker reads it back
        done = run_cli("verify", "--catalog", str(tmp_path / "plain.sqlite"), "--json", *on)
        assert done.code == 0, done.out + done.err


@pytest.mark.slow
def test_source_host_lost(cluster: DaskCluster, tmp_path: Path) -> None:
    """The host of a source dies mid-backup (its file server with it): the files not
    yet read are reported as not backed up, each saying why; the rest is stored and
    restores."""
    src = make_tree(tmp_path / "src", seed=15, files=60, big=(3_000_000, 2_000_000))
    remote = on_host(cluster, 2, src, "lost")
    urls = cluster_devices(cluster, "srclost")
    gate = tmp_path / "gate"
    fifo = pause_point(gate)
    path1, _, query = urls[0].partition("?")
    urls = [f"faulty+file://{path1}?pause_after=1M&gate={gate}&{query}", urls[2]]
    cat = str(tmp_path / "cat.sqlite")
    cmd = [sys.executable, "-m", "parbackup", "backup", f"{remote}?host=host2", *devs(urls)]
    cmd += ["--catalog", cat, "--json", "--cluster", cluster.address]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_paused(proc, fifo), proc.communicate()
        cluster.kill_worker(2)
        gate.touch()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.start_worker(2)
    assert proc.returncode == 3, out.decode() + err.decode()
    report = json.loads(out)
    assert report["status"] == "complete"
    skipped = report["skipped"]
    assert skipped and all("file server" in s["error"] for s in skipped), skipped
    cluster.wait_workers(3)
    back = tmp_path / "back"
    done = run_cli("restore", "--target", str(back), "--catalog", cat, "--cluster", cluster.address)
    assert done.code in (0, 3), done.err
    restored = snapshot(back / str(remote).lstrip("/"))
    expected = snapshot(src)
    lost = {os.path.relpath(s["path"], remote) for s in skipped}
    assert restored
    for rel, what in restored.items():
        assert what == expected[rel]
    assert {r for r in expected if r not in restored and expected[r][0] == "file"} <= lost


@pytest.mark.slow
def test_source_on_an_unknown_host(cluster: DaskCluster, tmp_path: Path) -> None:
    """A source whose ?host= names no worker fails the backup before anything is
    written, in one line naming it."""
    urls = cluster_devices(cluster, "nosource")[:2]
    done = run_cli("backup", "/srv/data?host=nosuchhost", *devs(urls), "--catalog",
                   str(tmp_path / "cat.sqlite"), "--cluster", cluster.address)  # fmt: skip
    assert done.code == 1, done.out + done.err
    assert "/srv/data on host nosuchhost" in done.err
    assert "no cluster worker on host 'nosuchhost'" in done.err
    assert "Traceback" not in done.err


@pytest.mark.slow
def test_relayed_restore_into_a_full_target(cluster: DaskCluster, tmp_path: Path) -> None:
    """A restore target that fills up (written here for readers on the hosts): the file
    that did not fit is named damaged with the target's error, never restored half."""
    src = make_tree(tmp_path / "src", seed=17, files=8, max_size=20_000, big=(3_000_000,))
    urls = cluster_devices(cluster, "full")
    cat = str(tmp_path / "cat.sqlite")
    on = ("--cluster", cluster.address)
    assert run_cli("backup", str(src), *devs(urls), "--catalog", cat, *on).code == 0
    with here_only(tmp_path / "back", size="1m") as back:
        done = run_cli("restore", "--target", str(back), "--catalog", cat, "--json", *on)
        assert done.code != 0, done.out + done.err
        damaged = {d["path"]: d["error"] for d in done.json["damaged"]}
        big = str(src.resolve() / "big0.bin")
        assert "No space left on device" in damaged[big], damaged
        assert not (restored_root(back, src) / "big0.bin").exists()
        expected = snapshot(src)
        for rel, what in snapshot(restored_root(back, src)).items():
            assert what == expected[rel]
