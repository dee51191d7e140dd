"""The admin routes: a user's export and erasure over HTTP, behind their own token."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xray_pipeline.api.main import create_app
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.fleet.landing import land, landed_files
from xray_pipeline.core.ingest.oneshot import ingest_files

ADMIN = "admin-token-for-tests"
LOG = (
    "2024/05/01 10:00:00 from 192.0.2.66:1 accepted tcp:a.example:443 [in >> out] "
    "email: victim@example.org\n"
    "2024/05/01 10:00:01 from 192.0.2.7:1 accepted tcp:b.example:443 [in >> out] email: bob\n"
)


@pytest.fixture
def setup(fresh_db_url: str, tmp_path: Path):
    landing = tmp_path / "landed"
    land(landing, "n1", "64:7:abc", "/var/log/xray/access.log", 0, LOG.encode())
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(landing):
            ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20, node=node)
    return fresh_db_url, landing


def client_for(url: str, landing: Path, **options) -> TestClient:
    return TestClient(create_app(url, landing_dir=landing, **options))


def test_admin_routes_are_off_without_their_token(setup):
    url, landing = setup
    with client_for(url, landing, token="api-token") as c:
        response = c.get(
            "/api/admin/users/bob/export", headers={"Authorization": "Bearer api-token"}
        )
    assert response.status_code == 403 and "[api] admin_token" in response.json()["detail"]


def test_export_and_forget_over_http(setup):
    url, landing = setup
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with client_for(url, landing, token="api-token", admin_token=ADMIN) as c:
        wrong = c.get("/api/admin/users/bob/export", headers={"Authorization": "Bearer api-token"})
        assert wrong.status_code == 401  # the API token is not the admin token
        exported = c.get("/api/admin/users/victim@example.org/export", headers=headers)
        assert exported.status_code == 200
        assert exported.json()["found"] and exported.json()["log_rows_by_day"][0]["rows"] == 1
        unconfirmed = c.post("/api/admin/users/victim@example.org/forget", headers=headers,
                             params={"confirm": "bob"})  # fmt: skip
        assert unconfirmed.status_code == 422 and "confirm" in unconfirmed.text
        done = c.post(
            "/api/admin/users/victim@example.org/forget",
            headers=headers,
            params={"confirm": "victim@example.org"},
        )
        assert done.status_code == 200
        assert done.json()["erased"]["logs"] == 1 and done.json()["landed_lines"] == 1
    with connect(url) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM users")]
        rows = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert emails == ["bob"] and rows == 1
    assert b"victim" not in b"".join(p.read_bytes() for p, _ in landed_files(landing))
