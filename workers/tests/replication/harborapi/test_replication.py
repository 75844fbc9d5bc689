"""Berth's replication driven by the real Harbor client, harborapi (PyPI, pinned in
gateway/tests/harborapi/requirements.txt), as a Harbor user's automation would drive it:
registry endpoints, policies, executions, tasks and task logs, against a gateway with
auth on and a `berth-workers replicate` process doing the copies to a Debian
`docker-registry` with htpasswd auth. Images go in with skopeo, and the destination is
read back with skopeo, so the digests compared are what a real client sees.

Run by the Rust end-to-end test that starts the stack, or by hand:

    BERTH_URL=http://127.0.0.1:5000 BERTH_ADMIN_USERNAME=admin BERTH_ADMIN_PASSWORD=… \
    DEST_URL=http://127.0.0.1:5001 DEST_USERNAME=replicator DEST_PASSWORD=… \
        ./var/venv/bin/python -m pytest -q workers/tests/replication/harborapi

Every test is independent: it creates its own project, registry endpoint and policy
under a per-run prefix, so the suite runs against a server that already holds data, and
in any order.

No asyncio plugin: each test is synchronous and runs its coroutine with asyncio.run, so
every test gets its own event loop and its own client.
"""

import asyncio
import gzip
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlparse

import pytest
from harborapi import HarborAsyncClient
from harborapi.exceptions import BadRequest, NotFound, PreconditionFailed
from harborapi.models import (
    ProjectMetadata,
    ProjectReq,
    Registry,
    RegistryCredential,
    RegistryPing,
    ReplicationFilter,
    ReplicationPolicy,
    ReplicationTrigger,
    ReplicationTriggerSettings,
)


def _env(name):
    value = os.environ.get(name)
    if not value:
        # A missing setting is a broken run, not a reason to skip.
        raise RuntimeError(f"{name} must be set (see the docstring of {__file__})")
    return value


BERTH_URL = _env("BERTH_URL").rstrip("/")
ADMIN_USERNAME = _env("BERTH_ADMIN_USERNAME")
ADMIN_PASSWORD = _env("BERTH_ADMIN_PASSWORD")
DEST_URL = _env("DEST_URL").rstrip("/")
DEST_USERNAME = _env("DEST_USERNAME")
DEST_PASSWORD = _env("DEST_PASSWORD")

API_URL = f"{BERTH_URL}/api/v2.0"
# skopeo's docker:// references want host:port, not a URL.
BERTH_HOST = urlparse(BERTH_URL).netloc
DEST_HOST = urlparse(DEST_URL).netloc

# Names created by this run start with it, so reruns never collide.
PREFIX = os.environ.get("REPLICATION_PREFIX") or f"repl{uuid.uuid4().hex[:8]}"

# How long a replication of a small image may take end to end (push event, worker,
# copy). Generous: a loaded 2-core machine runs the gateway, the worker, PostgreSQL,
# NATS and the destination at once.
REPLICATION_TIMEOUT = float(os.environ.get("REPLICATION_TIMEOUT_SECS", "60"))
# How long a stopped execution may take to show Stopped. Berth promises running copies
# stop within a second; this only bounds a hung stop.
STOP_TIMEOUT = 30.0
# The random layer of the small test images.
LAYER_BYTES = 64 * 1024
# One skopeo run; it never legitimately takes this long.
SKOPEO_TIMEOUT = 300

EXECUTION_FINAL = ("Succeed", "Failed", "Stopped")

# Berth's mask for a stored secret (Harbor's).
SECRET_MASK = "*****"


def client():
    # retry=None: a dead server must fail the test now, not after a minute of backoff.
    return HarborAsyncClient(
        url=API_URL,
        username=ADMIN_USERNAME,
        secret=ADMIN_PASSWORD,
        timeout=60.0,
        retry=None,
    )


