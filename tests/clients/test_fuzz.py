"""Fuzzing with schemathesis: the Iceberg REST spec (the copy in tests/fixtures) and floe's management
OpenAPI document against `floe dev`, path parameters set to an existing warehouse, namespace, table,
peer and rule so that requests reach real objects, in a bounded time. No answer is a 5xx, and every
error answer is an ErrorModel (fuzz_hooks.py)."""
import json
import os
import subprocess
import sys
import textwrap
import urllib.request

import pyarrow as pa
import pytest

from conftest import start_dev, stop_dev
from test_clients import pyiceberg_catalog

HERE = os.path.dirname(os.path.abspath(__file__))
SPECS = {
    "iceberg": (os.path.join(HERE, "../fixtures/iceberg-rest-catalog-open-api.yaml"), 70),
    "management": (os.path.join(HERE, "../../openapi/management.json"), 40),
}


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def fuzzed():
    """A `floe dev` of its own (the fuzzer drops and changes what it finds), with a namespace, a table
    with a snapshot, and a replication rule for it."""
    proc, floe = start_dev("--no-rule")
    cat = pyiceberg_catalog(floe, "fuzz-setup")
    cat.create_namespace("fuzz_ns")
    schema = pa.schema([pa.field("id", pa.int64())])
    cat.create_table(("fuzz_ns", "fuzz_t"), schema=schema).append(pa.table({"id": [1]}, schema=schema))
    rule = post_json(f"{floe.url}/management/v1/replication-rules",
                     {"warehouse": "demo", "namespace": ["fuzz_ns"],
                      "destinations": [{"peer": "replica", "warehouse": "demo"}]})
    floe.rule_id = rule["id"]
    yield floe
    stop_dev(proc)


@pytest.mark.parametrize("api", sorted(SPECS))
def test_no_server_errors_and_every_error_is_an_error_model(fuzzed, api, tmp_path):
    spec, seconds = SPECS[api]
    config = tmp_path / "schemathesis.toml"
    config.write_text(textwrap.dedent(f"""
        [parameters]
        "path.prefix" = "demo"
        "path.warehouse" = "demo"
        "path.namespace" = "fuzz_ns"
        "path.table" = "fuzz_t"
        "path.region" = "replica"
        "path.rule_id" = "{fuzzed.rule_id}"
        "query.warehouse" = "demo"
    """))
    env = dict(os.environ, SCHEMATHESIS_HOOKS="fuzz_hooks", PYTHONPATH=HERE)
    binary = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    # One worker: Hypothesis's internal caches are not thread-safe, and two worker threads now and
    # then fail inside Hypothesis (a KeyError from its lambda-source cache) with nothing wrong at floe.
    proc = subprocess.run(
        [binary, "--config-file", str(config), "run", spec, "--url", fuzzed.url,
         "--checks", "not_a_server_error,error_model", "--max-time", str(seconds), "--seed", os.environ.get("FUZZ_SEED", "20261201"),
         "--workers", "1", "--request-timeout", "10", "--suppress-health-check", "all"],
        env=env, capture_output=True, text=True, timeout=seconds + 120)
    failures = proc.stdout.find("FAILURES")
    assert proc.returncode == 0, proc.stdout[max(failures, 0):][:20000] + proc.stderr[-2000:]
