"""Harbor tasks whose Dockerfile needs a build (RUN) are built by buildah and run in their image as root:
the oracle passes, nop fails, through `dsv4 agent-tasks`. Without a builder they are skipped, the reason naming
the tool to install. The fast tests build on a busybox image made here (offline); the slow one builds
`RUN apt-get install` and `RUN pip install` on a Debian image made by mmdebstrap from the configured mirror."""

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dsv4.agent import task_image
from dsv4.agent.harbor import TaskError, load_task, run_task
from dsv4.cli import main
from dsv4.sandbox.image import image_cache
from dsv4.sandbox.image_build import build_image

from ..sandbox.test_container import busybox_rootfs  # noqa: F401  (fixture)
from ..sandbox.test_container import image_cache as private_image_cache  # noqa: F401  (autouse fixture)
from ..sandbox.test_image_build import forget_base, oci_layout, writable_root  # noqa: F401  (fixture)

BASES = image_cache() / "test-bases"
"""Base images made for these tests, in the image cache this run was given (read before `private_image_cache`
replaces it per test): made once, kept."""

SOLVE = 'add "$(cat /app/n)" "$OFFSET" > /app/answer.txt\nid -u > /app/uid.txt\n'
TEST = """if [ "$(cat /app/answer.txt)" = 42 ] && [ "$(cat /app/uid.txt)" = 0 ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
"""


