"""The two things every registry module shares: the strict config base model and SpecError."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class SpecError(ValueError):
    """Invalid spec. `errors` is a list of "field.path: message" strings; pickle-safe (args == (errors,))."""

    def __init__(self, errors: list[str] | str):
        errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__(errors)
        self.errors = errors

    def __str__(self) -> str:
        return "; ".join(self.errors)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def validate_part(model: type[BaseModel], data: dict, prefix: str = "") -> BaseModel:
    """model.model_validate(data) with pydantic errors turned into SpecError("prefix.field: message")."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            where = ".".join(p for p in (prefix, path) if p) or prefix or "spec"
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(model.model_fields) or "(none)"
                errors.append(f"{where}: unknown field; allowed: {allowed}")
                continue
            msg = err["msg"].replace("Input should be", "must be")
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            errors.append(f"{where}: {msg}; got {err.get('input')!r}")
        raise SpecError(errors) from None
