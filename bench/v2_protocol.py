"""The /v2 infer path's own Python work per one-image request, in process (no HTTP, no network): parse the binary
request (as tritonclient sends it), pick the outputs, lay the /v1 rows out as tensors, encode the binary response.

    python bench/v2_protocol.py [--n 5000]

Prints microseconds per request for the whole protocol step and each part, next to /v1's response encoding
(predict_response). The model is the tests' tiny spec (multiclass, binary, gated regression, regression: 6 output
tensors); the rows are fixed, so only the protocol code is timed. Run it on an older commit to compare.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from bench.v2_infer import v2_bodies  # noqa: E402
from service.api.predict import predict_response  # noqa: E402
from service.api.v2 import heads  # noqa: E402
from service.api.v2.codec import encode_response, parse_request, wants_binary  # noqa: E402
from service.ml.examples import example_spec  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402

ROW = {"category": {"label": "circle", "probabilities": {"none": 0.1, "circle": 0.8, "square": 0.1}},
       "is_big": {"label": True, "probability": 0.7}, "size": {"value": 3.2, "raw": 3.2}, "hue": {"value": 0.4}}


def per_call_us(fn, n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    args = p.parse_args(argv)
    spec = parse_spec(example_spec(image_size=16, epochs=1))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    body, ctype = v2_bodies([buf.getvalue()])[0]
    header = ctype.split("Inference-Header-Content-Length: ")[1]
    rows = [ROW]
    infos = getattr(heads, "plan", None)

    def outputs():
        return ({i.name: i for i in heads.output_infos(spec)} if infos is None else infos(spec).infos).values()

    req, _ = parse_request(body, header)
    selected = [(i, wants_binary(req, None)) for i in outputs()]
    wanted = {i.name for i, _ in selected}
    values = heads.output_values(spec, rows, wanted)
    encoded = [(i.name, i.datatype, values[i.name], b) for i, b in selected]
    head = {"model_name": "m", "model_version": "1"}

    def whole():
        r, _t = parse_request(body, header)
        chosen = [(i, wants_binary(r, None)) for i in outputs()]
        v = heads.output_values(spec, rows, {i.name for i, _ in chosen})
        return encode_response(head, [(i.name, i.datatype, v[i.name], b) for i, b in chosen])

    parts = {"v2 protocol work (all)": whole, "  parse request": lambda: parse_request(body, header),
             "  outputs + values": lambda: heads.output_values(spec, rows, {i.name for i in outputs()}),
             "  encode response": lambda: encode_response(head, encoded),
             "v1 response encoding": lambda: predict_response("m", 1, rows)}
    for name, fn in parts.items():
        print(f"{name:28s} {per_call_us(fn, args.n):8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
