"""Model adapters: declarative facts about each denoiser family, found through a registry keyed by class.

An adapter is data, never method logic: which denoiser classes it covers, the *structure* methods
key on (``"unet"``: an SD-style UNet cut into branch units; ``"transformer"``: stacks of blocks with
token-level modules), its block stacks, each block's module roles, the block I/O contract, the token
grid of an input, the CFG layout, and which tokens are image tokens. Methods read these facts
through the adapter; they never name a model's attributes themselves.

Adding a family is one module in this package that builds a :class:`ModelAdapter` and calls
:func:`register_adapter`, plus its name in :data:`_FAMILY_MODULES`. Classes are matched by name along
the model's MRO, so looking an adapter up imports no diffusers model module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: Token-level module roles of transformer blocks, as configs name them: self-attention (joint
#: image-text attention in MMDiT blocks), cross-attention (text conditioning), feed-forward of the image
#: stream, feed-forward of the text stream (MMDiT blocks).
TOKEN_ROLES: tuple[str, ...] = ("attn1", "attn2", "ff", "ff_context")
#: Roles adapters may declare besides :data:`TOKEN_ROLES`, which configs do not name: a second
#: self-attention (SD3.5's dual attention; cached like ``attn1``) and a projection that follows the
#: ``ff`` role's token choice (FLUX single blocks' ``proj_out``).
EXTRA_ROLES: tuple[str, ...] = ("attn_dual", "ff_out")


@dataclass(frozen=True)
class BlockIO:
    """How a block is called and what it returns.

    Attributes:
        hidden_arg: keyword of the image-token input (``hidden_states``), also accepted as positional 0.
        context_arg: keyword of the text-token input of joint blocks (``encoder_hidden_states``), or None.
        output_index: index of the image-token output in a tuple output; None for a single tensor.
        context_index: index of the text-token output in a tuple output (joint blocks), or None.
    """

    hidden_arg: str = "hidden_states"
    context_arg: str | None = None
    output_index: int | None = None
    context_index: int | None = None

    def context_of(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The text-token input of a joint block call (keyword, or positional 1), or None."""
        if self.context_arg is None:
            return None
        if self.context_arg in kwargs:
            return kwargs[self.context_arg]
        return args[1] if len(args) > 1 else None

    def pass_through(self, hidden: torch.Tensor, context: torch.Tensor | None) -> Any:
        """What a block returns when it is skipped whole: its inputs, in its output layout."""
        if self.output_index is None:
            return hidden
        out: list[Any] = [None] * (max(self.output_index, self.context_index or 0) + 1)
        out[self.output_index] = hidden
        if self.context_index is not None:
            out[self.context_index] = context
        return tuple(out)


#: The I/O of MMDiT blocks (FLUX, SD3, Qwen-Image): ``hidden_states`` and ``encoder_hidden_states`` in,
#: ``(encoder_hidden_states, hidden_states)`` out.
JOINT_BLOCK_IO = BlockIO(
    hidden_arg="hidden_states", context_arg="encoder_hidden_states", output_index=1, context_index=0
)


