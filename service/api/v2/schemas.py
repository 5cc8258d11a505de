"""The protocol's JSON objects as pydantic models, for the OpenAPI document (/docs) and response validation.
Field names and required fields follow the published open_inference_rest.yaml."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class V2Error(BaseModel):
    error: str = Field(description="what went wrong")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    live: bool
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 = variable (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data_size when sent as binary")
    data: list[Any] | None = Field(default=None, description="absent when sent as binary data")


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


def errors(*codes: int) -> dict:
    return {code: {"model": V2Error} for code in codes}


_PARAMETERS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
REQUEST_SCHEMA = {  # $inference_request (codec.InferRequest parses it)
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                           "datatype": {"type": "string"}, "parameters": _PARAMETERS, "data": {}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS}}},
    },
}
INFER_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": REQUEST_SCHEMA},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "binary tensor data extension: JSON header "
                                                        "(Inference-Header-Content-Length bytes) + tensor bytes"},
        },
    }
}
INFER_RESPONSES = {
    200: {"model": InferResponse, "content": {"application/octet-stream": {}},
          "description": "JSON, or (binary outputs) JSON header + tensor bytes with Inference-Header-Content-Length"},
    **errors(400, 401, 403, 404, 413, 415, 503),
}
