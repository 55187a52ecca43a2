"""LLM resources by role, chosen by environment variables.

Every stage asks for the resource key `llm`; Kun's stages ask for `label`, `score` and
`polish`, which may run other models. A role with no variable of its own is the `llm` resource
itself (the same object, hence the same in-process engine).

Variables of the `llm` role: CONDOR_LLM ("engine" or "server"), CONDOR_MODEL,
CONDOR_LLM_BASE_URL, CONDOR_MAX_MODEL_LEN, CONDOR_DTYPE, CONDOR_ENFORCE_EAGER,
CONDOR_CPU_THREADS, CONDOR_CPU_INLINE_ENGINE, CONDOR_GPU_MEMORY_UTILIZATION and
CONDOR_CPU_KV_CACHE_GIB. Another role R reads the same names with R's name added: after
CONDOR_LLM in the CONDOR_LLM* names (CONDOR_LLM_LABEL, CONDOR_LLM_LABEL_BASE_URL), at the end of
the others (CONDOR_MODEL_LABEL, CONDOR_MAX_MODEL_LEN_LABEL). Each falls back to the `llm` role's
value when unset, except the two memory settings: they belong to one engine, so a role that runs
an engine of its own never inherits them.

In-process engines of distinct settings share one memory budget: CONDOR_GPU_MEMORY_BUDGET (a
fraction of GPU memory, 0.9) on GPU builds, CONDOR_CPU_KV_CACHE_BUDGET_GIB (GiB of KV cache;
default VLLM_CPU_KVCACHE_SPACE, else 4 GiB when there are several engines) on CPU builds. Engines
with an explicit memory setting keep it; the others split what is left equally.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.model_store import DEFAULT_MODEL, resolve_model
from condor_dagster.resources.openai_server import OpenAIServerResource
from condor_dagster.resources.vllm_engine import (
    CPU_KV_CACHE_BUDGET_ENV,
    GPU_MEMORY_BUDGET_ENV,
    KV_CACHE_SPACE_ENV,
    VLLMEngineResource,
    cpu_kv_cache_budget_gib,
    format_amount,
    gpu_memory_budget,
    is_cpu_build,
    positive_amount,
)

LLM_ROLES: tuple[str, ...] = ("llm", "label", "score", "polish")
"""Resource keys of the LLM roles: `llm` for every stage, `label`, `score` and `polish` for
Kun's; assets require the role name as their resource key."""

KIND_ENV = "CONDOR_LLM"
"""The role's backend: "engine" (in-process vLLM, default) or "server" (OpenAI-compatible)."""
MODEL_ENV = "CONDOR_MODEL"
"""Known model name, model directory or Hugging Face id (engine); served model name (server)."""
BASE_URL_ENV = "CONDOR_LLM_BASE_URL"
"""Server endpoint root, ending in /v1."""
MAX_MODEL_LEN_ENV = "CONDOR_MAX_MODEL_LEN"
"""Engine context length (prompt + completion)."""
DTYPE_ENV = "CONDOR_DTYPE"
"""Engine dtype: auto, bfloat16, float16 or float32."""
ENFORCE_EAGER_ENV = "CONDOR_ENFORCE_EAGER"
"""1/0: engine skips CUDA graphs and torch.compile; unset: eager on CPU, compiled on GPU."""
CPU_THREADS_ENV = "CONDOR_CPU_THREADS"
"""OpenMP threads of a CPU engine; unset: every core."""
CPU_INLINE_ENGINE_ENV = "CONDOR_CPU_INLINE_ENGINE"
"""1/0: a CPU engine's core runs inside this process (default 1)."""
GPU_MEMORY_ENV = "CONDOR_GPU_MEMORY_UTILIZATION"
"""The engine's fraction of GPU memory; unset: its share of CONDOR_GPU_MEMORY_BUDGET."""
CPU_KV_CACHE_ENV = "CONDOR_CPU_KV_CACHE_GIB"
"""The engine's CPU KV cache in GiB; unset: its share of the CPU KV cache budget."""