def run(test):
    """Runs `async def test(api)` with an admin client on a fresh event loop."""

    async def main():
        api = client()
        try:
            return await test(api)
        finally:
            await api.client.aclose()

    return asyncio.run(main())


def name(suffix):
    return f"{PREFIX}-{suffix}"


def id_from_location(location, collection):
    match = re.fullmatch(rf"/api/v2\.0/{collection}/(\d+)", location or "")
    assert match, f"Location {location!r} is not /api/v2.0/{collection}/<id>"
    return int(match.group(1))


# ------------------------------------------------------------------ images


def _write_blob(root, data):
    """Writes `data` under the layout's blobs/sha256; returns its descriptor fields."""
    hexdigest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", hexdigest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def build_layout(root, tag, layer_bytes):
    """An OCI image layout at `root` holding one image tagged `tag`: a config and one
    layer of `layer_bytes` random bytes. The layer is really gzip-compressed, so skopeo
    pushes it unchanged (an uncompressed layer would be compressed on push) and the
    manifest Berth receives is this one. Returns the manifest's digest."""
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    raw = os.urandom(layer_bytes)
    # Level 1: random data does not compress anyway; mtime 0 keeps the bytes stable.
    layer = _write_blob(root, gzip.compress(raw, compresslevel=1, mtime=0))
    config = _write_blob(
        root,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"],
                },
            }
        ).encode(),
    )
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **config,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}
            ],
        }
    ).encode()
    manifest_desc = _write_blob(root, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest_type,
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return manifest_desc["digest"]


def skopeo(*args):
    """Runs `skopeo --insecure-policy args…`; returns stdout as bytes, failing the test
    with skopeo's stderr when it fails."""
    command = ["skopeo", "--insecure-policy", *args]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SKOPEO_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"$ {' '.join(command)}\nexit {result.returncode}\n"
        f"{result.stderr.decode(errors='replace')}"
    )
    return result.stdout


def push_image(repository, tag, layer_bytes=LAYER_BYTES):
    """Builds a fresh image and pushes it into Berth as `repository:tag` with skopeo
    (the token flow with the admin's credentials). Returns Berth's digest for the
    tag."""
    with tempfile.TemporaryDirectory(prefix="berth-repl-layout-") as root:
        built = build_layout(root, tag, layer_bytes)
        skopeo(
            "copy",
            "--dest-creds",
            f"{ADMIN_USERNAME}:{ADMIN_PASSWORD}",
            "--dest-tls-verify=false",
            f"oci:{root}:{tag}",
            f"docker://{BERTH_HOST}/{repository}:{tag}",
        )
    pushed = berth_digest(repository, tag)
    # A gzip layer and an OCI manifest: skopeo must have pushed the layout's bytes.
    assert pushed == built, f"Berth holds {pushed} for {repository}:{tag}, not {built}"
    return pushed


def raw_digest(host, username, password, repository, tag):
    """The sha256 of the manifest bytes `host` serves for `repository:tag`."""
    raw = skopeo(
        "inspect",
        "--raw",
        "--creds",
        f"{username}:{password}",
        "--tls-verify=false",
        f"docker://{host}/{repository}:{tag}",
    )
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def berth_digest(repository, tag):
    return raw_digest(BERTH_HOST, ADMIN_USERNAME, ADMIN_PASSWORD, repository, tag)


def dest_digest(repository, tag):
    return raw_digest(DEST_HOST, DEST_USERNAME, DEST_PASSWORD, repository, tag)


def dest_has_tag(repository, tag):
    """Whether the destination serves a manifest for `repository:tag`."""
    result = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "inspect",
            "--raw",
            "--creds",
            f"{DEST_USERNAME}:{DEST_PASSWORD}",
            "--tls-verify=false",
            f"docker://{DEST_HOST}/{repository}:{tag}",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SKOPEO_TIMEOUT,
    )
    return result.returncode == 0


# ------------------------------------------------------------------ API helpers


