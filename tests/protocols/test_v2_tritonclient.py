"""Open Inference Protocol (KServe V2) on a real uvicorn server, driven by the third-party `tritonclient[http]`
in binary and JSON modes, every response also checked against the protocol's published schema
(open_inference_rest.yaml, vendored beside this file) and against /v1 predict on the same images."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.protocols.conftest import SIZE, png
from tests.protocols.schema import check, check_binary_response

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

HEADS = ["category", "is_big", "size", "hue"]


def bearer(server, who: str = "alpha") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[who]}"}


@pytest.fixture
def client(server):
    c = tritonclient_http.InferenceServerClient(server.host, network_timeout=60.0)
    yield c
    c.close()


def v1_predict(server, pngs: list[bytes], version: int) -> list[dict]:
    files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(pngs)]
    r = httpx.post(f"{server.url}/v1/models/shapes/predict?version={version}", files=files, headers=bearer(server),
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def bytes_input(pngs: list[bytes], binary: bool):
    item = tritonclient_http.InferInput("image", [len(pngs)], "BYTES")
    data = pngs if binary else [base64.b64encode(b) for b in pngs]  # JSON: base64 text
    item.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
    return item


def labels(result, name: str) -> list[str]:
    """BYTES come back as bytes from binary data and as str from JSON."""
    return [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy(name)]


def assert_matches_v1(result, v1: list[dict]) -> None:
    """Every tensor equals /v1's answer for the same images (float32 of the same float64 values)."""
    classes = list(v1[0]["category"]["probabilities"])
    probs = np.array([[p["category"]["probabilities"][c] for c in classes] for p in v1], np.float32)
    np.testing.assert_array_equal(result.as_numpy("category"), probs)
    assert labels(result, "category_label") == [p["category"]["label"] for p in v1]
    np.testing.assert_array_equal(result.as_numpy("is_big"), np.float32([p["is_big"]["probability"] for p in v1]))
    np.testing.assert_array_equal(result.as_numpy("hue"), np.float32([p["hue"]["value"] for p in v1]))
    gated = np.array([p["size"]["gated"] for p in v1])
    np.testing.assert_array_equal(result.as_numpy("size_gated"), gated)
    np.testing.assert_array_equal(result.as_numpy("size"), np.float32([p["size"]["value"] or 0.0 for p in v1]))


def test_health_and_server_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "headwise" and "binary_tensor_data" in meta["extensions"]
    raw = httpx.get(server.url + "/v2").json()
    check("metadata_server_response", raw)
    assert httpx.get(server.url + "/v2/health/ready").json() == {"live": True, "ready": True}


def test_model_metadata_lists_inputs_and_one_tensor_per_head(server, client):
    meta = client.get_model_metadata("shapes", headers=bearer(server))
    assert meta["name"] == "shapes" and meta["versions"] == ["1", "2", "3"]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [
        {"name": "category", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "category_label", "datatype": "BYTES", "shape": [-1]},
        {"name": "is_big", "datatype": "FP32", "shape": [-1]},
        {"name": "size", "datatype": "FP32", "shape": [-1]},
        {"name": "size_gated", "datatype": "BOOL", "shape": [-1]},
        {"name": "hue", "datatype": "FP32", "shape": [-1]},
    ]
    assert meta["parameters"]["image_size"] == SIZE and meta["parameters"]["version"] == 3
    check("metadata_model_response", httpx.get(server.url + "/v2/models/shapes/versions/2", headers=bearer(server)).json())
    assert client.get_model_metadata("shapes", "1", headers=bearer(server))["parameters"]["version"] == 1
    assert client.is_model_ready("shapes", headers=bearer(server))
    assert client.is_model_ready("shapes", "2", headers=bearer(server, "predict_only"))
    assert not client.is_model_ready("shapes", "9", headers=bearer(server))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_bytes_matches_v1_predict(server, client, example_pngs, binary):
    pngs = example_pngs[:8]
    outputs = [tritonclient_http.InferRequestedOutput(n, binary_data=binary)
               for n in ("category", "category_label", "is_big", "size", "size_gated", "hue")]
    result = client.infer("shapes", [bytes_input(pngs, binary)], model_version="1", outputs=outputs,
                          request_id="req-42", headers=bearer(server))
    response = result.get_response()
    assert response["model_name"] == "shapes" and response["model_version"] == "1" and response["id"] == "req-42"
    assert result.as_numpy("category").shape == (8, 3) and result.as_numpy("size_gated").dtype == bool
    assert_matches_v1(result, v1_predict(server, pngs, 1))
    if not binary:
        check("inference_response", response)