MEMORY_SETTINGS: dict[str, str] = {
    GPU_MEMORY_ENV: "gpu_memory_utilization",
    CPU_KV_CACHE_ENV: "cpu_kv_cache_gib",
}
"""Memory variables -> VLLMEngineResource fields: per engine, never inherited from `llm`."""
ROLE_VARIABLES: tuple[str, ...] = (
    KIND_ENV,
    MODEL_ENV,
    BASE_URL_ENV,
    MAX_MODEL_LEN_ENV,
    DTYPE_ENV,
    ENFORCE_EAGER_ENV,
    CPU_THREADS_ENV,
    CPU_INLINE_ENGINE_ENV,
    *MEMORY_SETTINGS,
)
"""Every variable a role reads, under the `llm` role's names."""

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
"""Server endpoint when CONDOR_LLM_BASE_URL is unset (vllm serve's default port)."""
DEFAULT_MAX_MODEL_LEN = 4096
"""Engine context length when CONDOR_MAX_MODEL_LEN is unset."""
DEFAULT_CPU_KV_CACHE_BUDGET_GIB = 4.0
"""CPU KV cache budget of several engines when neither CONDOR_CPU_KV_CACHE_BUDGET_GIB nor
VLLM_CPU_KVCACHE_SPACE is set."""
# Shares are rounded down to this many decimals, so they never add up to more than the budget.
_SHARE_DECIMALS = 4
_TOLERANCE = 1e-9


# -- variables ------------------------------------------------------------------------------
def _check_role(role: str) -> None:
    if role not in LLM_ROLES:
        raise ValueError(f"LLM role must be one of {', '.join(LLM_ROLES)}, got {role!r}")


def role_variable(name: str, role: str = "llm") -> str:
    """The variable `role` reads for the `llm` role's variable `name`: CONDOR_LLM ->
    CONDOR_LLM_LABEL, CONDOR_LLM_BASE_URL -> CONDOR_LLM_LABEL_BASE_URL, CONDOR_MODEL ->
    CONDOR_MODEL_LABEL."""
    _check_role(role)
    if role == "llm":
        return name
    suffix = role.upper()
    if name == KIND_ENV or name.startswith(f"{KIND_ENV}_"):
        return f"{KIND_ENV}_{suffix}{name[len(KIND_ENV) :]}"
    return f"{name}_{suffix}"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _lookup(
    name: str, role: str, env: Mapping[str, str], *, inherit: bool = True
) -> tuple[str, str] | None:
    """(variable read, value) of `name` for `role`: the role's own variable, else (when
    `inherit`) the `llm` role's; None when both are unset or empty."""
    variables = [role_variable(name, role)]
    if inherit and role != "llm":
        variables.append(name)
    for variable in variables:
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return None


def has_own_settings(role: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when `role` sets any variable of its own (always true for `llm`)."""
    env = _environ(environ)
    return role == "llm" or any(
        env.get(role_variable(name, role), "").strip() for name in ROLE_VARIABLES
    )


def _parse_flag(variable: str, value: str | None, default: bool | None) -> bool | None:
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"{variable} must be 1 or 0, got {text!r}")


def _flag(
    name: str, *, default: bool | None, environ: Mapping[str, str] | None = None
) -> bool | None:
    """The 1/0 variable `name` as a bool; `default` when unset or empty."""
    return _parse_flag(name, _environ(environ).get(name), default)


def _role_flag(name: str, role: str, env: Mapping[str, str], default: bool | None) -> bool | None:
    found = _lookup(name, role, env)
    return default if found is None else _parse_flag(*found, default)


def _role_int(name: str, role: str, env: Mapping[str, str]) -> int | None:
    found = _lookup(name, role, env)
    if found is None:
        return None
    variable, value = found
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{variable} must be a whole number, got {value!r}") from None


def default_model(role: str = "llm", environ: Mapping[str, str] | None = None) -> str:
    """The role's CONDOR_MODEL (falling back to the `llm` role's, then SmolLM2), a known name
    resolved to its directory (never installed while the definitions load: the engine's check
    names the install command when it is missing)."""
    found = _lookup(MODEL_ENV, role, _environ(environ))
    return resolve_model(found[1] if found else DEFAULT_MODEL, install=False)


# -- one role -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Memory:
    """An explicit memory setting: the resource field, its value and the variable it came from."""

    field: str
    value: float
    variable: str


@dataclass
class _Spec:
    """What one role's environment asks for, before any resource is built."""

    kind: str
    settings: dict[str, Any]
    memory: tuple[_Memory, ...] = ()
    roles: list[str] = field(default_factory=list)

    def same_backend(self, other: _Spec) -> bool:
        return self.kind == other.kind and self.settings == other.settings

    def explicit(self, memory_field: str) -> _Memory | None:
        return next((m for m in self.memory if m.field == memory_field), None)

    def build(self, extra: Mapping[str, Any] | None = None) -> LLMResource:
        kwargs = {**self.settings, **{m.field: m.value for m in self.memory}, **(extra or {})}
        if self.kind == "server":
            return OpenAIServerResource(**kwargs)
        return VLLMEngineResource(**kwargs)