def write_task(path: Path, dockerfile: str, files: dict[str, str], solve: str, test: str, toml: str = "") -> Path:
    """A task in Terminal-Bench 2.0's layout."""
    (path / "environment").mkdir(parents=True)
    (path / "solution").mkdir()
    (path / "tests").mkdir()
    (path / "instruction.md").write_text("Write the answer to /app/answer.txt.\n")
    (path / "task.toml").write_text('[agent]\ntimeout_sec = 120\n[verifier]\ntimeout_sec = 120\n' + toml)
    (path / "environment" / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (path / "environment" / name).write_text(text)
        (path / "environment" / name).chmod(0o755)
    (path / "solution" / "solve.sh").write_text(solve)
    (path / "tests" / "test.sh").write_text(test)
    return path


@pytest.fixture
def busybox_task(busybox_rootfs, private_image_cache, tmp_path):  # noqa: F811
    base = oci_layout(busybox_rootfs, private_image_cache / "busybox-layout")
    # busybox has no bash (the oracle and the verifier run `bash script`): the image's RUN makes one
    dockerfile = (f"FROM {base}\n"
                  "RUN printf '#!/bin/sh\\nexec /bin/sh \"$@\"\\n' > /bin/bash && chmod 755 /bin/bash && "
                  "mkdir /app && echo 20 > /app/n\n"
                  "WORKDIR /app\nCOPY add.sh /usr/local/bin/add\nENV PATH=/usr/local/bin:/bin OFFSET=22\n")
    yield write_task(tmp_path / "built-task", dockerfile, {"add.sh": '#!/bin/sh\necho $(($1 + $2))\n'}, SOLVE, TEST,
                      "[environment]\ncpus = 1\nmemory_mb = 512\nallow_internet = false\n")
    forget_base(private_image_cache / "busybox-layout")


def run_cli(task: Path, agent: str, out: Path) -> list[dict]:
    assert main(["agent-tasks", str(task), "--agent", agent, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.usefixtures("writable_root")
def test_a_task_with_run_steps_is_built_and_run_in_its_image(make_sandbox, busybox_task, tmp_path, capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run
    task = load_task(busybox_task)
    assert task.unsupported is None and "RUN" in task.build and task.allow_internet is False
    seen, sb = task_image.open_environment(task, "process", "all")
    with sb:  # the image's WORKDIR and ENV, task.toml's limits, allow_internet = false
        assert (seen.workdir, seen.env["OFFSET"], sb.spec.backend.type, sb.spec.backend.writable) == \
            ("/app", "22", "container", True)
        assert (sb.spec.limits.memory_limit_mb, sb.spec.limits.cpu_cores_limit, sb.spec.network_rules.mode) == \
            (512, 1.0, "none")
    [oracle] = run_cli(busybox_task, "oracle", tmp_path / "oracle")
    assert (oracle["status"], oracle["reward"]) == ("passed", 1.0), oracle
    [nop] = run_cli(busybox_task, "nop", tmp_path / "nop")
    assert (nop["status"], nop["reward"]) == ("failed", 0.0), nop


@pytest.mark.usefixtures("writable_root")  # else the reason is that one
def test_without_a_builder_the_skip_reason_names_the_tool(monkeypatch, busybox_task, tmp_path, capsys):
    monkeypatch.setattr(task_image, "find_builder", lambda: None)
    task = load_task(busybox_task)
    assert task.build is None and "runs RUN" in task.unsupported and "install buildah" in task.unsupported
    [result] = run_cli(busybox_task, "oracle", tmp_path / "out")
    assert result["status"] == "skipped" and "Debian package buildah" in result["detail"]


@pytest.mark.usefixtures("writable_root")
def test_build_timeout_sec_bounds_the_build(make_sandbox, busybox_rootfs, private_image_cache, tmp_path):  # noqa: F811
    make_sandbox("process")
    base = oci_layout(busybox_rootfs, private_image_cache / "busybox-layout")
    task = load_task(write_task(tmp_path / "slow-build", f"FROM {base}\nRUN sleep 47.5\n", {}, SOLVE, TEST,
                                "[environment]\nbuild_timeout_sec = 2\n"))
    assert task.build_timeout_s == 2.0
    result = run_task(task, "oracle")
    forget_base(private_image_cache / "busybox-layout")
    assert result.status == "error" and "timed out" in result.detail and result.seconds < 30, result


def test_where_no_writable_image_root_can_be_made_it_is_skipped_before_a_build(monkeypatch, busybox_task):
    from dsv4.sandbox import overlay

    monkeypatch.setattr(overlay, "unavailable", lambda: "needs root on the host")
    task = load_task(busybox_task)
    assert task.build is None and "runs RUN" in task.unsupported and "needs root on the host" in task.unsupported


@pytest.mark.usefixtures("writable_root")
def test_a_local_image_named_in_task_toml_is_run_not_built(make_sandbox, busybox_task, monkeypatch, tmp_path,
                                                           capsys):
    make_sandbox("process")
    built = build_image(busybox_task / "environment")
    task = busybox_task.rename(tmp_path / "prebuilt")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{built.layout}:latest", f"docker-archive:{task / 'saved.tar'}"],
                   check=True, capture_output=True)
    (task / "environment" / "Dockerfile").write_text("FROM nowhere.invalid/image\nRUN false\n")  # never built
    with open(task / "task.toml", "a") as f:
        f.write('docker_image = "saved.tar"\n')
    monkeypatch.setattr(task_image, "find_builder", lambda: None)
    assert load_task(task).image == task / "saved.tar"
    [oracle] = run_cli(task, "oracle", tmp_path / "oracle")
    assert (oracle["status"], oracle["reward"]) == ("passed", 1.0), oracle


def test_allow_internet_false_takes_the_network_away(tmp_path):
    task = load_task(write_task(tmp_path / "t", "FROM scratch\n", {}, "", "", "[environment]\nallow_internet = false"))
    assert task_image.network_for(task, "all") == "none"
    task.allow_internet = True
    assert task_image.network_for(task, "all") == "all"
    bad = write_task(tmp_path / "u", "FROM scratch\n", {}, "", "", '[environment]\nallow_internet = "yes"\n')
    with pytest.raises(TaskError, match="allow_internet = 'yes' is not true or false"):
        load_task(bad)


# ---- the slow one: apt and pip from the network, on a Debian base made here -----------------------------------

DEBIAN_BASE = "bookworm-minbase-python"


def debian_base() -> str:
    """`oci:LAYOUT:bookworm`, a Debian bookworm minbase with python3 and pip made by mmdebstrap from the host's
    configured mirror and imported by umoci; kept in the image cache (made once: ~75 s). It carries the host's
    CA bundle, so that TLS through this machine's egress proxy verifies as it does on the host."""
    for tool in ("mmdebstrap", "umoci", "buildah"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package {tool})")
    layout = BASES / DEBIAN_BASE
    if not (layout / "index.json").is_file():
        layout.parent.mkdir(parents=True, exist_ok=True)
        tmp = layout.with_name(layout.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        rootfs = tmp / "rootfs.tar"
        subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-pip,ca-certificates",
                        "--customize-hook=upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
                        "bookworm", str(rootfs)], check=True, capture_output=True, timeout=900)
        oci = tmp / "layout"
        for argv in (["init", "--layout", str(oci)], ["new", "--image", f"{oci}:bookworm"],
                     ["raw", "add-layer", "--image", f"{oci}:bookworm", str(rootfs)],
                     ["config", "--image", f"{oci}:bookworm", "--config.env",
                      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]):
            subprocess.run(["umoci", *argv], check=True, capture_output=True, timeout=600)
        oci.rename(layout)
        shutil.rmtree(tmp)
    return f"oci:{layout}:bookworm"


@pytest.mark.slow
@pytest.mark.usefixtures("writable_root")
def test_apt_and_pip_in_a_built_debian_image(make_sandbox, tmp_path, capsys):
    make_sandbox("process")
    start = time.monotonic()
    base = debian_base()
    base_s = time.monotonic() - start
    # the task image is built in this test's own cache, its label new each run: apt and pip run every time
    dockerfile = (f"FROM {base}\nLABEL dsv4-test-run={uuid.uuid4().hex}\n"
                  "RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n"
                  "RUN pip install --break-system-packages --no-cache-dir six==1.16.0\n"
                  "WORKDIR /app\nCOPY data.json /app/\n")
    solve = "jq '.a + 1' data.json > answer.txt\npython3 -c 'import six; print(six.__version__)' >> answer.txt\n"
    test = ('if [ "$(cat /app/answer.txt)" = "$(printf \'42\\n1.16.0\')" ] && [ "$(id -u)" = 0 ] && '
            'echo ok > /usr/local/bin/written-by-root; then\n  echo 1 > /logs/verifier/reward.txt\n'
            'else\n  echo 0 > /logs/verifier/reward.txt\nfi\n')
    task = write_task(tmp_path / "debian-task", dockerfile, {"data.json": '{"a": 41}\n'}, solve, test)
    [oracle] = run_cli(task, "oracle", tmp_path / "oracle")
    [nop] = run_cli(task, "nop", tmp_path / "nop")
    print(f"oracle: {oracle['status']} reward {oracle['reward']} in {oracle['seconds']:.1f} s (image build "
          f"included); nop: {nop['status']} reward {nop['reward']} in {nop['seconds']:.1f} s (built image reused); "
          f"base image ready in {base_s:.1f} s (made by mmdebstrap, or found in the cache)")
    assert (oracle["status"], oracle["reward"]) == ("passed", 1.0), oracle
    assert (nop["status"], nop["reward"]) == ("failed", 0.0), nop
