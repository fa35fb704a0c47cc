"""Fixtures for the real-client tests: a `floe dev` process (throwaway PostgreSQL + local warehouse)."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, bearer=None):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


class Floe:
    def __init__(self, url, warehouse, state_dir, replica_url=None):
        self.url = url
        self.warehouse = warehouse
        self.state_dir = state_dir
        # `floe dev` also runs a replica region, with its own database and warehouse.
        self.replica_url = replica_url
        self.replica_root = os.path.join(state_dir, "replica-warehouse")
        self.primary_root = os.path.join(state_dir, "warehouse")
        # Where an S3 server keeps its buckets as directories (s3s-fs), for warehouses on S3.
        self.bucket_dirs = None

    def local_path(self, uri):
        """The file behind a table file's URI: the file itself, or the S3 server's copy of the object."""
        if uri.startswith("s3://"):
            return os.path.join(self.bucket_dirs, uri.removeprefix("s3://"))
        return uri.removeprefix("file://").removeprefix("file:")

    def log(self, bearer=None, **params):
        """All log entries (paging through `after`); `bearer` where floe has auth configured."""
        entries, after = [], 0
        while True:
            q = "&".join(f"{k}={v}" for k, v in {"after": after, "limit": 1000, **params}.items())
            page = http_json(f"{self.url}/management/v1/log?{q}", bearer)
            if not page["entries"]:
                return entries
            entries += page["entries"]
            after = page["next-after"]


def start_dev(*extra_args, config=None, warehouse="demo", bearer=None):
    """Starts `floe dev` (two regions) in a fresh state directory; returns (process, Floe). With auth
    configured, `bearer` is a token that may read `/v1/config`."""
    binary = os.environ.get("FLOE_BIN", os.path.join(os.path.dirname(__file__), "../../target/debug/floe"))
    state = tempfile.mkdtemp(prefix="floe-clients-")
    port, replica_port = free_port(), free_port()
    log = open(os.path.join(state, "floe.log"), "w")
    global_args = ["--config", config] if config else []
    proc = subprocess.Popen([binary, *global_args, "dev", "--state-dir", state, "--port", str(port),
                             "--replica-port", str(replica_port), *extra_args],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            http_json(f"{url}/v1/config?warehouse={warehouse}", bearer)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("floe dev did not start: " + open(os.path.join(state, "floe.log")).read())
            time.sleep(0.2)
    return proc, Floe(url, warehouse, state, f"http://127.0.0.1:{replica_port}")


def stop_dev(proc):
    proc.send_signal(signal.SIGINT)  # floe dev stops its PostgreSQL on Ctrl-C
    proc.wait(timeout=60)


@pytest.fixture(scope="session")
def floe():
    proc, floe = start_dev()
    yield floe
    stop_dev(proc)


@pytest.fixture(params=["file", "s3"])
def any_floe(request):
    """The catalog-core client tests run on a local warehouse and on an s3:// one."""
    return request.getfixturevalue("floe" if request.param == "file" else "floe_s3")


@pytest.fixture(scope="module")
def floe_no_rule():
    """Two regions, the replica registered as a peer, and no rule: tests add their own."""
    proc, floe = start_dev("--no-rule")
    yield floe
    stop_dev(proc)


S3_KEY, S3_SECRET, S3_BUCKET = "floe-client-key", "floe-client-secret-0123456789", "lake"


@pytest.fixture(scope="session")
def floe_s3():
    """`floe dev` whose primary warehouse `s3wh` is on s3s-fs (an S3-compatible server that checks
    signatures), vending its keys to clients that ask."""
    binary = os.environ.get("FLOE_S3S_FS", os.path.expanduser("~/.cargo/bin/s3s-fs"))
    if not os.path.exists(binary):
        if os.environ.get("FLOE_REQUIRE_S3"):
            raise RuntimeError(f"s3s-fs is required at {binary} (tests/run.sh installs it)")
        pytest.skip("S3 client tests skipped: s3s-fs is not installed (tests/run.sh installs it)")
    root = tempfile.mkdtemp(prefix="floe-s3-")
    os.makedirs(os.path.join(root, S3_BUCKET))
    port = free_port()
    s3 = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
                           "--secret-key", S3_SECRET, root],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(root, "floe.toml")
    with open(config, "w") as f:
        f.write(f"""
[[warehouses]]
name = "s3wh"
root = "s3://{S3_BUCKET}/wh"
vend_credentials = true
[warehouses.s3]
endpoint = "http://127.0.0.1:{port}"
region = "us-east-1"
path_style = true
access_key_id = "{S3_KEY}"
secret_access_key = "{S3_SECRET}"
""")
    try:
        proc, floe = start_dev("--no-rule", config=config, warehouse="s3wh")
    except Exception:
        s3.kill()
        raise
    floe.bucket_dirs = root
    yield floe
    stop_dev(proc)
    s3.kill()
    s3.wait()