@dataclass(frozen=True)
class ModelAdapter:
    """Declarative description of one denoiser family.

    Attributes:
        name: the family name (``"sd-unet"``, ``"basic-transformer"``, ...).
        classes: class names of the denoisers it covers (matched along the model's MRO).
        structure: what methods key on: ``"unet"`` or ``"transformer"``.
        cfg_layout: ``"batched"`` (one call per step, ``[uncond; cond]`` halves when guided) or
            ``"per_context"`` (one call per branch inside ``cache_context``).
        block_io: the I/O contract of the blocks.
        roles: module role -> attribute of a block holding it (transformers).
        block_roles: block class name -> its own ``roles`` (families with several kinds of block).
        partial_roles: roles whose module can run on a subset of its input tokens (per-token modules,
            and attention whose queries carry no per-token positional input); the others are computed
            whole or produced whole by their approximator.
        linked_roles: role -> role whose token choice it follows in the same block and step.
        sole_readers: block class name -> {role: the role whose module alone reads that role's output, each
            output token by its own row} (FLUX single blocks: ``proj_out`` reads the concatenated attention and
            MLP rows). When the reader computes ``k`` rows on a step (or none), the modules it reads produce just
            those rows (or one row): the rest of their output would be read by nothing.
        block_classes: class names a block must have (transformers); others are refused.
        stacks: ``model -> [(attribute, blocks)]``, block stacks in execution order of their last block.
        active_stacks: ``(stack attributes, denoiser kwargs) -> attributes`` the call runs (e.g. Latte
            without temporal attention).
        token_grid: ``(model, denoiser input, denoiser kwargs) -> (h, w)`` grid of the image tokens (video
            frames stacked along ``h``).
        image_tokens: ``"all"`` when every token of a block's sequence is an image token; ``"streams"``
            when blocks keep image and text tokens in separate streams (MMDiT), each module seeing one.
        uncached_call: ``denoiser kwargs -> bool``: calls that run without caching and are not counted as
            steps (SD3's skip-layer-guidance calls).
        input_norms: ``block -> {role: path or paths}``: per role, the paths (inside the block) of the norms
            whose output that role's module reads. On a step every module reading a norm is produced whole by
            its approximator, the norm returns one token of its input instead of normalising them all (the
            modules ignore their inputs then): outputs are unchanged and the skipped step costs less. A norm
            read by several roles is listed under each (SD3.5's ``norm1`` feeds ``attn1`` and ``attn_dual``);
            leave it out when anything that is not a role's module reads its output. On a step where the
            modules reading a norm compute the same ``k`` tokens (the others skipping), the norm normalises
            only those rows of its input: this needs the block's modulation to be the same for every token.
        per_token_modulation: ``(denoiser args, kwargs) -> bool``: calls whose blocks modulate each token with
            its own scale and shift (Wan 2.2 TI2V's per-token timesteps); norms are then never narrowed to
            the computed tokens (the one-token stub of skipped steps still broadcasts).
        timestep_scale: the scheduler's timestep divided by the one the denoiser takes (FLUX and Qwen-Image
            take ``t / 1000``): hooks that compare timesteps with ranges in scheduler units (PAB's and
            FasterCache's ``(100, 800)``) multiply the model's input by it.
        facts: family-specific facts (UNet units, levels, ...), functions of the model.
    """

    name: str
    classes: tuple[str, ...]
    structure: str
    cfg_layout: str = "batched"
    block_io: BlockIO = BlockIO()
    roles: dict[str, str] = field(default_factory=dict)
    block_roles: dict[str, dict[str, str]] = field(default_factory=dict)
    partial_roles: tuple[str, ...] = ("attn1", "attn2", "ff")
    linked_roles: dict[str, str] = field(default_factory=dict)
    sole_readers: dict[str, dict[str, str]] = field(default_factory=dict)
    block_classes: tuple[str, ...] = ()
    stacks: Callable[[torch.nn.Module], list[tuple[str, torch.nn.ModuleList]]] | None = None
    active_stacks: Callable[[tuple[str, ...], dict], tuple[str, ...]] | None = None
    token_grid: Callable[[torch.nn.Module, torch.Tensor, dict], tuple[int, int]] | None = None
    image_tokens: str = "all"
    uncached_call: Callable[[dict], bool] | None = None
    input_norms: Callable[[torch.nn.Module], dict[str, str | tuple[str, ...]]] | None = None
    per_token_modulation: Callable[[tuple, dict], bool] | None = None
    timestep_scale: float = 1.0
    facts: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def block_stacks(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
        """The model's block stacks; raises ``TypeError`` naming a block of an unsupported class."""
        stacks = self.stacks(model) if self.stacks is not None else []
        if self.block_classes:
            for attr, blocks in stacks:
                for i, blk in enumerate(blocks):
                    if not _is_named(type(blk), self.block_classes):
                        raise TypeError(
                            f"{type(model).__name__}.{attr}.{i} is a {type(blk).__name__}; the {self.name} adapter "
                            f"supports {', '.join(self.block_classes)} blocks only"
                        )
        return stacks

    def roles_of(self, block: torch.nn.Module) -> dict[str, str]:
        """Role -> attribute of the token-level modules of ``block``'s class."""
        return _by_class(self.block_roles, block, self.roles)

    def block_modules(self, block: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """``(role, attribute, module)`` of the token-level modules a block has, in role order."""
        out = []
        for role, attr in self.roles_of(block).items():
            mod = getattr(block, attr, None)
            if mod is not None:
                out.append((role, attr, mod))
        return out

    def sole_readers_of(self, block: torch.nn.Module) -> dict[str, str]:
        """Role -> the role that alone reads its output, row by row, in ``block``'s class (see :attr:`sole_readers`)."""
        return _by_class(self.sole_readers, block, {})

    def norms_of(self, block: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
        """Role -> the norm modules only that role reads (see :attr:`input_norms`), those ``block`` has."""
        if self.input_norms is None:
            return {}
        out: dict[str, list[torch.nn.Module]] = {}
        for role, paths in self.input_norms(block).items():
            for path in (paths,) if isinstance(paths, str) else paths:
                try:
                    out.setdefault(role, []).append(block.get_submodule(path))
                except AttributeError:
                    continue
        return {role: mods for role, mods in out.items() if mods}

    def hidden_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The image-token input of a block or module call."""
        return args[0] if args else kwargs[self.block_io.hidden_arg]

    def with_hidden(self, args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
        """The call's arguments with the image-token input replaced by ``x``."""
        if args:
            return (x, *args[1:]), dict(kwargs)
        return args, {**kwargs, self.block_io.hidden_arg: x}


ADAPTERS: list[ModelAdapter] = []
#: the modules that define the shipped families (imported on first look-up).
_FAMILY_MODULES = ("sd_unet", "basic_transformer", "flux", "sd3", "wan", "qwen_image")
_loaded = False


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """Add a family to the registry (later entries win for the same class)."""
    ADAPTERS.insert(0, adapter)
    return adapter


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _FAMILY_MODULES:
            importlib.import_module(f"{__name__}.{name}")


def _by_class(table: dict[str, Any], block: torch.nn.Module, default: Any) -> Any:
    """The entry of ``table`` for the nearest class of ``block`` (by name, along its MRO), else ``default``."""
    for cls in type(block).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return default


def _is_named(cls: type, names: tuple[str, ...]) -> bool:
    return any(c.__name__ in names for c in cls.__mro__)


def find_adapter(denoiser: torch.nn.Module) -> ModelAdapter:
    """The adapter of ``denoiser``'s class; ``TypeError`` listing the supported classes if none."""
    _load()
    for adapter in ADAPTERS:
        if _is_named(type(denoiser), adapter.classes):
            return adapter
    raise TypeError(
        f"tokencache does not support denoiser class {type(denoiser).__name__}; supported classes: "
        f"{sorted({c for a in ADAPTERS for c in a.classes})}"
    )


def adapters() -> list[ModelAdapter]:
    """Every registered family."""
    _load()
    return list(ADAPTERS)
