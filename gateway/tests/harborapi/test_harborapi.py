"""Berth's management API driven by the real Harbor client, harborapi (PyPI, pinned).

Harbor's users automate through harborapi; these tests call it exactly as they would,
so every request shape, header, pagination link and response model is the client's, not
ours. Run by gateway/tests/api/harborapi.rs against a fresh gateway, or by hand:

    HARBOR_URL=http://127.0.0.1:5000/api/v2.0 HARBOR_USERNAME=admin HARBOR_PASSWORD=… \
    HARBOR_PROJECT=team HARBOR_REPOSITORY=app/web HARBOR_TAG=1.0 \
        ./var/venv/bin/python -m pytest gateway/tests/harborapi -q

HARBOR_PROJECT/HARBOR_REPOSITORY:HARBOR_TAG must be an image already pushed (the Rust
side pushes one). Every other object is created here under a unique prefix, so the suite
can run against a server that already holds data.

No asyncio plugin: each test is synchronous and runs its coroutine with asyncio.run, so
every test gets its own event loop and its own client.
"""

import asyncio
import base64
import os
import re
import uuid

import httpx
import pytest
from harborapi import HarborAsyncClient
from harborapi.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    UnprocessableEntity,
)
from harborapi.models import (
    Access,
    ProjectMetadata,
    ProjectReq,
    Registry,
    RegistryCredential,
    RegistryPing,
    RegistryUpdate,
    RobotCreate,
    RobotPermission,
    Tag,
    UserCreationReq,
)


def _env(name):
    value = os.environ.get(name)
    if not value:
        # A missing setting is a broken run, not a reason to skip.
        raise RuntimeError(f"{name} must be set (see the docstring of {__file__})")
    return value


URL = _env("HARBOR_URL").rstrip("/")
USERNAME = _env("HARBOR_USERNAME")
PASSWORD = _env("HARBOR_PASSWORD")
PROJECT = _env("HARBOR_PROJECT")
REPOSITORY = _env("HARBOR_REPOSITORY")
TAG = _env("HARBOR_TAG")
# The registry side of the same server: HARBOR_URL without its /api/v2.0.
REGISTRY = re.sub(r"/api/v\d+\.\d+$", "", URL)
# Names created by this run start with it, so reruns never collide.
PREFIX = os.environ.get("HARBOR_PREFIX") or f"hapi{uuid.uuid4().hex[:8]}"
# Meets Harbor's password rule: 8+ characters, upper, lower and a digit.
USER_PASSWORD = "Member-Passw0rd"


