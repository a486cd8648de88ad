"""A recipe in words and flags: the lines runs open with and reports head with, and a named recipe as its flags."""
from __future__ import annotations

import dataclasses

from core.recipe import DEFAULT_PRESET, PRESET_FIELDS, PRESETS, Recipe, flag_name

RECIPE_FIELDS = {config_field.name: config_field for config_field in dataclasses.fields(Recipe)}


def as_flags(values: dict, spell_false: bool = False) -> str:
    """Field values as the flags that give them: "--optimizer sgd --lr 0.1 --nesterov ..."; a false switch is
    left out, or with `spell_false` written "without --nesterov"."""
    words = []
    for name_of_field, value in values.items():
        option = flag_name(RECIPE_FIELDS[name_of_field])
        if isinstance(value, bool):
            words += [option] if value else [f"without {option}"] if spell_false else []
        else:
            words += [option, str(value)]
    return " ".join(words)


def preset_flags(name: str) -> str:
    """A preset as the flags it stands for: "--optimizer sgd --lr 0.1 --nesterov ..." (a false switch is left out)."""
    return as_flags(PRESETS[name])


def optimisation_in_words(recipe: Recipe) -> str:
    """How a recipe optimises, for the headers of reports: "Adam lr 0.001" for the assignment's, and for others
    each field that differs from it: "SGD lr 0.2, Nesterov momentum 0.9, weight decay 0.0005, onecycle schedule
    with 1.0 warm-up epochs, label smoothing 0.1, EMA 0.99, test-time flips"."""
    words = [f"{'Adam' if recipe.optimizer == 'adam' else recipe.optimizer.upper()} lr {recipe.lr}"]
    if recipe.optimizer == "sgd":
        words.append(f"{'Nesterov ' if recipe.nesterov else ''}momentum {recipe.momentum}")
    if recipe.weight_decay:
        words.append(f"weight decay {recipe.weight_decay}")
    if recipe.schedule != "constant":
        words.append(f"{recipe.schedule} schedule" + (f" with {recipe.warmup} warm-up epochs" if recipe.warmup else ""))
    if recipe.label_smoothing:
        words.append(f"label smoothing {recipe.label_smoothing}")
    if recipe.ema:
        words.append(f"EMA {recipe.ema}")
    if recipe.tta == "flip":
        words.append("test-time flips")
    return ", ".join(words)


def augmentation_in_words(recipe: Recipe) -> str:
    """The training augmentation, for the headers of reports: "off", "on", or "on (crop padding 2)" when the crop
    shifts by other than the default."""
    if not recipe.augment:
        return "off"
    return "on" if recipe.crop_padding == Recipe.crop_padding else f"on (crop padding {recipe.crop_padding})"


def recipe_line(recipe: Recipe) -> str | None:
    """The line a run opens with: the named recipe nearest to `recipe` (fewest fields apart), the flags given beside
    it, and every value the run trains with, e.g. "Recipe fast, but --lr 0.2: --optimizer sgd --lr 0.2 ...".
    None when the nearest is the default (the assignment's recipe), whose runs open with their device."""
    def overrides(name: str) -> dict:
        return {key: getattr(recipe, key) for key, value in PRESETS[name].items() if getattr(recipe, key) != value}

    nearest = min(PRESETS, key=lambda name: (len(overrides(name)), name != DEFAULT_PRESET))
    if nearest == DEFAULT_PRESET:
        return None
    beside = overrides(nearest)
    named = f"Recipe {nearest}, but {as_flags(beside, spell_false=True)}" if beside else f"Recipe {nearest}"
    return f"{named}: {as_flags({key: getattr(recipe, key) for key in PRESET_FIELDS})}"