def test_infer_default_is_all_outputs_binary_and_latest_version(server, client, example_pngs):
    result = client.infer("shapes", [bytes_input(example_pngs[:3], True)], headers=bearer(server))
    response = result.get_response()
    assert response["model_version"] == "3" and "id" not in response
    assert [o["name"] for o in response["outputs"]] == [
        "category", "category_label", "is_big", "size", "size_gated", "hue"]
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in response["outputs"])
    assert_matches_v1(result, v1_predict(server, example_pngs[:3], 3))


def test_raw_binary_request_and_response_follow_the_extension(server, example_pngs):
    """Built by hand (no client): JSON header + binary input, and the response's framing checked byte by byte."""
    import json
    import struct

    blob = b"".join(struct.pack("<I", len(b)) + b for b in example_pngs[:2])
    header = json.dumps({"id": "7", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                                 "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "hue", "parameters": {"binary_data": True}}, {"name": "is_big"}]}).encode()
    r = httpx.post(f"{server.url}/v2/models/shapes/versions/1/infer", content=header + blob,
                   headers={**bearer(server), "Inference-Header-Content-Length": str(len(header)),
                            "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.content[:n])
    check_binary_response(head, len(r.content) - n)
    hue, is_big = head["outputs"]
    assert hue["parameters"] == {"binary_data_size": 8} and "data" not in hue and len(is_big["data"]) == 2
    v1 = v1_predict(server, example_pngs[:2], 1)
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], "<f4"), np.float32([p["hue"]["value"] for p in v1]))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_uint8_pixels_equal_the_encoded_images(server, client, example_pngs, binary):
    pngs = example_pngs[8:12]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pngs])
    assert pixels.shape == (4, SIZE, SIZE, 3)
    item = tritonclient_http.InferInput("image", list(pixels.shape), "UINT8")
    item.set_data_from_numpy(pixels, binary_data=binary)
    outputs = [tritonclient_http.InferRequestedOutput(n, binary_data=binary) for n in ("category", "hue", "size")]
    result = client.infer("shapes", [item], model_version="1", outputs=outputs, headers=bearer(server))
    via_png = client.infer("shapes", [bytes_input(pngs, True)], model_version="1", headers=bearer(server))
    for name in ("category", "hue", "size"):
        np.testing.assert_array_equal(result.as_numpy(name), via_png.as_numpy(name))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_output_selection_is_honoured_in_request_order(server, client, example_pngs, binary):
    outputs = [tritonclient_http.InferRequestedOutput(n, binary_data=binary) for n in ("size_gated", "category_label")]
    result = client.infer("shapes", [bytes_input(example_pngs[:2], binary)], outputs=outputs, headers=bearer(server))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["size_gated", "category_label"]
    assert result.as_numpy("category") is None and result.as_numpy("size_gated").shape == (2,)


def test_gated_head_is_suppressed_with_a_bool_tensor_and_zero_fill(server, client, example_pngs):
    pngs = example_pngs[:6]
    always = client.infer("shapes", [bytes_input(pngs, True)], model_version="2", headers=bearer(server))
    assert labels(always, "category_label") == ["none"] * 6
    assert always.as_numpy("size_gated").tolist() == [True] * 6
    assert always.as_numpy("size").tolist() == [0.0] * 6
    never = client.infer("shapes", [bytes_input(pngs, False)], model_version="3", headers=bearer(server),
                         outputs=[tritonclient_http.InferRequestedOutput(n, binary_data=False)
                                  for n in ("size", "size_gated", "category_label")])
    assert never.as_numpy("size_gated").tolist() == [False] * 6
    v1 = v1_predict(server, pngs, 3)
    assert all(p["size"]["gated"] is False and p["size"]["value"] != 0 for p in v1)
    np.testing.assert_array_equal(never.as_numpy("size"), np.float32([p["size"]["value"] for p in v1]))
    check("inference_response", never.get_response())


