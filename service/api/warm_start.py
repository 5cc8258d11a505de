"""training.init_from at job creation: the named version (by number or alias) of one of the team's models must
exist (404 naming the field) and have a trunk this spec can start from (422 naming the field); the alias is
resolved now, so the job trains from the version it pointed at when queued. The job keeps the version row's id in
params["init_from"]; the worker copies the weights (service.ml.warm_start) and records the version as parent."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.db import aliases as aliases_repo
from service.db import registry as registry_repo
from service.errors import NotFoundError, ValidationError

FIELD = "spec.training.init_from"


def init_from_params(session: Session, team: str, spec) -> dict[str, Any] | None:
    """Job params for spec.training.init_from (None when the spec has none)."""
    from service.ml.spec import parse_spec
    from service.ml.warm_start import trunk_mismatch

    ref = spec.training.init_from
    if ref is None:
        return None
    model = registry_repo.get_team_model(session=session, team=team, name=ref.model)
    if model is None:
        raise NotFoundError(f"{FIELD}.model: model '{ref.model}' not found")
    if ref.alias is not None:
        mv = aliases_repo.resolve_alias(session=session, model_id=model.id, alias=ref.alias)
        if mv is None:
            raise NotFoundError(f"{FIELD}.alias: model '{ref.model}' has no alias '{ref.alias}'")
    else:
        mv = registry_repo.get_model_version(session=session, model_id=model.id, version=ref.version)
        if mv is None:
            raise NotFoundError(f"{FIELD}.version: model '{ref.model}' has no version {ref.version}")
    problems = trunk_mismatch(parse_spec(mv.spec), spec)
    if problems:
        raise ValidationError(f"{FIELD}: model '{ref.model}' version {mv.version} cannot be the start: "
                              f"{'; '.join(problems)} (the trunk must have the same architecture)")
    return {"init_from": {"model_version_id": mv.id, "model": ref.model, "version": mv.version,
                          **({"alias": ref.alias} if ref.alias else {})}}
