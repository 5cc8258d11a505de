"""GET /v1/capabilities (issue 9): the engine's registries over HTTP, behind the API key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.ml.capabilities import capabilities


def test_capabilities_lists_heads_losses_weightings(client: TestClient, auth) -> None:
    r = client.get("/v1/capabilities", headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert {k: v for k, v in body.items() if k not in ("backbones", "weights")} == capabilities()  # + backbones: test_backbones_api.py
    assert body["head_types"]["multilabel"]["fields"]["properties"]["threshold"]["default"] == 0.5
    assert body["losses"]["quantile"]["params"]["properties"]["q"]["exclusiveMaximum"] == 1
    assert body["weightings"]["gradnorm"]["params"]["properties"]["alpha"]["default"] == 1.5
    assert client.get("/v1/capabilities").status_code == 401