async def make_project(api, project_name):
    await api.create_project(
        ProjectReq(project_name=project_name, metadata=ProjectMetadata(public="false"))
    )


async def make_registry(api, registry_name):
    """The destination docker-registry as an endpoint: basic credential, insecure (it
    speaks plain HTTP anyway). Returns its id."""
    location = await api.create_registry(
        Registry(
            name=registry_name,
            type="docker-registry",
            url=DEST_URL,
            description="Debian docker-registry with htpasswd",
            insecure=True,
            credential=RegistryCredential(
                type="basic", access_key=DEST_USERNAME, access_secret=DEST_PASSWORD
            ),
        )
    )
    return id_from_location(location, "registries")


async def make_policy(api, policy_name, registry_id, project, trigger, **fields):
    """A push policy of every repository of `project` to `registry_id`; returns its
    id."""
    location = await api.create_replication_policy(
        ReplicationPolicy(
            name=policy_name,
            description="harborapi replication test",
            dest_registry=Registry(id=registry_id),
            filters=[ReplicationFilter(type="name", value=f"{project}/**")],
            trigger=trigger,
            override=True,
            enabled=True,
            **fields,
        )
    )
    return id_from_location(location, "replication/policies")


async def describe(api, execution_id):
    """The execution and its tasks, for failure messages."""
    try:
        execution = await api.get_replication(execution_id)
        tasks = await api.get_replication_tasks(execution_id, page_size=100)
    except Exception as e:
        # Only for a message: the assertion that called it fails anyway.
        return f"execution {execution_id}: cannot read it: {e!r}"
    lines = [f"execution: {execution.model_dump(mode='json')}"]
    lines += [f"task: {t.model_dump(mode='json')}" for t in tasks]
    return "\n".join(lines)