def _status(excinfo) -> str:
    return excinfo.value.status()


def test_unknown_and_other_teams_models_are_404(server, client):
    for name in ("nope", "secret"):  # 'secret' exists, but for team beta
        with pytest.raises(InferenceServerException) as exc:
            client.infer(name, [bytes_input([png()], True)], headers=bearer(server))
        assert _status(exc) == "404" and name in exc.value.message()
        with pytest.raises(InferenceServerException) as exc:
            client.get_model_metadata(name, headers=bearer(server))
        assert _status(exc) == "404"
    result = client.infer("secret", [bytes_input([png()], True)], headers=bearer(server, "beta"))
    assert result.as_numpy("category").shape == (1, 3)
    r = httpx.post(server.url + "/v2/models/nope/infer", json={"inputs": []}, headers=bearer(server))
    assert r.status_code == 404 and check("inference_error_response", r.json()) is None


def test_wrong_datatype_and_bad_inputs_are_400_naming_the_problem(server, client):
    floats = tritonclient_http.InferInput("image", [1, SIZE, SIZE, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [floats], headers=bearer(server))
    assert _status(exc) == "400" and "datatype FP32 is not accepted" in exc.value.message()
    wrong_size = tritonclient_http.InferInput("image", [1, 8, 8, 3], "UINT8")
    wrong_size.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [wrong_size], headers=bearer(server))
    assert _status(exc) == "400" and f"[N, {SIZE}, {SIZE}, 3]" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [bytes_input([b"not an image"], True)], headers=bearer(server))
    assert _status(exc) == "400" and "image[0]" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [bytes_input([png()], True)], headers=bearer(server),
                     outputs=[tritonclient_http.InferRequestedOutput("colour")])
    assert _status(exc) == "400" and "'colour' is not an output" in exc.value.message()
    r = httpx.post(server.url + "/v2/models/shapes/infer", headers=bearer(server),
                   json={"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})
    assert r.status_code == 400 and "unknown input 'pixels'" in r.json()["error"]
    check("inference_error_response", r.json())


def test_keys_and_scopes_are_those_of_v1(server, client):
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [bytes_input([png()], True)])
    assert _status(exc) == "401"
    with pytest.raises(InferenceServerException) as exc:
        client.infer("shapes", [bytes_input([png()], True)], headers=bearer(server, "read_only"))
    assert _status(exc) == "403" and "predict" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("shapes", headers=bearer(server, "predict_only"))
    assert _status(exc) == "403" and "models:read" in exc.value.message()
    assert client.infer("shapes", [bytes_input([png()], True)], headers=bearer(server, "predict_only"))


def test_the_authorization_header_is_read_as_v1_reads_it(server):
    key = server.keys["alpha"]
    expected = {f"Bearer {key}": 200, f"bearer {key}": 200, f"Bearer  {key}": 200, f"Basic {key}": 401,
                "Bearer": 401, "Bearer hw_not_a_key": 401, key: 401}
    for header, status in expected.items():
        v1 = httpx.get(f"{server.url}/v1/models/shapes", headers={"Authorization": header})
        v2 = httpx.get(f"{server.url}/v2/models/shapes", headers={"Authorization": header})
        assert (v1.status_code, v2.status_code) == (status, status), header
        if status == 401:  # each in its own error format
            assert v1.json()["error"] == "Unauthorized" and isinstance(v2.json()["error"], str)
            assert set(v2.json()) == {"error"} and v2.headers.get("www-authenticate") == "Bearer"


def test_compressed_requests_and_the_image_limit(server, client, example_pngs):
    plain = client.infer("shapes", [bytes_input(example_pngs[:2], True)], model_version="1", headers=bearer(server))
    for algorithm in ("gzip", "deflate"):
        packed = client.infer("shapes", [bytes_input(example_pngs[:2], True)], model_version="1",
                              headers=bearer(server), request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(packed.as_numpy("category"), plain.as_numpy("category"))
    with pytest.raises(InferenceServerException) as exc:  # the server runs with HEADWISE_MAX_PREDICT_IMAGES=32
        client.infer("shapes", [bytes_input([png()] * 33, True)], headers=bearer(server))
    assert _status(exc) == "413" and "at most 32" in exc.value.message()
