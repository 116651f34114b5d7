"""Airflow's REST API on the distributed stack refuses callers without a valid token."""

from __future__ import annotations

import pytest
import requests

from tests.service.conftest import ADMIN_USER, DAG_ID, Stack

pytestmark = [pytest.mark.service, pytest.mark.slow]

REFUSED = (401, 403)
BAD_TOKENS = {
    "garbage": "Bearer not-a-jwt",
    "forged": "Bearer eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJBRE1JTiJ9.c2lnbmF0dXJl",
    "empty": "Bearer ",
}


def _runs(stack: Stack) -> int:
    return stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["total_entries"]


@pytest.mark.parametrize("headers", [{}, *({"Authorization": value} for value in BAD_TOKENS.values())],
                         ids=["no-token", *BAD_TOKENS])
def test_calls_without_a_valid_token_are_refused(stack: Stack, headers: dict):
    before = _runs(stack)
    listing = requests.get(f"{stack.airflow_url}/api/v2/dags", headers=headers, timeout=30)
    assert listing.status_code in REFUSED, listing.text[:300]
    assert DAG_ID not in listing.text
    trigger = requests.post(f"{stack.airflow_url}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=30,
                            json={"logical_date": None, "conf": {"profile": "smoke"}})
    assert trigger.status_code in REFUSED, trigger.text[:300]
    assert _runs(stack) == before


def test_wrong_password_gets_no_token(stack: Stack):
    response = requests.post(f"{stack.airflow_url}/auth/token",
                             json={"username": ADMIN_USER, "password": stack.password + "x"}, timeout=30)
    assert response.status_code in REFUSED
    assert "access_token" not in response.text


def test_the_token_grants_access(stack: Stack):
    response = stack.api("GET", "/api/v2/dags")
    assert response.status_code == 200
    assert DAG_ID in {dag["dag_id"] for dag in response.json()["dags"]}