async def wait_for(check, timeout, what):
    """Polls `await check()` until it returns something truthy; returns that. Fails
    with `what` (a string, or an async function returning one) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            message = what if isinstance(what, str) else await what()
            pytest.fail(f"not within {timeout:.0f} s: {message}")
        await asyncio.sleep(0.25)


async def wait_until_final(api, execution_id, timeout):
    """Polls the execution until it is Succeed, Failed or Stopped; returns it."""

    async def final():
        execution = await api.get_replication(execution_id)
        return execution if execution.status in EXECUTION_FINAL else None

    async def what():
        return f"execution {execution_id} did not finish\n" + await describe(
            api, execution_id
        )

    return await wait_for(final, timeout, what)


# ------------------------------------------------------------------ tests


def test_registry_endpoint_create_ping_list_get_and_the_secret_never_returned():
    async def test(api):
        registry_name = name("endpoint")
        registry_id = await make_registry(api, registry_name)

        registry = await api.get_registry(registry_id)
        assert registry.id == registry_id
        assert registry.name == registry_name
        assert registry.type == "docker-registry"
        assert registry.url == DEST_URL, registry
        assert registry.insecure is True
        assert registry.credential.type == "basic"
        assert registry.credential.access_key == DEST_USERNAME
        assert registry.credential.access_secret == SECRET_MASK, registry
        # Pinged at creation with the htpasswd credential.
        assert registry.status == "healthy", registry
        assert registry.creation_time is not None
        assert DEST_PASSWORD not in registry.model_dump_json()

        # By id: the stored (sealed) credential is opened and used.
        await api.check_registry_status(RegistryPing(id=registry_id))
        # Not stored yet: what a UI does before saving.
        await api.check_registry_status(
            RegistryPing(
                type="docker-registry",
                url=DEST_URL,
                credential_type="basic",
                access_key=DEST_USERNAME,
                access_secret=DEST_PASSWORD,
                insecure=True,
            )
        )
        # htpasswd refuses a wrong password: the ping says so.
        with pytest.raises(BadRequest):
            await api.check_registry_status(
                RegistryPing(id=registry_id, access_secret=DEST_PASSWORD + "-wrong")
            )
        # A failed ping with a replaced secret does not mark the stored one unhealthy.
        assert (await api.get_registry(registry_id)).status == "healthy"

        listed = await api.get_registries(query=f"name={registry_name}")
        assert [r.id for r in listed] == [registry_id], listed
        everything = await api.get_registries(page_size=100)
        assert registry_id in [r.id for r in everything]
        for r in everything:
            assert r.credential.access_secret in (SECRET_MASK, ""), r
            assert DEST_PASSWORD not in r.model_dump_json(), r

        info = await api.get_registry_info(registry_id)
        assert info.type == "docker-registry"
        assert "manual" in info.supported_triggers, info
        # The local registry (id 0) is the source of push policies and offers events.
        local = await api.get_registry_info(0)
        assert "event_based" in local.supported_triggers, local

        await api.delete_registry(registry_id)
        with pytest.raises(NotFound):
            await api.get_registry(registry_id)

    run(test)


def test_event_based_push_replicates_a_pushed_image_with_the_same_digest():
    async def test(api):
        project = name("events")
        repository = f"{project}/app"
        tag = "v1"
        await make_project(api, project)
        registry_id = await make_registry(api, name("events-dest"))
        policy_id = await make_policy(
            api,
            name("events-policy"),
            registry_id,
            project,
            ReplicationTrigger(type="event_based"),
        )
        policy = await api.get_replication_policy(policy_id)
        assert policy.trigger.type == "event_based", policy
        assert policy.dest_registry.id == registry_id, policy
        assert policy.src_registry.id == 0, policy
        assert policy.enabled is True

        source = push_image(repository, tag)

        async def succeeded():
            executions = await api.get_replications(policy_id=policy_id)
            for e in executions:
                assert e.policy_id == policy_id, e
                assert e.status != "Failed", await describe(api, e.id)
            done = [e for e in executions if e.status == "Succeed"]
            return done[0] if done else None

        async def what():
            executions = await api.get_replications(policy_id=policy_id)
            text = [await describe(api, e.id) for e in executions]
            return f"no Succeed execution of policy {policy_id}:\n" + "\n".join(
                text or ["(no execution at all)"]
            )

        execution = await wait_for(succeeded, REPLICATION_TIMEOUT, what)
        assert execution.trigger == "event_based", execution
        assert execution.failed == 0, execution

        tasks = await api.get_replication_tasks(execution.id, page_size=100)
        copies = [t for t in tasks if t.operation == "copy"]
        assert len(copies) == 1, await describe(api, execution.id)
        assert all(t.status == "Succeed" for t in tasks), await describe(
            api, execution.id
        )
        copy = copies[0]
        assert copy.execution_id == execution.id
        assert repository in (copy.src_resource or ""), copy
        assert repository in (copy.dst_resource or ""), copy
        assert copy.start_time is not None and copy.end_time is not None, copy
        # Berth's extras: a fresh image of random blobs, so both blobs (config and
        # layer) were uploaded, none skipped or mounted.
        assert copy.resource_type == "image", copy
        assert (copy.blobs_skipped, copy.blobs_mounted, copy.blobs_uploaded) == (
            0,
            0,
            2,
        ), copy
        assert copy.bytes > LAYER_BYTES, copy

        # The destination serves the very manifest bytes Berth serves.
        assert dest_digest(repository, tag) == source

        await api.delete_replication_policy(policy_id)
        await api.delete_registry(registry_id)

    run(test)


def test_manual_replication_runs_to_succeed_with_task_logs():
    async def test(api):
        project = name("manual")
        repository = f"{project}/app"
        tag = "1.0"
        await make_project(api, project)
        registry_id = await make_registry(api, name("manual-dest"))
        policy_id = await make_policy(
            api,
            name("manual-policy"),
            registry_id,
            project,
            ReplicationTrigger(type="manual"),
        )
        source = push_image(repository, tag)
        # A manual policy does not react to pushes.
        assert await api.get_replications(policy_id=policy_id) == []

        location = await api.start_replication(policy_id)
        execution_id = id_from_location(location, "replication/executions")
        listed = await api.get_replications(policy_id=policy_id)
        assert [e.id for e in listed] == [execution_id], listed

        execution = await wait_until_final(api, execution_id, REPLICATION_TIMEOUT)
        details = await describe(api, execution_id)
        assert execution.status == "Succeed", details
        assert execution.id == execution_id
        assert execution.policy_id == policy_id
        assert execution.trigger == "manual", details
        assert execution.start_time is not None and execution.end_time is not None
        # The planning task and one copy.
        assert execution.total >= 2, details
        assert execution.succeed == execution.total, details
        assert execution.failed == 0 and execution.in_progress == 0, details
        assert execution.stopped == 0, details

        tasks = await api.get_replication_tasks(execution_id, page_size=100)
        assert len(tasks) == execution.total, details
        copies = [t for t in tasks if t.operation == "copy"]
        assert len(copies) == 1, details
        assert all(t.status == "Succeed" for t in tasks), details
        assert repository in (copies[0].dst_resource or ""), details
        for task in tasks:
            log = await api.get_replication_task_log(execution_id, task.id)
            assert isinstance(log, str), log
            # The runtime logs every attempt's end, so a finished task has a log.
            assert log.strip(), f"task {task.id} has an empty log\n{details}"

        assert dest_digest(repository, tag) == source

        # Filtered listings, Harbor's way.
        succeeded = await api.get_replications(policy_id=policy_id, status="Succeed")
        assert [e.id for e in succeeded] == [execution_id]
        assert await api.get_replications(policy_id=policy_id, status="Failed") == []
        manual = await api.get_replications(policy_id=policy_id, trigger="manual")
        assert [e.id for e in manual] == [execution_id]

        # Deleting the policy deletes its finished executions (as Harbor does).
        await api.delete_replication_policy(policy_id)
        with pytest.raises(NotFound):
            await api.get_replication(execution_id)
        await api.delete_registry(registry_id)

    run(test)


def test_stopping_a_slow_manual_replication_ends_it_stopped():
    async def test(api):
        project = name("stop")
        repository = f"{project}/big"
        tag = "slow"
        await make_project(api, project)
        registry_id = await make_registry(api, name("stop-dest"))
        # 64 kbit/s is 8 KiB/s: the 4 MiB layer would take over eight minutes.
        policy_id = await make_policy(
            api,
            name("stop-policy"),
            registry_id,
            project,
            ReplicationTrigger(type="manual"),
            speed=64,
        )
        assert (await api.get_replication_policy(policy_id)).speed == 64
        push_image(repository, tag, layer_bytes=4 * 1024 * 1024)

        location = await api.start_replication(policy_id)
        execution_id = id_from_location(location, "replication/executions")

        async def copying():
            execution = await api.get_replication(execution_id)
            assert execution.status == "InProgress", await describe(api, execution_id)
            tasks = await api.get_replication_tasks(execution_id, page_size=100)
            running = [
                t for t in tasks if t.operation == "copy" and t.status == "InProgress"
            ]
            return running[0] if running else None

        async def what():
            return "no copy task InProgress\n" + await describe(api, execution_id)

        running = await wait_for(copying, REPLICATION_TIMEOUT, what)
        # A policy with a running execution cannot be deleted: stop it first (412).
        with pytest.raises(PreconditionFailed):
            await api.delete_replication_policy(policy_id)

        await api.stop_replication(execution_id)
        stopped_at = time.monotonic()
        execution = await wait_until_final(api, execution_id, STOP_TIMEOUT)
        details = await describe(api, execution_id)
        assert execution.status == "Stopped", details
        assert execution.end_time is not None, details
        assert execution.succeed < execution.total, details
        tasks = await api.get_replication_tasks(execution_id, page_size=100)
        copy = next(t for t in tasks if t.id == running.id)
        assert copy.status == "Stopped", details
        print(f"stopped in {time.monotonic() - stopped_at:.1f} s")

        # It stays stopped, and the image never completed at the destination.
        await asyncio.sleep(2)
        assert (await api.get_replication(execution_id)).status == "Stopped"
        assert not dest_has_tag(repository, tag)
        # Stopping a finished execution is fine (Harbor answers 200 too).
        await api.stop_replication(execution_id)

        await api.delete_replication_policy(policy_id)
        await api.delete_registry(registry_id)

    run(test)


def test_policy_update_and_delete_and_a_registry_in_use_cannot_be_deleted():
    async def test(api):
        project = name("crud")
        registry_id = await make_registry(api, name("crud-dest"))
        policy_name = name("crud-policy")
        policy_id = await make_policy(
            api,
            policy_name,
            registry_id,
            project,
            ReplicationTrigger(type="manual"),
        )

        policy = await api.get_replication_policy(policy_id)
        assert policy.id == policy_id
        assert policy.name == policy_name
        assert policy.src_registry.id == 0, policy
        assert policy.dest_registry.id == registry_id, policy
        assert policy.dest_registry.credential.access_secret == SECRET_MASK, policy
        assert policy.trigger.type == "manual", policy
        assert [(f.type, f.value) for f in policy.filters] == [
            ("name", f"{project}/**")
        ], policy
        assert policy.enabled is True and policy.override is True
        listed = await api.get_replication_policies(query=f"name={policy_name}")
        assert [p.id for p in listed] == [policy_id], listed

        # Harbor's way: read it, change it, PUT it back whole (the read-back body,
        # with its registries, times and id, is a valid request).
        policy.description = "changed by harborapi"
        policy.trigger = ReplicationTrigger(
            type="scheduled",
            trigger_settings=ReplicationTriggerSettings(cron="0 0 3 * * *"),
        )
        policy.filters = [
            ReplicationFilter(type="name", value=f"{project}/app"),
            ReplicationFilter(type="tag", value="v*", decoration="excludes"),
        ]
        policy.dest_namespace = "mirror"
        policy.speed = 1024
        policy.enabled = False
        await api.update_replication_policy(policy_id, policy)

        updated = await api.get_replication_policy(policy_id)
        assert updated.name == policy_name
        assert updated.description == "changed by harborapi"
        assert updated.trigger.type == "scheduled", updated
        assert updated.trigger.trigger_settings.cron == "0 0 3 * * *", updated
        filters = [
            (f.type, f.value, f.decoration or "matches") for f in updated.filters
        ]
        assert filters == [
            ("name", f"{project}/app", "matches"),
            ("tag", "v*", "excludes"),
        ], updated
        assert updated.dest_namespace == "mirror"
        assert updated.speed == 1024
        assert updated.enabled is False
        assert updated.dest_registry.id == registry_id
        # A disabled policy cannot be started (412, as in Harbor).
        with pytest.raises(PreconditionFailed):
            await api.start_replication(policy_id)

        # The policy holds the registry: deleting it is refused with 412, and it stays.
        with pytest.raises(PreconditionFailed):
            await api.delete_registry(registry_id)
        assert (await api.get_registry(registry_id)).id == registry_id

        await api.delete_replication_policy(policy_id)
        with pytest.raises(NotFound):
            await api.get_replication_policy(policy_id)
        assert await api.get_replication_policies(query=f"name={policy_name}") == []
        with pytest.raises(NotFound):
            await api.delete_replication_policy(policy_id)

        # Unused now: the registry goes.
        await api.delete_registry(registry_id)
        with pytest.raises(NotFound):
            await api.get_registry(registry_id)

    run(test)
