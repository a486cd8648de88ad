"""Model registry: each architecture is one entry (constructor, the name the reports use, a one-line description);
`build_model(name, num_classes, **kw)` builds one, and `model_facts` measures what every report says of a net
(parameters, MACs, receptive field; `field_words`, `field_phrase` in words)."""
import functools
from dataclasses import dataclass
from typing import Callable

from torch import nn

from core.errors import UserError
from models import user_nets
from models.blocks import BasicBlock, ConstantWidthDownSampling, DownSamplingBlock
from models.resnet import MultiStageResNet, SingleStageResNet
from models.stats import macs_per_image, measured_receptive_field


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]  # (num_classes, blocks_per_stage=...) -> module
    label: str  # how a report names it, e.g. "multi-stage" ("the multi-stage net" in a sentence)
    description: str  # one line for the reports
    staged: bool = False  # whether --blocks-per-stage shapes it (and run directory names show it)

    @property
    def noun(self) -> str:
        return f"the {self.label} net"


def _single_stage(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    # blocks_per_stage configures the multi-stage net only; the tutorial net always has six blocks.
    return SingleStageResNet(n_blocks=6, num_classes=num_classes)


def _multi_stage(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    return MultiStageResNet(blocks_per_stage=blocks_per_stage, num_classes=num_classes)


def _constant_width(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    return MultiStageResNet(blocks_per_stage=blocks_per_stage, num_classes=num_classes, widths=(32, 32, 32))


def _narrow(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    return MultiStageResNet(blocks_per_stage=blocks_per_stage, num_classes=num_classes, widths=(8, 16, 32))


DILATIONS = (1, 2, 4, 1, 2, 4)  # receptive field 59 px instead of 27, without gaps (1, 2, 4 share no factor)


def _dilated_single_stage(num_classes: int, blocks_per_stage: int = 2) -> nn.Module:
    return SingleStageResNet(n_blocks=6, num_classes=num_classes, dilations=DILATIONS)


ARCHITECTURES = {
    "singlestage": Architecture(_single_stage, "single-stage",
                                "the CIFAR-10 tutorial's net: six 32-channel blocks at 32x32"),
    "multistage": Architecture(_multi_stage, "multi-stage",
                               "the assignment's net: 16, 32, 64 channels at 32, 16, 8 px, joined by DownSamplingBlocks",
                               staged=True),
    # Variants that separate what the multi-stage net changes (an ablation of the bonus pair):
    "multistage-constwidth": Architecture(_constant_width, "constant-width multi-stage",
                                          "the multi-stage layout and stride-2 transitions, 32 channels in every stage "
                                          "(about the single-stage net's parameters)", staged=True),
    "multistage-narrow": Architecture(_narrow, "narrow multi-stage",
                                      "the multi-stage net at half width, 8, 16, 32 channels (far fewer parameters)",
                                      staged=True),
    "singlestage-dilated": Architecture(_dilated_single_stage, "dilated single-stage",
                                        "the tutorial net with dilations 1, 2, 4, 1, 2, 4: the receptive field covers "
                                        "the image, at full resolution, same parameters and MACs"),
}
# The comparison of the assignment's bonus, baseline first: the tutorial's net against the multi-stage one.
BONUS_PAIR = ("singlestage", "multistage")


def architecture(name: str) -> Architecture:
    """The registry's entry `name`, or for a spec (`module:callable`, `file.py:callable`) the user's network,
    imported on first use (models/user_nets.py)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if not user_nets.is_spec(name):
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    net = user_nets.load(name)
    return Architecture(net.build, user_nets.callable_name(name), net.description, staged=net.takes_blocks)


def label(name: str) -> str:
    """How reports name a network, without importing a user's: "multi-stage", or the callable's name."""
    return ARCHITECTURES[name].label if name in ARCHITECTURES else user_nets.callable_name(name)


def noun(name: str) -> str:
    """A network in a sentence: "the multi-stage net", or the callable's name."""
    return ARCHITECTURES[name].noun if name in ARCHITECTURES else user_nets.callable_name(name)


def dir_name(name: str) -> str:
    """The folder (or run-directory part) of a network: its registry name, or the user's callable, sanitised."""
    return name if name in ARCHITECTURES else user_nets.safe_name(name)


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the architecture `name`: registered (see `ARCHITECTURES`) or a user's spec."""
    return architecture(name).build(num_classes, **kwargs)


def check_networks(names: tuple[str, ...], num_classes: int, blocks_per_stage: int, blocks_given: bool) -> None:
    """Before anything is written: every user's network among `names` imported, built and tried on one image
    (models/user_nets.check), `--blocks-per-stage` refused for one that takes no such parameter, and no two nets
    sharing a folder name. Each failure is one UserError."""
    for name in names:
        if user_nets.is_spec(name):
            net = user_nets.load(name)
            if blocks_given and not net.takes_blocks:
                raise UserError(f"--blocks-per-stage: {name} takes no {user_nets.BLOCKS_PARAMETER} parameter")
            user_nets.check(net, num_classes, blocks_per_stage)
    folders = [dir_name(name) for name in names]
    shared = next((folder for folder in folders if folders.count(folder) > 1), None)
    if shared is not None:
        raise UserError(f"two networks would share the folder name {shared!r}: "
                        + " and ".join(name for name in names if dir_name(name) == shared))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "ARCHITECTURES", "Architecture", "BONUS_PAIR", "BasicBlock", "ConstantWidthDownSampling", "DownSamplingBlock",
    "MultiStageResNet",
    "SingleStageResNet", "architecture", "build_model", "check_networks", "noun", "count_parameters", "dir_name", "label",
]


def model_facts(arch: str, num_classes: int, blocks_per_stage: int, network: dict | None = None) -> tuple[nn.Module, dict]:
    """A fresh model of `arch` and its facts. The receptive field is measured by gradient
    (models/stats.measured_receptive_field), so any network gets one, or None and "receptive_field_note" saying why.
    A user's network is imported from the file a run recorded (`network`) where its spec does not resolve from here."""
    model = build_model(arch, num_classes, blocks_per_stage=blocks_per_stage)
    if network is None and arch in ARCHITECTURES:
        return model, dict(_registered_facts(arch, num_classes, blocks_per_stage))
    net = user_nets.load_recorded(network) if network else user_nets.load(arch) if user_nets.is_spec(arch) else None
    facts = _measured_facts(model)
    if net is not None:
        facts["description"] = net.description
    return model, facts


@functools.lru_cache(maxsize=None)
def _registered_facts(arch: str, num_classes: int, blocks_per_stage: int) -> dict:
    """A registered net's facts, measured once per process: a study's report asks for them once per run."""
    return _measured_facts(build_model(arch, num_classes, blocks_per_stage=blocks_per_stage))


def _measured_facts(model: nn.Module) -> dict:
    field = measured_receptive_field(model)
    facts = {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model),
             "receptive_field": field.pixels}
    if field.pixels is None:
        facts["receptive_field_note"] = field.why
    return facts


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