def client(username=USERNAME, secret=PASSWORD):
    # retry=None: a dead server must fail the test now, not after a minute of backoff.
    return HarborAsyncClient(
        url=URL, username=username, secret=secret, timeout=60.0, retry=None
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


async def all_audit_logs(api):
    # page_size 100 (the maximum): harborapi follows the Link header to the end.
    return await api.get_audit_logs(page_size=100)


def count_logs(logs, operation, resource_type, resource):
    return sum(
        1
        for log in logs
        if log.operation == operation
        and log.resource_type == resource_type
        and log.resource == resource
    )


async def make_project(api, project_name, public=False):
    await api.create_project(
        ProjectReq(
            project_name=project_name,
            metadata=ProjectMetadata(public="true" if public else "false"),
        )
    )
    return await api.get_project(project_name)


async def make_user(api, username):
    location = await api.create_user(
        UserCreationReq(
            username=username,
            email=f"{username}@example.com",
            realname=f"Test {username}",
            password=USER_PASSWORD,
            comment="harborapi test",
        )
    )
    assert re.fullmatch(r"/api/v2\.0/users/\d+", location), location
    return int(location.rsplit("/", 1)[1])


def registry_login(username, secret):
    """What `docker login` does: the /v2/ challenge, then the token service with Basic
    credentials and a pull scope on HARBOR_PROJECT/HARBOR_REPOSITORY. Returns the
    token service's status."""
    with httpx.Client(timeout=60.0) as http:
        challenge = http.get(f"{REGISTRY}/v2/")
        assert challenge.status_code == 401, challenge.text
        header = challenge.headers["www-authenticate"]
        assert header.startswith("Bearer "), header
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        basic = base64.b64encode(f"{username}:{secret}".encode()).decode()
        response = http.get(
            params["realm"],
            params={
                "service": params["service"],
                "scope": f"repository:{PROJECT}/{REPOSITORY}:pull",
            },
            headers={"Authorization": f"Basic {basic}"},
        )
        if response.status_code == 200:
            assert response.json()["token"], response.text
        return response.status_code


# ------------------------------------------------------------------ system


def test_ping_health_and_system_info():
    async def test(api):
        assert "pong" in (await api.ping()).lower()
        health = await api.health_check()
        assert health.status == "healthy", health
        assert health.components, health
        assert all(c.status == "healthy" for c in health.components), health
        info = await api.get_system_info()
        assert info.auth_mode == "db_auth", info

    run(test)


# ------------------------------------------------------------------ projects


def test_project_create_get_exists_update():
    async def test(api):
        project_name = name("proj")
        assert not await api.project_exists(project_name)
        location = await api.create_project(
            ProjectReq(project_name=project_name, metadata=ProjectMetadata(public="false"))
        )
        # harborapi asks for the name in Location (X-Resource-Name-In-Location).
        assert location == f"/api/v2.0/projects/{project_name}", location
        assert await api.project_exists(project_name)

        by_name = await api.get_project(project_name)
        assert by_name.name == project_name
        assert by_name.metadata.public == "false"
        assert by_name.owner_name == USERNAME
        assert by_name.repo_count == 0
        assert by_name.creation_time is not None
        by_id = await api.get_project(by_name.project_id)
        assert by_id.name == project_name
        assert by_id.project_id == by_name.project_id

        # harborapi sends only the fields set: a partial update of one metadata key.
        await api.update_project(
            project_name, ProjectReq(metadata=ProjectMetadata(public="true"))
        )
        updated = await api.get_project(by_name.project_id)
        assert updated.metadata.public == "true"
        assert updated.name == project_name

        logs = await all_audit_logs(api)
        assert count_logs(logs, "create", "project", project_name) == 1, logs
        assert count_logs(logs, "update", "project", project_name) == 1, logs

    run(test)


def test_projects_list_follows_pagination():
    async def test(api):
        stem = name("page")
        names = [f"{stem}-{i:02}" for i in range(12)]
        for project_name in names:
            await api.create_project(ProjectReq(project_name=project_name))
        api.response_log.clear()
        listed = await api.get_projects(name=stem, page_size=5)
        assert sorted(p.name for p in listed) == names
        # 12 projects at 5 a page: harborapi followed rel="next" twice.
        gets = [e for e in api.response_log if e.method == "GET"]
        assert len(gets) == 3, gets
        assert all("name=" in str(e.url) for e in gets), gets
        # A page size above Harbor's maximum is refused, not clamped.
        with pytest.raises(UnprocessableEntity):
            await api.get_projects(page_size=101)

    run(test)


def test_project_errors():
    async def test(api):
        with pytest.raises(NotFound):
            await api.get_project(name("absent"))
        with pytest.raises(NotFound):
            await api.get_project(2_000_000_000)
        with pytest.raises(BadRequest):
            await api.create_project(ProjectReq(project_name="Bad Name!"))
        with pytest.raises(NotFound):
            await api.delete_project(name("absent"))

    run(test)


def test_wrong_credentials_are_unauthorized():
    async def test(api):
        wrong = client(USERNAME, PASSWORD + "-wrong")
        try:
            with pytest.raises(Unauthorized):
                await wrong.get_current_user()
        finally:
            await wrong.client.aclose()
        me = await api.get_current_user()
        assert me.username == USERNAME
        assert me.sysadmin_flag is True

    run(test)


def test_delete_project_refused_while_it_has_repositories():
    async def test(api):
        with pytest.raises(PreconditionFailed):
            await api.delete_project(PROJECT)
        assert await api.project_exists(PROJECT)

        empty = name("empty")
        created = await make_project(api, empty)
        await api.delete_project(created.project_id)
        assert not await api.project_exists(empty)
        with pytest.raises(NotFound):
            await api.get_project(empty)
        logs = await all_audit_logs(api)
        assert count_logs(logs, "delete", "project", empty) == 1, logs

    run(test)


# ------------------------------------------------------------------ members


def test_project_members():
    async def test(api):
        project_name = name("members")
        await make_project(api, project_name)
        username = name("dev")
        user_id = await make_user(api, username)

        location = await api.add_project_member_user(project_name, username, 2)
        assert re.fullmatch(
            rf"/api/v2\.0/projects/{re.escape(project_name)}/members/\d+", location
        ), location
        members = await api.get_project_members(project_name)
        mine = [m for m in members if m.entity_name == username]
        assert len(mine) == 1, members
        member = mine[0]
        assert member.role_id == 2
        assert member.entity_type == "u"
        assert member.entity_id == user_id
        assert location.endswith(f"/{member.id}")

        await api.update_project_member_role(project_name, member.id, 4)
        again = await api.get_project_member(project_name, member.id)
        assert again.role_id == 4, again
        filtered = await api.get_project_members(project_name, entity_name=username)
        assert [m.id for m in filtered] == [member.id]

        await api.remove_project_member(project_name, member.id)
        members = await api.get_project_members(project_name)
        assert all(m.entity_name != username for m in members), members
        with pytest.raises(NotFound):
            await api.get_project_member(project_name, member.id)

        logs = await all_audit_logs(api)
        about = [
            log
            for log in logs
            if log.resource_type == "member" and username in (log.resource or "")
        ]
        operations = sorted(log.operation for log in about)
        assert operations == ["create", "delete", "update"], about

    run(test)


# ------------------------------------------------------------------ robots


def robot_request(robot_name, project_name, actions=("pull", "push")):
    return RobotCreate(
        name=robot_name,
        description="created by the harborapi suite",
        level="project",
        duration=-1,
        permissions=[
            RobotPermission(
                kind="project",
                namespace=project_name,
                access=[Access(resource="repository", action=a) for a in actions],
            )
        ],
    )


def test_robot_lifecycle():
    async def test(api):
        project = await api.get_project(PROJECT)
        robot_name = name("ci")
        created = await api.create_robot(robot_request(robot_name, PROJECT))
        full_name = f"robot${PROJECT}+{robot_name}"
        assert created.name == full_name, created
        assert created.secret, created
        assert created.expires_at == -1, created
        assert registry_login(full_name, created.secret) == 200

        robots = await api.get_robots(
            query=f"Level=project,ProjectID={project.project_id}"
        )
        listed = [r for r in robots if r.id == created.id]
        assert len(listed) == 1, robots
        robot = listed[0]
        assert robot.name == full_name
        assert robot.level == "project"
        assert not robot.secret, "a listed robot must not carry its secret"
        assert robot.permissions[0].namespace == PROJECT
        assert {a.action for a in robot.permissions[0].access} == {"pull", "push"}

        # An empty secret asks the server for a new one; the old one stops working.
        refreshed = await api.refresh_robot_secret(created.id, "")
        assert refreshed.secret and refreshed.secret != created.secret
        assert registry_login(full_name, created.secret) == 401
        assert registry_login(full_name, refreshed.secret) == 200

        await api.delete_robot(created.id)
        with pytest.raises(NotFound):
            await api.get_robot(created.id)
        assert registry_login(full_name, refreshed.secret) == 401

        logs = await all_audit_logs(api)
        assert count_logs(logs, "create", "robot", full_name) == 1, logs
        assert count_logs(logs, "delete", "robot", full_name) == 1, logs

    run(test)


def test_guest_cannot_create_a_robot():
    async def test(api):
        project_name = name("guarded")
        await make_project(api, project_name)
        username = name("guest")
        await make_user(api, username)
        await api.add_project_member_user(project_name, username, 3)

        guest = client(username, USER_PASSWORD)
        try:
            assert (await guest.get_project(project_name)).name == project_name
            with pytest.raises(Forbidden):
                await guest.create_robot(robot_request(name("sneaky"), project_name))
        finally:
            await guest.client.aclose()

    run(test)


# ------------------------------------------------------------------ repositories, artifacts, tags


def test_repositories():
    async def test(api):
        full = f"{PROJECT}/{REPOSITORY}"
        in_project = await api.get_repositories(project_name=PROJECT)
        assert full in [r.name for r in in_project], in_project
        repository = next(r for r in in_project if r.name == full)
        # harborapi splits the full name on the first slash.
        assert repository.project_name == PROJECT
        assert repository.base_name == REPOSITORY
        assert repository.artifact_count >= 1
        everywhere = await api.get_repositories()
        assert full in [r.name for r in everywhere]
        # The path segment is double URL-encoded by harborapi (app/web → app%252Fweb).
        one = await api.get_repository(PROJECT, REPOSITORY)
        assert one.name == full

    run(test)


def test_artifacts_and_tags():
    async def test(api):
        artifacts = await api.get_artifacts(PROJECT, REPOSITORY, with_tag=True)
        tagged = [a for a in artifacts if TAG in [t.name for t in a.tags or []]]
        assert len(tagged) == 1, artifacts
        artifact = tagged[0]
        assert artifact.digest.startswith("sha256:"), artifact
        assert artifact.size and artifact.size > 0

        tags = await api.get_artifact_tags(PROJECT, REPOSITORY, TAG)
        assert TAG in [t.name for t in tags]

        extra = name("extra")
        await api.create_artifact_tag(PROJECT, REPOSITORY, artifact.digest, Tag(name=extra))
        names = [t.name for t in await api.get_artifact_tags(PROJECT, REPOSITORY, artifact.digest)]
        assert sorted(names) == sorted([TAG, extra])
        by_new_tag = await api.get_artifact(PROJECT, REPOSITORY, extra)
        assert by_new_tag.digest == artifact.digest

        await api.delete_artifact_tag(PROJECT, REPOSITORY, artifact.digest, extra)
        names = [t.name for t in await api.get_artifact_tags(PROJECT, REPOSITORY, artifact.digest)]
        assert names == [TAG]
        with pytest.raises(NotFound):
            await api.get_artifact(PROJECT, REPOSITORY, extra)

        resource = f"{PROJECT}/{REPOSITORY}:{extra}"
        logs = await all_audit_logs(api)
        assert count_logs(logs, "create", "tag", resource) == 1, logs
        assert count_logs(logs, "delete", "tag", resource) == 1, logs

    run(test)


def test_artifact_errors():
    async def test(api):
        with pytest.raises(NotFound):
            await api.get_artifacts(PROJECT, name("no-such-repo"))
        with pytest.raises(NotFound):
            await api.get_artifact_tags(PROJECT, REPOSITORY, name("no-such-tag"))

    run(test)


# ------------------------------------------------------------------ registries


def test_registry_lifecycle():
    """A remote registry endpoint: this very server, as a peer with token auth."""

    async def test(api):
        registry_name = name("peer")
        location = await api.create_registry(
            Registry(
                name=registry_name,
                type="harbor",
                url=REGISTRY + "/",
                description="this Berth, as its own peer",
                insecure=False,
                credential=RegistryCredential(
                    type="basic", access_key=USERNAME, access_secret=PASSWORD
                ),
                # Berth's extras ride along as extra fields of Harbor's model.
                rate_limit_per_second=5.0,
                max_concurrency=2,
            )
        )
        assert re.fullmatch(r"/api/v2\.0/registries/\d+", location), location
        registry_id = int(location.rsplit("/", 1)[1])

        registry = await api.get_registry(registry_id)
        assert registry.name == registry_name
        assert registry.type == "harbor"
        assert registry.url == REGISTRY, registry
        assert registry.insecure is False
        assert registry.credential.type == "basic"
        assert registry.credential.access_key == USERNAME
        assert registry.credential.access_secret == "*****", registry
        # Pinged at creation through the token flow, with the admin's credential.
        assert registry.status == "healthy", registry
        assert registry.creation_time is not None
        assert registry.rate_limit_per_second == 5.0
        assert registry.max_concurrency == 2

        listed = await api.get_registries(query=f"name={registry_name}")
        assert [r.id for r in listed] == [registry_id], listed
        for r in await api.get_registries():
            assert r.credential.access_secret in ("*****", ""), r

        await api.check_registry_status(RegistryPing(id=registry_id))
        with pytest.raises(BadRequest):
            await api.check_registry_status(
                RegistryPing(id=registry_id, access_secret=PASSWORD + "-wrong")
            )
        with pytest.raises(BadRequest):
            await api.check_registry_status(
                RegistryPing(type="docker-registry", url="http://127.0.0.1:1")
            )

        await api.update_registry(
            registry_id, RegistryUpdate(description="updated", access_secret="*****")
        )
        updated = await api.get_registry(registry_id)
        assert updated.description == "updated"
        assert updated.status == "healthy"

        info = await api.get_registry_info(registry_id)
        assert info.type == "harbor"
        assert info.supported_triggers == ["manual", "scheduled"]
        assert [f.type for f in info.supported_resource_filters] == [
            "name",
            "tag",
            "resource",
        ]
        adapters = await api.get_registry_adapters()
        assert {"docker-hub", "docker-registry", "harbor"} <= set(adapters), adapters
        providers = await api.get_registry_providers()
        hub = providers.root["docker-hub"].endpoint_pattern
        assert hub.endpoints[0].value == "https://hub.docker.com", providers

        with pytest.raises(Conflict):
            await api.create_registry(
                Registry(name=registry_name, type="docker-registry", url=REGISTRY)
            )
        with pytest.raises(BadRequest):
            await api.create_registry(
                Registry(name=name("bad"), type="docker-registry", url="ftp://x")
            )

        await api.delete_registry(registry_id)
        with pytest.raises(NotFound):
            await api.get_registry(registry_id)

        logs = await all_audit_logs(api)
        assert count_logs(logs, "create", "registry", registry_name) == 1, logs
        assert count_logs(logs, "update", "registry", registry_name) == 1, logs
        assert count_logs(logs, "delete", "registry", registry_name) == 1, logs
        assert all(PASSWORD not in (log.resource or "") for log in logs)

    run(test)


def test_registries_are_for_system_administrators():
    async def test(api):
        username = name("nosys")
        await make_user(api, username)
        user = client(username, USER_PASSWORD)
        try:
            with pytest.raises(Forbidden):
                await user.get_registries()
            with pytest.raises(Forbidden):
                await user.create_registry(
                    Registry(name=name("sneaky"), type="docker-registry", url=REGISTRY)
                )
        finally:
            await user.client.aclose()

    run(test)


# ------------------------------------------------------------------ replication policies

# Imported here rather than at the top: this section is appended by its own author.
from harborapi.models import (  # noqa: E402
    ReplicationFilter,
    ReplicationPolicy,
    ReplicationTrigger,
    ReplicationTriggerSettings,
)

# Nothing listens here: policies are stored without contacting their registries.
UNREACHABLE = "http://127.0.0.1:1"


async def make_unreachable_registry(api, registry_name):
    location = await api.create_registry(
        Registry(name=registry_name, type="docker-registry", url=UNREACHABLE)
    )
    return int(location.rsplit("/", 1)[1])


async def replicate_schedules(api):
    """The `replicate` schedules Berth keeps for scheduled policies, by policy id."""
    schedules = await api.get("/schedules", params={"page_size": 100})
    return {
        s["vendor_id"]: s for s in schedules if s.get("vendor_type") == "REPLICATE"
    }


def test_replication_policy_lifecycle():
    async def test(api):
        registry_id = await make_unreachable_registry(api, name("mirror-target"))
        policy_name = name("push")
        location = await api.create_replication_policy(
            ReplicationPolicy(
                name=policy_name,
                description="library to the mirror",
                dest_registry=Registry(id=registry_id),
                dest_namespace="mirror",
                dest_namespace_replace_count=1,
                trigger=ReplicationTrigger(
                    type="scheduled",
                    trigger_settings=ReplicationTriggerSettings(cron="0 0 3 * * *"),
                ),
                filters=[
                    ReplicationFilter(type="name", value="library/**"),
                    ReplicationFilter(type="tag", value="v*", decoration="excludes"),
                ],
                replicate_deletion=True,
                override=True,
                enabled=True,
                speed=1024,
                copy_by_chunk=False,
            )
        )
        assert re.fullmatch(r"/api/v2\.0/replication/policies/\d+", location), location
        policy_id = int(location.rsplit("/", 1)[1])

        policy = await api.get_replication_policy(policy_id)
        assert policy.id == policy_id
        assert policy.name == policy_name
        assert policy.description == "library to the mirror"
        # This registry is Harbor's "Local" (id 0); the remote one is shown whole.
        assert policy.src_registry.id == 0, policy.src_registry
        assert policy.src_registry.name == "Local"
        assert policy.dest_registry.id == registry_id
        assert policy.dest_registry.name == name("mirror-target")
        assert policy.dest_registry.url == UNREACHABLE
        assert policy.dest_namespace == "mirror"
        assert policy.dest_namespace_replace_count == 1
        assert policy.trigger.type == "scheduled"
        assert policy.trigger.trigger_settings.cron == "0 0 3 * * *"
        assert [(f.type, f.value, f.decoration) for f in policy.filters] == [
            ("name", "library/**", None),
            ("tag", "v*", "excludes"),
        ]
        assert policy.replicate_deletion is True
        assert policy.deletion is True
        assert policy.override is True
        assert policy.enabled is True
        assert policy.speed == 1024
        assert policy.copy_by_chunk is False
        assert policy.creation_time is not None
        # An enabled scheduled policy has its schedule.
        schedule = (await replicate_schedules(api))[policy_id]
        assert schedule["cron"] == "0 0 3 * * *", schedule

        listed = await api.get_replication_policies(query=f"name={policy_name}")
        assert [p.id for p in listed] == [policy_id], listed
        listed = await api.get_replication_policies(name=name("pu"))
        assert policy_id in [p.id for p in listed], listed

        # The policy as read, changed and sent back: the local side's id 0 is "unset".
        policy.description = "paused"
        policy.enabled = False
        await api.update_replication_policy(policy_id, policy)
        updated = await api.get_replication_policy(policy_id)
        assert updated.description == "paused"
        assert updated.enabled is False
        assert updated.dest_registry.id == registry_id
        assert updated.filters == policy.filters
        assert policy_id not in await replicate_schedules(api)

        with pytest.raises(Conflict):
            await api.create_replication_policy(
                ReplicationPolicy(
                    name=policy_name, dest_registry=Registry(id=registry_id)
                )
            )
        with pytest.raises(NotFound):
            await api.create_replication_policy(
                ReplicationPolicy(
                    name=name("nowhere"), dest_registry=Registry(id=registry_id + 1000)
                )
            )
        with pytest.raises(BadRequest):
            await api.create_replication_policy(
                ReplicationPolicy(
                    name=name("both"),
                    src_registry=Registry(id=registry_id),
                    dest_registry=Registry(id=registry_id),
                )
            )
        with pytest.raises(BadRequest):
            await api.create_replication_policy(
                ReplicationPolicy(
                    name=name("badcron"),
                    dest_registry=Registry(id=registry_id),
                    trigger=ReplicationTrigger(
                        type="scheduled",
                        trigger_settings=ReplicationTriggerSettings(cron="not a cron"),
                    ),
                )
            )
        with pytest.raises(BadRequest):
            await api.create_replication_policy(
                ReplicationPolicy(
                    name=name("badfilter"),
                    dest_registry=Registry(id=registry_id),
                    filters=[ReplicationFilter(type="colour", value="red")],
                )
            )

        await api.delete_replication_policy(policy_id)
        with pytest.raises(NotFound):
            await api.get_replication_policy(policy_id)
        with pytest.raises(NotFound):
            await api.delete_replication_policy(policy_id)
        # Its registry is free again.
        await api.delete_registry(registry_id)

        logs = await all_audit_logs(api)
        for operation in ("create", "update", "delete"):
            assert (
                count_logs(logs, operation, "replication_policy", policy_name) == 1
            ), (operation, logs)

    run(test)


def test_pull_policies_name_their_source():
    async def test(api):
        registry_id = await make_unreachable_registry(api, name("upstream"))
        location = await api.create_replication_policy(
            ReplicationPolicy(
                name=name("pull"),
                src_registry=Registry(id=registry_id),
                dest_namespace=PROJECT,
                trigger=ReplicationTrigger(type="manual"),
                filters=[ReplicationFilter(type="resource", value="image")],
                enabled=True,
            )
        )
        policy_id = int(location.rsplit("/", 1)[1])
        try:
            policy = await api.get_replication_policy(policy_id)
            assert policy.src_registry.id == registry_id
            assert policy.dest_registry.id == 0
            assert policy.dest_registry.name == "Local"
            assert policy.dest_namespace_replace_count == -1
            assert policy.trigger.type == "manual"
            pulls = await api.get_replication_policies(query="dest_registry_id=0")
            assert policy_id in [p.id for p in pulls], pulls
        finally:
            await api.delete_replication_policy(policy_id)
            await api.delete_registry(registry_id)

    run(test)


def test_replication_policies_are_for_system_administrators():
    async def test(api):
        username = name("norepl")
        await make_user(api, username)
        user = client(username, USER_PASSWORD)
        try:
            with pytest.raises(Forbidden):
                await user.get_replication_policies()
            with pytest.raises(Forbidden):
                await user.create_replication_policy(
                    ReplicationPolicy(name=name("sneaky"), dest_registry=Registry(id=1))
                )
        finally:
            await user.client.aclose()

    run(test)


# ------------------------------------------------------------------ replication executions

# No worker runs behind this gateway: a started execution keeps its planning task
# pending until it is stopped, which is what these calls need.


async def make_manual_policy(api, policy_name, registry_id, enabled=True):
    location = await api.create_replication_policy(
        ReplicationPolicy(
            name=policy_name,
            dest_registry=Registry(id=registry_id),
            trigger=ReplicationTrigger(type="manual"),
            enabled=enabled,
        )
    )
    return int(location.rsplit("/", 1)[1])


def test_replication_execution_lifecycle():
    async def test(api):
        registry_id = await make_unreachable_registry(api, name("exec-target"))
        policy_id = await make_manual_policy(api, name("exec"), registry_id)
        disabled_id = await make_manual_policy(
            api, name("exec-off"), registry_id, enabled=False
        )
        try:
            location = await api.start_replication(policy_id)
            assert re.fullmatch(
                r"/api/v2\.0/replication/executions/\d+", location
            ), location
            execution_id = int(location.rsplit("/", 1)[1])

            execution = await api.get_replication(execution_id)
            assert execution.id == execution_id
            assert execution.policy_id == policy_id
            assert execution.status == "InProgress", execution
            assert execution.trigger == "manual"
            assert execution.start_time is not None
            assert execution.end_time is None
            assert (execution.total, execution.in_progress) == (1, 1), execution
            assert (execution.failed, execution.succeed, execution.stopped) == (0, 0, 0)

            listed = await api.get_replications(policy_id=policy_id)
            assert [e.id for e in listed] == [execution_id], listed
            listed = await api.get_replications(
                policy_id=policy_id, status="InProgress", trigger="manual"
            )
            assert [e.id for e in listed] == [execution_id], listed
            assert await api.get_replications(policy_id=policy_id, status="Failed") == []
            assert (
                await api.get_replications(policy_id=policy_id, trigger="scheduled")
                == []
            )

            # The planning task, the only one until a worker plans the copies.
            tasks = await api.get_replication_tasks(execution_id)
            assert len(tasks) == 1, tasks
            assert tasks[0].execution_id == execution_id
            assert tasks[0].status == "Pending"
            assert tasks[0].operation == "plan"
            assert await api.get_replication_tasks(execution_id, status="Failed") == []
            log = await api.get_replication_task_log(execution_id, tasks[0].id)
            assert log == "", log

            await api.stop_replication(execution_id)
            stopped = await api.get_replication(execution_id)
            assert stopped.status == "Stopped", stopped
            assert stopped.end_time is not None
            assert stopped.stopped == 1
            listed = await api.get_replications(policy_id=policy_id, status="Stopped")
            assert [e.id for e in listed] == [execution_id], listed
            tasks = await api.get_replication_tasks(execution_id, status="Stopped")
            assert len(tasks) == 1, tasks
            # Stopping a finished execution is harmless, as in Harbor.
            await api.stop_replication(execution_id)

            with pytest.raises(PreconditionFailed):
                await api.start_replication(disabled_id)
            with pytest.raises(NotFound):
                await api.start_replication(disabled_id + 100000)
            with pytest.raises(NotFound):
                await api.get_replication(execution_id + 100000)
            with pytest.raises(NotFound):
                await api.get_replication_tasks(execution_id + 100000)
            with pytest.raises(NotFound):
                await api.get_replication_task_log(execution_id, tasks[0].id + 100000)
            with pytest.raises(NotFound):
                await api.stop_replication(execution_id + 100000)
        finally:
            # Stopped executions do not hold their policy back.
            await api.delete_replication_policy(policy_id)
            await api.delete_replication_policy(disabled_id)
            await api.delete_registry(registry_id)

    run(test)


def test_replication_executions_are_for_system_administrators():
    async def test(api):
        username = name("noexec")
        await make_user(api, username)
        user = client(username, USER_PASSWORD)
        try:
            with pytest.raises(Forbidden):
                await user.get_replications()
            with pytest.raises(Forbidden):
                await user.start_replication(1)
            with pytest.raises(Forbidden):
                await user.stop_replication(1)
        finally:
            await user.client.aclose()

    run(test)
