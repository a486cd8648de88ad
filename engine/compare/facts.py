"""What the reports measure of a run's network: parameters, MACs per image, receptive field (and for a user's
network, its one-line description)."""
from __future__ import annotations

from torch import nn

from core.history_file import RunHistory
from models import build_model, count_parameters, user_nets
from models.stats import macs_per_image, measured_receptive_field


def run_facts(history: RunHistory) -> dict:
    """`model_facts` of the network a run trained."""
    recipe = history.recipe
    return model_facts(recipe.arch, history.num_classes, recipe.blocks_per_stage, history.network)[1]


def model_facts(arch: str, num_classes: int, blocks_per_stage: int, network: dict | None = None) -> tuple[nn.Module, dict]:
    """A fresh model of `arch` and its facts. The receptive field is measured by gradient
    (models/stats.measured_receptive_field), so any network gets one, or None and "receptive_field_note" saying why.
    A user's network is imported from the file a run recorded (`network`) where its spec does not resolve from here."""
    net = user_nets.load_recorded(network) if network else user_nets.load(arch) if user_nets.is_spec(arch) else None
    model = build_model(arch, num_classes, blocks_per_stage=blocks_per_stage)
    field = measured_receptive_field(model)
    facts = {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model),
             "receptive_field": field.pixels}
    if field.pixels is None:
        facts["receptive_field_note"] = field.why
    if net is not None:
        facts["description"] = net.description
    return model, facts


def field_words(facts: dict) -> str:
    """A measured receptive field in a table: "53 px", or "n/a (why)" where no exact figure could be had."""
    if facts["receptive_field"] is None:
        return f"n/a ({facts['receptive_field_note']})"
    return f"{facts['receptive_field']} px"


def field_phrase(facts: dict) -> str:
    """The same in a sentence: "a 53-pixel receptive field", or "no exact receptive field (why)"."""
    if facts["receptive_field"] is None:
        return f"no exact receptive field ({facts['receptive_field_note']})"
    return f"a {facts['receptive_field']}-pixel receptive field"