def _role_spec(role: str, env: Mapping[str, str]) -> _Spec:
    _check_role(role)
    found = _lookup(KIND_ENV, role, env)
    kind = found[1] if found else "engine"
    if kind == "server":
        base_url = _lookup(BASE_URL_ENV, role, env)
        model = _lookup(MODEL_ENV, role, env)
        settings: dict[str, Any] = {
            "base_url": base_url[1] if base_url else DEFAULT_BASE_URL,
            "model": model[1] if model else None,
        }
        return _Spec("server", settings, roles=[role])
    if kind != "engine":
        variable = found[0] if found else KIND_ENV
        raise ValueError(f"{variable} must be 'engine' or 'server', got {kind!r}")
    dtype = _lookup(DTYPE_ENV, role, env)
    settings = {
        "model": default_model(role, env),
        "max_model_len": _role_int(MAX_MODEL_LEN_ENV, role, env) or DEFAULT_MAX_MODEL_LEN,
        "dtype": dtype[1] if dtype else "auto",
        "enforce_eager": _role_flag(ENFORCE_EAGER_ENV, role, env, None),
        "cpu_threads": _role_int(CPU_THREADS_ENV, role, env),
        "cpu_inline_engine": _role_flag(CPU_INLINE_ENGINE_ENV, role, env, True) is not False,
    }
    memory = []
    for name, resource_field in MEMORY_SETTINGS.items():
        own = _lookup(name, role, env, inherit=False)
        if own is not None:
            upper = 1.0 if name == GPU_MEMORY_ENV else None
            memory.append(_Memory(resource_field, positive_amount(*own, upper=upper), own[0]))
    return _Spec("engine", settings, tuple(memory), roles=[role])


def llm_resource_from_env(
    role: str = "llm", environ: Mapping[str, str] | None = None
) -> LLMResource:
    """The LLM resource of one role, from environment variables (see the module docstring).
    Memory settings are the role's own; the shared budget is applied by
    `llm_resources_from_env`, which builds every role together."""
    return _role_spec(role, _environ(environ)).build()


# -- every role -----------------------------------------------------------------------------
def _group_roles(env: Mapping[str, str]) -> list[_Spec]:
    """One spec per distinct resource, each listing its roles. A role with no variable of its
    own joins `llm`; one whose settings match an earlier resource joins it, unless the two ask
    for different memory."""
    groups: list[_Spec] = [_role_spec("llm", env)]
    for role in LLM_ROLES[1:]:
        if not has_own_settings(role, env):
            groups[0].roles.append(role)
            continue
        spec = _role_spec(role, env)
        match = next(
            (
                g
                for g in groups
                if g.same_backend(spec) and (not spec.memory or spec.memory == g.memory)
            ),
            None,
        )
        if match is None:
            groups.append(spec)
        else:
            match.roles.append(role)
    return groups


def _memory_budget(env: Mapping[str, str], cpu: bool, engines: int) -> float | None:
    """The budget that `engines` distinct in-process engines split, None when none applies:
    a single engine is left alone unless the budget variable is set."""
    if not cpu:
        if engines > 1 or env.get(GPU_MEMORY_BUDGET_ENV, "").strip():
            return gpu_memory_budget(env)
        return None
    budget = cpu_kv_cache_budget_gib(env)
    if budget is not None:
        return budget
    if engines < 2:
        return None
    space = env.get(KV_CACHE_SPACE_ENV, "").strip()
    if space:
        return positive_amount(KV_CACHE_SPACE_ENV, space, upper=None)
    return DEFAULT_CPU_KV_CACHE_BUDGET_GIB


