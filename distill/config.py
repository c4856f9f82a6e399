"""The resolved Hydra config, validated once (pydantic) before any I/O, into the parts the runner builds.

Every problem is reported with its dotted override key, all of them at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from importlib.util import find_spec
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from distill.errors import ConfigError, DistillError
from distill.output.card import CardConfig
from distill.grouping import GROUP_KINDS, KeyFunction, key_function
from distill.fork_server import default_workers
from distill.plan.prepare import ExecutorSettings
from distill.sources import SOURCES, Source
from distill.split import SplitParams
from distill.tokens import Tokenizer, load_tokenizer
from distill.curation.steps import STEPS, Step, StepContext
from distill.tasks import TASKS, Task
from distill.output.flavours import FLAVOURS, Flavour, RenderContext
from distill.output.flavours.base import INLINE, file_format, provenance_mode, refusal
from distill.output.flavours.render import FlavourOutput
from distill.output.flavours.trl import TrlFlavour


class CurationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: dict[str, dict[str, Any] | None] = {}
    order: list[str] | None = None


class GroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Literal[GROUP_KINDS]  # type: ignore[valid-type]
    delimiter: str = Field(default="#", min_length=1)


def needs_package(value: str, choice: str, package: str, extra: str, what: str) -> str:
    """`value`, unless it is `choice` and the optional `package` is not installed."""
    if value == choice and find_spec(package) is None:
        raise ValueError(f"{what} needs the `{package}` package (pip install 'distill[{extra}]')")
    return value


class VerlOutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_source: str | None = None
    ability: str = "general"


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "parquet"] = "jsonl"
    flavor: str = "trl"
    provenance: Literal["inline", "sidecar"] | None = None
    max_example_tokens: PositiveInt | None = None
    verl: VerlOutputConfig = VerlOutputConfig()

    @field_validator("format")
    @classmethod
    def _parquet_needs_pyarrow(cls, value: str) -> str:
        return needs_package(value, "parquet", "pyarrow", "columnar", "parquet output")


LOCAL_WORKERS_PER_CORE = 8
"""The most local worker processes per core `executor.workers` may ask for."""


class ExecutorConfig(BaseModel):
    """How the plan runs (`conf/executor/`): never what it computes. Outputs are the same bytes whatever is set."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    workers: PositiveInt | None = None
    """Worker processes for map and reduce; null: every core this process may use. With `kind: ray` and no
    `address`, the CPUs of the local Ray it starts."""
    address: str | None = None
    """`kind: ray` only: null starts a local Ray (unless `RAY_ADDRESS` names a cluster); `auto` or
    `ray://HOST:10001` joins an existing cluster."""
    max_retries: int = Field(default=3, ge=0)
    """`kind: ray` only: how often a task whose worker died (or that failed with a transient error) is retried."""
    memory_gb: float | None = Field(default=None, gt=0)
    """The memory budget the partition count follows; null: a quarter of the machine, at most 0.75 GB per worker."""
    partitions: PositiveInt | None = None
    """Fix the partition count instead of deriving it from the input size and the budget."""
    shard_mb: float = Field(default=64, gt=0)
    """Plain JSONL files are cut into byte ranges of about this size, mapped in parallel."""
    compress_spills: bool = False

    @field_validator("kind")
    @classmethod
    def _ray_needs_the_extra(cls, value: str) -> str:
        return needs_package(value, "ray", "ray", "ray", "the ray executor")

    @model_validator(mode="after")
    def _address_is_for_ray(self) -> ExecutorConfig:
        if self.address is not None and self.kind != "ray":
            raise ValueError("`address` is for executor=ray only")
        return self

    @model_validator(mode="after")
    def _local_workers_fit_the_machine(self) -> ExecutorConfig:
        # Each local worker is a process of its own: tens of thousands of them (a typo's extra zeros) would plan the
        # most partitions and start a process for each, and the run would stall instead of starting.
        cores = default_workers()
        if self.kind == "local" and self.workers is not None and self.workers > LOCAL_WORKERS_PER_CORE * cores:
            raise ValueError(
                f"workers={self.workers}: at most {LOCAL_WORKERS_PER_CORE * cores} local worker processes on this "
                f"machine's {cores} cores ({LOCAL_WORKERS_PER_CORE} per core); null uses every core"
            )
        return self


class StatsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # An alias of the top-level `tokenizer`, kept for configs written before it existed.
    tokenizer: str | None = None


class TopLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: dict[str, Any]
    curation: CurationConfig
    group: GroupConfig
    split: dict[str, Any]
    task: dict[str, Any]
    output: OutputConfig = OutputConfig()
    stats: StatsConfig = StatsConfig()
    tokenizer: str | None = None
    card: CardConfig = CardConfig()
    executor: ExecutorConfig = ExecutorConfig()
    resume: bool = False
    batch_size: PositiveInt = 1024
    dry_run: bool = False
    overwrite: bool = False
    report: bool = True


def executor_settings(config: ExecutorConfig) -> ExecutorSettings:
    workers = config.workers or default_workers()
    if config.memory_gb is not None:
        memory = max(1, int(config.memory_gb * 2**30))  # a budget under a byte is one byte: the most partitions
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = min(total // 4, workers * 3 * 2**28)
    return ExecutorSettings(
        config.kind, workers, memory, config.partitions, int(config.shard_mb * 2**20), config.compress_spills,
        address=config.address, max_retries=config.max_retries,
    )


@dataclass
class Settings:
    """Everything a run needs, built only from registered distill classes."""

    source: Source
    steps: list[Step]
    group_kind: str
    group_key: KeyFunction
    split: SplitParams
    split_key: KeyFunction | None
    task: Task
    batch_size: int
    dry_run: bool
    output_format: str
    executor: ExecutorSettings
    resume: bool = False
    token_counter: Tokenizer | None = None
    overwrite: bool = False
    notes: list[str] = dataclass_field(default_factory=list)
    """Things the run did differently from what its config asked, for the log and the manifest's `notes`."""
    flavour: Flavour = dataclass_field(default_factory=TrlFlavour)
    render_context: RenderContext | None = None
    provenance: str = INLINE

    @property
    def step_order(self) -> list[str]:
        return [step.name for step in self.steps]

    @property
    def flavour_output(self) -> FlavourOutput:
        context = self.render_context or RenderContext(shape=self.task.schema)
        return FlavourOutput(self.flavour, context, self.provenance, self.output_format)


def _problems(error: ValidationError, prefix: str) -> list[str]:
    problems = []
    for item in error.errors():
        key = ".".join([prefix, *(str(part) for part in item["loc"])]).strip(".")
        problems.append(f"{key}: {item['msg'].removeprefix('Value error, ')}")
    return problems


def _validate(model: type[BaseModel], data: Any, prefix: str, problems: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems.extend(_problems(error, prefix))
        return None


def _kind_class(registry: Any, kind: Any, key: str, problems: list[str]) -> Any:
    if not isinstance(kind, str):
        problems.append(f"{key}: missing or not a name")
        return None
    try:
        return registry.get(kind)
    except KeyError as error:
        problems.append(f"{key}: {error.args[0]}")
        return None


def _step_order(curation: CurationConfig, problems: list[str]) -> list[str]:
    names = list(curation.steps)
    if curation.order is None:
        return names
    unknown = [name for name in curation.order if name not in curation.steps]
    repeated = sorted({name for name in curation.order if curation.order.count(name) > 1})
    if unknown:
        problems.append(f"curation.order: {unknown} not in curation.steps (steps: {names})")
    if repeated:
        problems.append(f"curation.order: {repeated} named more than once")
    listed = [name for name in dict.fromkeys(curation.order) if name in curation.steps]
    return listed + [name for name in names if name not in listed]


def _tokenizer_setting(top: TopLevel, problems: list[str]) -> tuple[str, str | None]:
    """(the key that named it, the path) of the tokenizer: top-level `tokenizer`, or its alias `stats.tokenizer`."""
    if top.tokenizer is not None and top.stats.tokenizer not in (None, top.tokenizer):
        problems.append(f"stats.tokenizer: an alias of tokenizer, which names another one ({top.tokenizer}): set one")
    if top.tokenizer is not None:
        return "tokenizer", top.tokenizer
    return "stats.tokenizer", top.stats.tokenizer


def _unwritable_integers(node: Any, key: str) -> list[str]:
    """Every integer of the config beyond 64 bits: the manifest (and the plan's key) could not write it."""
    if isinstance(node, dict):
        items = [(f"{key}.{name}" if key else str(name), value) for name, value in node.items()]
    elif isinstance(node, list):
        items = [(f"{key}[{i}]", value) for i, value in enumerate(node)]
    elif isinstance(node, int) and not -(2**63) <= node < 2**63:
        return [f"{key}: {node} is beyond a 64-bit integer"]
    else:
        return []
    return [problem for inner, value in items for problem in _unwritable_integers(value, inner)]


def build_settings(config: dict[str, Any]) -> Settings:
    """Validates the resolved config and builds the run's parts. Raises ConfigError listing every problem."""
    problems = _unwritable_integers(config, "")
    if problems:
        raise ConfigError(problems)
    top = _validate(TopLevel, config, "", problems)
    if top is None:
        raise ConfigError(problems)

    source_cls = _kind_class(SOURCES, top.source.get("kind"), "source.kind", problems)
    source_params = source_cls and _validate(source_cls.Params, top.source, "source", problems)

    group_key = key_function(top.group.key, top.group.delimiter)
    split = _validate(SplitParams, top.split, "split", problems)
    split_key = None
    if split is not None and split.by is not None and split.by != top.group.key:
        split_key = key_function(split.by, top.group.delimiter)

    context = StepContext(group_key=group_key)
    steps: list[Step] = []
    for name in _step_order(top.curation, problems):
        raw = top.curation.steps[name] or {}
        key = f"curation.steps.{name}"
        step_cls = _kind_class(STEPS, raw.get("type", name), f"{key}.type" if "type" in raw else key, problems)
        params = step_cls and _validate(step_cls.Params, raw, key, problems)
        if params is not None:
            steps.append(step_cls(name, params, context))

    task_cls = _kind_class(TASKS, top.task.get("kind"), "task.kind", problems)
    task_params = task_cls and _validate(task_cls.Params, top.task, "task", problems)

    flavour_cls = _kind_class(FLAVOURS, top.output.flavor, "output.flavor", problems)
    task = task_cls(task_params) if task_params is not None else None
    flavour = flavour_cls() if flavour_cls is not None else None
    if flavour is not None and task is not None:
        partial_turns = getattr(task.params, "partial_turns", "train")
        problems.extend(refusal(flavour, task.schema, partial_turns, top.output.provenance, top.output.format))

    token_counter = None
    tokenizer_key, tokenizer_path = _tokenizer_setting(top, problems)
    if tokenizer_path is not None:
        try:
            token_counter = load_tokenizer(tokenizer_path, tokenizer_key)
        except ConfigError as error:
            problems.extend(error.problems)

    source = None
    if source_params is not None:
        try:
            source = source_cls(source_params)
            source.check()
        except (DistillError, ValueError) as error:
            problems.append(str(error) if isinstance(error, DistillError) else f"source.fields: {error}")
    if problems:
        raise ConfigError(problems)
    task = task_cls(task_params)
    notes = []
    if getattr(task_params, "max_tokens", None) is not None:
        task.tokenizer = token_counter
        if token_counter is None:
            notes.append(
                f"task.max_tokens={task_params.max_tokens}: no tokenizer is configured (tokenizer=PATH), so "
                "conversations are measured with the length proxy, ceil(characters / 4)"
            )
    return Settings(
        source=source,
        steps=steps,
        group_kind=top.group.key,
        group_key=group_key,
        split=split,
        split_key=split_key,
        task=task,
        batch_size=top.batch_size,
        dry_run=top.dry_run,
        output_format=file_format(flavour, top.output.format),
        executor=executor_settings(top.executor),
        resume=top.resume,
        token_counter=token_counter,
        overwrite=top.overwrite,
        notes=notes,
        flavour=flavour,
        render_context=RenderContext(
            shape=task.schema,
            partial_turns=getattr(task.params, "partial_turns", "train"),
            token_counter=token_counter,
            max_example_tokens=top.output.max_example_tokens,
            data_source=top.output.verl.data_source,
            ability=top.output.verl.ability,
        ),
        provenance=provenance_mode(flavour, top.output.provenance),
    )
