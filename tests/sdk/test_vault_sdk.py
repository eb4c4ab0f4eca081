"""The official Anthropic Python SDK drives keyswap's vault API unchanged.

Starts the real keyswap binary (KEYSWAP_BIN, default target/debug/keyswap) on a config written
here, with a plain-HTTP recording upstream on 127.0.0.1, and runs every vault and credential call
through `anthropic.Anthropic(base_url=..., api_key=...)`, asserting on the SDK's typed models.
"""

import http.server
import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.request

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsVault
from anthropic.types.beta.vaults import (
    BetaManagedAgentsCredential,
    BetaManagedAgentsEnvironmentVariableAuthResponse,
    BetaManagedAgentsMCPOAuthAuthResponse,
    BetaManagedAgentsStaticBearerAuthResponse,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "sdk-test-admin-key"

CONFIG = """\
# Operator's comment: must survive every API write.
[proxy]
listen = "127.0.0.1:0"
block_private_addresses = false
substitute_over_plain_http = true   # the test upstream speaks plain HTTP

[admin]
listen = "127.0.0.1:0"

[upstream.resolve]
"api.example.test" = "127.0.0.1"
"mcp.example.test" = "127.0.0.1"

[[vaults]]
id = "vlt_seed"
display_name = "Seed"   # kept by hand
"""


class Recorder(http.server.BaseHTTPRequestHandler):
    seen = []

    def do_GET(self):
        Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def keyswap(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keyswap")
    config = folder / "keyswap.toml"
    config.write_text(CONFIG)
    config.chmod(0o600)  # keyswap refuses a config with literal secrets that others can read
    binary = os.environ.get("KEYSWAP_BIN", str(ROOT / "target" / "debug" / "keyswap"))
    env = dict(os.environ, KEYSWAP_ADMIN_KEY=KEY, KEYSWAP_LOG="info")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    proc = subprocess.Popen([binary, "run", "--config", str(config)], env=env, stderr=subprocess.PIPE, text=True)
    addrs = {}
    log = []
    deadline = time.time() + 20
    while len(addrs) < 2 and time.time() < deadline:
        line = proc.stderr.readline()
        log.append(line)
        m = re.search(r"(proxy|admin) listening on (\S+)", line)
        if m:
            addrs[m.group(1)] = m.group(2)
    assert len(addrs) == 2, "".join(log)
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    yield {"proxy": addrs["proxy"], "admin": addrs["admin"], "config": config, "log": log}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def client(keyswap):
    return anthropic.Anthropic(base_url=f"http://{keyswap['admin']}", api_key=KEY, max_retries=0)


def proxied(keyswap, upstream, placeholder):
    """What the upstream received in `x-token` for a request sent through keyswap."""
    before = len(Recorder.seen)
    proxy = urllib.request.ProxyHandler({"http": f"http://{keyswap['proxy']}"})
    request = urllib.request.Request(f"http://api.example.test:{upstream}/", headers={"x-token": placeholder})
    with urllib.request.build_opener(proxy).open(request, timeout=10) as response:
        assert response.status == 200
    return Recorder.seen[before]["x-token"]


def test_vaults_lifecycle(client):
    created = [client.beta.vaults.create(display_name=f"Vault {i}", metadata={"i": str(i)}) for i in range(3)]
    for v in created:
        assert isinstance(v, BetaManagedAgentsVault)
        assert v.type == "vault" and v.id.startswith("vlt_") and len(v.id) == 28
        assert v.archived_at is None and v.created_at is not None
    got = client.beta.vaults.retrieve(created[0].id)
    assert got.display_name == "Vault 0" and got.metadata == {"i": "0"}

    updated = client.beta.vaults.update(created[0].id, display_name="Renamed", metadata={"i": None, "team": "infra"})
    assert updated.display_name == "Renamed" and updated.metadata == {"team": "infra"}

    # limit=1 makes the SDK follow next_page across four pages.
    names = [v.display_name for v in client.beta.vaults.list(limit=1)]
    assert names == ["Vault 2", "Vault 1", "Renamed", "Seed"]
    first = client.beta.vaults.list(limit=2)
    assert len(first.data) == 2 and first.next_page

    archived = client.beta.vaults.archive(created[1].id)
    assert archived.archived_at is not None
    assert created[1].id not in [v.id for v in client.beta.vaults.list()]
    assert created[1].id in [v.id for v in client.beta.vaults.list(include_archived=True)]

    deleted = client.beta.vaults.delete(created[2].id)
    assert deleted.id == created[2].id and deleted.type == "vault_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.retrieve(created[2].id)


def test_environment_variable_credential_update_reaches_the_proxy_and_the_file(client, keyswap, upstream):
    vault = client.beta.vaults.create(display_name="Env")
    cred = client.beta.vaults.credentials.create(
        vault.id,
        display_name="API token",
        auth={
            "type": "environment_variable",
            "secret_name": "API_TOKEN",
            "secret_value": "SECRET_sdk_1",
            "networking": {"type": "limited", "allowed_hosts": ["api.example.test"]},
        },
    )
    assert isinstance(cred, BetaManagedAgentsCredential)
    assert isinstance(cred.auth, BetaManagedAgentsEnvironmentVariableAuthResponse)
    assert cred.auth.secret_name == "API_TOKEN"
    assert cred.auth.networking.type == "limited"
    assert cred.auth.injection_location.header is True and cred.auth.injection_location.body is False
    assert "SECRET" not in cred.to_json()
    placeholder = f"ks-ph-{cred.id}"
    assert proxied(keyswap, upstream, placeholder) == "SECRET_sdk_1"

    updated = client.beta.vaults.credentials.update(
        cred.id, vault_id=vault.id, auth={"type": "environment_variable", "secret_value": "SECRET_sdk_2"}
    )
    assert updated.id == cred.id and "SECRET" not in updated.to_json()
    assert proxied(keyswap, upstream, placeholder) == "SECRET_sdk_2"
    text = keyswap["config"].read_text()
    assert 'secret_value = "SECRET_sdk_2"' in text
    assert text.startswith("# Operator's comment: must survive every API write.\n")
    assert 'display_name = "Seed"   # kept by hand' in text
    assert "SECRET_sdk_1" not in text

    listed = list(client.beta.vaults.credentials.list(vault.id, limit=1))
    assert [c.id for c in listed] == [cred.id]
    archived = client.beta.vaults.credentials.archive(cred.id, vault_id=vault.id)
    assert archived.archived_at is not None
    assert proxied(keyswap, upstream, placeholder) == placeholder, "archived credentials are not substituted"
    assert list(client.beta.vaults.credentials.list(vault.id)) == []
    assert len(list(client.beta.vaults.credentials.list(vault.id, include_archived=True))) == 1
    deleted = client.beta.vaults.credentials.delete(cred.id, vault_id=vault.id)
    assert deleted.type == "vault_credential_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve(cred.id, vault_id=vault.id)
    assert not any("SECRET_sdk" in line for line in keyswap["log"])


def test_static_bearer_and_mcp_oauth_credentials(client):
    vault = client.beta.vaults.create(display_name="MCP")
    bearer = client.beta.vaults.credentials.create(
        vault.id,
        auth={"type": "static_bearer", "mcp_server_url": "https://mcp.example.test/mcp", "token": "SECRET_bearer"},
    )
    assert isinstance(bearer.auth, BetaManagedAgentsStaticBearerAuthResponse)
    assert bearer.auth.mcp_server_url == "https://mcp.example.test/mcp"
    bearer = client.beta.vaults.credentials.update(
        bearer.id, vault_id=vault.id, auth={"type": "static_bearer", "token": "SECRET_bearer_2"}, metadata={"k": "v"}
    )
    assert bearer.metadata == {"k": "v"}

    oauth = client.beta.vaults.credentials.create(
        vault.id,
        display_name="OAuth",
        auth={
            "type": "mcp_oauth",
            "mcp_server_url": "https://mcp.example.test/",
            "access_token": "SECRET_access",
            "expires_at": "2030-01-01T00:00:00Z",
            "refresh": {
                "client_id": "client",
                "refresh_token": "SECRET_refresh",
                "token_endpoint": "https://auth.example.test/token",
                "token_endpoint_auth": {"type": "client_secret_basic", "client_secret": "SECRET_client"},
                "scope": "read",
            },
        },
    )
    assert isinstance(oauth.auth, BetaManagedAgentsMCPOAuthAuthResponse)
    assert oauth.auth.refresh.client_id == "client"
    assert oauth.auth.refresh.token_endpoint_auth.type == "client_secret_basic"
    assert "SECRET" not in oauth.to_json()
    oauth = client.beta.vaults.credentials.update(
        oauth.id, vault_id=vault.id, auth={"type": "mcp_oauth", "access_token": "SECRET_access_2", "refresh": {"scope": "write"}}
    )
    assert oauth.auth.refresh.scope == "write"
    # Nothing listens on mcp.example.test:443 (127.0.0.1 here): the probe cannot connect.
    validation = client.beta.vaults.credentials.mcp_oauth_validate(oauth.id, vault_id=vault.id)
    assert validation.type == "vault_credential_validation"
    assert (validation.vault_id, validation.credential_id) == (vault.id, oauth.id)
    assert validation.status == "unknown" and validation.has_refresh_token
    assert validation.mcp_probe.method == "initialize" and validation.mcp_probe.http_response is None
    assert validation.refresh is None
    got = client.beta.vaults.credentials.retrieve(oauth.id, vault_id=vault.id)
    assert got.display_name == "OAuth"
    kinds = sorted(c.auth.type for c in client.beta.vaults.credentials.list(vault.id))
    assert kinds == ["mcp_oauth", "static_bearer"]


def test_errors_are_typed(client):
    vault = client.beta.vaults.create(display_name="Errors")
    cred = client.beta.vaults.credentials.create(
        vault.id,
        auth={"type": "environment_variable", "secret_name": "E", "secret_value": "v", "networking": {"type": "unrestricted"}},
    )
    with pytest.raises(anthropic.BadRequestError):
        client.beta.vaults.credentials.update(cred.id, vault_id=vault.id, auth={"type": "static_bearer", "token": "t"})
    with pytest.raises(anthropic.BadRequestError):
        client.beta.vaults.credentials.update(
            cred.id,
            vault_id=vault.id,
            auth={"type": "environment_variable", "networking": {"type": "limited", "allowed_hosts": ["a.test:443"]}},
        )
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve("vcrd_missing", vault_id=vault.id)
    bad = anthropic.Anthropic(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.beta.vaults.list()
