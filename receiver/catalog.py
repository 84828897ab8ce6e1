"""Every BFL editing model in one table: its path, limits, price and what it takes. Pure data.

The receiver's validation, submitter, settings, CLI and `/openapi.json`, and the simulator, all read
this table; adding a model is adding one `ModelSpec` to `CATALOG`.

Prices are in credits (1 credit = 0.01 USD). Flat-priced models (Kontext) cost `base` per image;
megapixel-priced ones (FLUX.2) cost `base` for the first output megapixel, plus `per_mp` for each
further output megapixel and for each input megapixel, counted to 0.01 MP as BFL reports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# Optional request fields a model may take, beside prompt, images, seed, safety_tolerance, output_format.
ASPECT_RATIO = "aspect_ratio"
PROMPT_UPSAMPLING = "prompt_upsampling"
WIDTH = "width"
HEIGHT = "height"
STEPS = "steps"
GUIDANCE = "guidance"
OPTIONAL_FIELDS = (ASPECT_RATIO, PROMPT_UPSAMPLING, WIDTH, HEIGHT, STEPS, GUIDANCE)

STEPS_RANGE = (1, 50)
GUIDANCE_RANGE = (1.5, 10.0)
MIN_SIDE = 64
SIDE_MULTIPLE = 16


@dataclass(frozen=True)
class Price:
    base: float
    per_mp: float = 0.0  # 0: a flat price per image

    def credits(self, input_mp: float, output_mp: float) -> float:
        if not self.per_mp:
            return self.base
        return round(self.base + self.per_mp * (max(0.0, output_mp - 1.0) + input_mp), 2)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # also its path: POST /v1/<name>
    title: str
    price: Price
    max_images: int  # the image to edit plus its references
    fields: frozenset[str]  # which of OPTIONAL_FIELDS it takes
    max_safety: int  # safety_tolerance 0..max_safety
    output_formats: tuple[str, ...]
    # Tasks of this model the account may have active at once, below the account-wide limit.
    active_limit: int | None = None
    max_output_mp: float | None = None  # with width/height; None: about 1 MP, at aspect_ratio
    max_input_mp: float | None = None  # all input images together
    webhooks: bool = True  # False: BFL takes no webhook_url, the task is followed by polling

    @property
    def path(self) -> str:
        return f"/v1/{self.name}"

    def takes(self, field: str) -> bool:
        return field in self.fields

    def credits(self, input_mp: float, output_mp: float) -> float:
        return self.price.credits(input_mp, output_mp)


class Catalog(Mapping[str, ModelSpec]):
    """Models by name, in the order they are listed; the first is the default."""

    def __init__(self, models: tuple[ModelSpec, ...]) -> None:
        self._models = {model.name: model for model in models}

    def __getitem__(self, name: str) -> ModelSpec:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    @property
    def default(self) -> ModelSpec:
        return next(iter(self._models.values()))

    def with_models(self, *models: ModelSpec) -> Catalog:
        """This catalog with `models` added (or replaced, by name)."""
        return Catalog((*(m for m in self.values() if m.name not in {n.name for n in models}), *models))


def kontext(name: str, title: str, credits: float, *, active_limit: int | None = None) -> ModelSpec:
    """A FLUX.1 Kontext model: up to 4 images ("experimental multiref"), output about 1 MP."""
    return ModelSpec(
        name,
        title,
        Price(credits),
        max_images=4,
        fields=frozenset({ASPECT_RATIO, PROMPT_UPSAMPLING}),
        max_safety=6,
        output_formats=("jpeg", "png"),
        active_limit=active_limit,
    )


def flux2(
    name: str,
    title: str,
    price: Price,
    *,
    max_images: int = 8,
    extra_fields: frozenset[str] = frozenset(),
    max_input_mp: float | None = None,
) -> ModelSpec:
    """A FLUX.2 model: width/height (0 = the input's), output at most 4 MP, safety 0..5."""
    return ModelSpec(
        name,
        title,
        price,
        max_images=max_images,
        fields=frozenset({WIDTH, HEIGHT}) | extra_fields,
        max_safety=5,
        output_formats=("jpeg", "png", "webp"),
        max_output_mp=4.0,
        max_input_mp=max_input_mp,
    )


CATALOG = Catalog(
    (
        kontext("flux-kontext-pro", "FLUX.1 Kontext [pro]", 4.0),
        kontext("flux-kontext-max", "FLUX.1 Kontext [max]", 8.0, active_limit=6),
        flux2("flux-2-pro", "FLUX.2 [pro]", Price(3.0, 1.5), max_input_mp=9.0),
        flux2("flux-2-max", "FLUX.2 [max]", Price(7.0, 3.0)),
        flux2(
            "flux-2-flex",
            "FLUX.2 [flex]",
            Price(5.0, 5.0),
            extra_fields=frozenset({PROMPT_UPSAMPLING, STEPS, GUIDANCE}),
        ),
        flux2("flux-2-klein-4b", "FLUX.2 [klein 4B]", Price(1.4, 0.1), max_images=4),
        flux2("flux-2-klein-9b", "FLUX.2 [klein 9B]", Price(1.5, 0.2), max_images=4),
    )
)
