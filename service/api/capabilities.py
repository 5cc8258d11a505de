"""GET /v1/capabilities: the engine's head types, losses (incl. `headwise.losses` plugins) and weighting
strategies with their parameters, listed by the engine itself (service.ml.capabilities); the backbones
`model.backbone` accepts and the pretrained weights installed in HEADWISE_WEIGHTS_DIR that `model.pretrained` may
name (service.ml.backbones, service.ml.weights)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import PrincipalDep, SettingsDep
from service.api.schemas import ErrorRead

router = APIRouter(prefix="/v1", tags=["spec"])


@router.get("/capabilities", responses={401: {"model": ErrorRead}},
            summary="Head types, losses (built-in and plugins), weighting strategies with their parameters, "
                    "backbones and installed pretrained weights")
def capabilities(_principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    from service.ml.backbones import catalogue
    from service.ml.capabilities import capabilities as engine_capabilities
    from service.ml.weights import list_weights

    weights = [{k: v for k, v in w.to_json().items() if k != "dropped"} for w in list_weights(settings.WEIGHTS_DIR)]
    return {**engine_capabilities(), "backbones": catalogue(), "weights": weights}