def _round_down(value: float) -> float:
    scale = 10**_SHARE_DECIMALS
    return math.floor(value * scale + 1e-6) / scale


def split_memory(engines: list[tuple[str, float | None]], budget: float, unit: str) -> list[float]:
    """Each engine's amount of `budget`: (label, explicit amount or None) in, amounts out. An
    explicit amount is kept; the others split what the explicit ones leave equally (rounded
    down). unit: "fraction" (GPU) or "GiB" (CPU). Raises ValueError, naming each explicit
    setting, when they add up to more than the budget or leave nothing for the others."""
    suffix = " GiB" if unit == "GiB" else ""
    what = "CPU KV cache budget" if unit == "GiB" else "GPU memory budget"
    variable = CPU_KV_CACHE_BUDGET_ENV if unit == "GiB" else GPU_MEMORY_BUDGET_ENV
    limit = f"{format_amount(budget)}{suffix}"
    explicit = [(label, value) for label, value in engines if value is not None]
    used = sum(value for _, value in explicit)
    named = ", ".join(f"{label}: {format_amount(value)}{suffix}" for label, value in explicit)
    if used > budget + _TOLERANCE:
        raise ValueError(
            f"in-process engines ask for {format_amount(used)}{suffix} together ({named}), over "
            f"the {what} {limit}; lower them so they add up to at most {limit}, or raise "
            f"{variable}"
        )
    others = [label for label, value in engines if value is None]
    share = _round_down((budget - used) / len(others)) if others else 0.0
    if others and share <= 0:
        raise ValueError(
            f"explicit settings ({named}) take the whole {what} {limit}, which leaves "
            f"nothing for {', '.join(others)}; lower them or raise {variable}"
        )
    return [share if value is None else value for _, value in engines]


def _engine_label(spec: _Spec, memory: _Memory | None) -> str:
    """How messages name an engine: its roles, then the variable that sized it or its model."""
    return f"{'/'.join(spec.roles)} ({memory.variable if memory else spec.settings['model']})"


def llm_resources_from_env(
    environ: Mapping[str, str] | None = None, *, cpu: bool | None = None
) -> dict[str, LLMResource]:
    """{role: resource} for every role in LLM_ROLES, from environment variables. Roles with no
    variable of their own get the very `llm` object; distinct in-process engines split the
    memory budget (see the module docstring). cpu: whether engines run on a CPU build
    (default: detected from the installed vLLM)."""
    env = _environ(environ)
    on_cpu = is_cpu_build() if cpu is None else cpu
    groups = _group_roles(env)
    engines = [g for g in groups if g.kind == "engine"]
    memory_field = "cpu_kv_cache_gib" if on_cpu else "gpu_memory_utilization"
    budget = _memory_budget(env, on_cpu, len(engines))
    extra: dict[int, dict[str, Any]] = {}
    if budget is not None:
        explicit = [g.explicit(memory_field) for g in engines]
        amounts = split_memory(
            [
                (_engine_label(g, m), m.value if m else None)
                for g, m in zip(engines, explicit, strict=True)
            ],
            budget,
            "GiB" if on_cpu else "fraction",
        )
        for group, memory, amount in zip(engines, explicit, amounts, strict=True):
            if memory is None:
                extra[id(group)] = {memory_field: amount}
    resources: dict[str, LLMResource] = {}
    for group in groups:
        resource = group.build(extra.get(id(group)))
        resources.update(dict.fromkeys(group.roles, resource))
    return {role: resources[role] for role in LLM_ROLES}


def roles_with(default: LLMResource, **overrides: LLMResource) -> dict[str, LLMResource]:
    """{role: resource} for every role: `default` unless a role is overridden by name."""
    unknown = sorted(set(overrides) - set(LLM_ROLES))
    if unknown:
        raise ValueError(
            f"unknown LLM role(s) {', '.join(unknown)}; the roles are {', '.join(LLM_ROLES)}"
        )
    return {role: overrides.get(role, default) for role in LLM_ROLES}
